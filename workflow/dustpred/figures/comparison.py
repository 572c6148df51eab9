"""Figures that compare runs: Fig. 6 (lambda sweep), the seed ensemble and Fig. 7 (east/west).

Same conventions as :mod:`dustpred.figures.paper` (its palette, labels and atomic PNG/PDF saving):
figure functions take tables and return a :class:`matplotlib.figure.Figure`; ``plot_*``
functions read the evaluation tables (and ``training.csv``) of several runs, draw and save.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dustpred.errors import InputError
from dustpred.evaluation.tables import MODEL_LABELS, PER_CUTOUT_COLUMNS, R_ELL_COLUMNS, read_table
from dustpred.figures.paper import TERM_COLUMNS, TERM_STYLE, r_ell_figure, seed_averaged_r_ell
from dustpred.figures.style import (
    LINESTYLES,
    MARKERS,
    METRIC_LABELS,
    PALETTE,
    log_if_decades,
    plt,
    save_figure,
)


def _seed_mean(curves: Sequence[pd.DataFrame], model: str, subset: str = "test"):
    """ell, mean r over seeds and its band: r_err for one seed, else sd over seeds/sqrt(n)."""
    rows = [c[(c["subset"] == subset) & (c["model"] == model)].sort_values("ell") for c in curves]
    rows = [r for r in rows if not r.empty]
    if not rows:
        return None
    ell = rows[0]["ell"].to_numpy()
    r = np.stack([row["r_mean"].to_numpy() for row in rows])
    if len(rows) == 1:
        band = rows[0]["r_err"].fillna(rows[0]["r_err_naive"]).fillna(0.0).to_numpy()
    else:
        band = r.std(axis=0, ddof=1) / np.sqrt(len(rows))
    return ell, r.mean(axis=0), band


def _final_terms(trainings: Sequence[pd.DataFrame]) -> dict[str, float]:
    """Validation L1 and correlation terms at the last epoch, mean over seeds (NaN if a table
    lacks :data:`TERM_COLUMNS`)."""
    rows = [t.sort_values("epoch").iloc[-1] for t in trainings if set(TERM_COLUMNS) <= set(t)]
    return {
        term: float(np.mean([r[f"val_{term}"] for r in rows])) if rows else float("nan")
        for term in TERM_STYLE
    }


def lambda_sweep_figure(
    curves: Mapping[float, Sequence[pd.DataFrame]],
    trainings: Mapping[float, Sequence[pd.DataFrame]] | None = None,
) -> Figure:
    """Fig. 6: mean test r(ell) of the U-Net for each loss weight lambda (left) and, given the
    training tables, the two loss terms at the last epoch against lambda (right).

    Parameters
    ----------
    curves
        lambda -> r(ell) tables (one per seed) of the experiment trained with that lambda.
        Curves are averaged over seeds; bands are the error on the mean (over cutouts for a
        single seed, over seeds otherwise). Integrated intensity (red) and the oracle (black
        dashed) of the first lambda are drawn for reference.
    trainings
        lambda -> training.csv tables (one per seed): the validation L1 term and the
        correlation term lambda [(1 - r50) + (1 - r150)] of the last epoch, mean over seeds,
        one point per lambda (lambdas evenly spaced on the axis). None: the left panel only.
    """
    fig, axes = plt.subplots(
        1, 1 if trainings is None else 2, figsize=(6.4 if trainings is None else 11.5, 4.6)
    )
    ax = axes if trainings is None else axes[0]
    lambdas = sorted(curves)
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, len(lambdas)))
    styles = ["-", "--", "-.", ":"]
    for i, (lam, colour) in enumerate(zip(lambdas, colours, strict=True)):
        mean = _seed_mean(curves[lam], "unet")
        if mean is None:
            continue
        ell, r, band = mean
        n_seeds = len(curves[lam])
        label = rf"U-Net, $\lambda$ = {lam:g}" + (f" ({n_seeds} seeds)" if n_seeds > 1 else "")
        ax.plot(ell, r, color=colour, ls=styles[i % len(styles)], lw=1.6, label=label)
        ax.fill_between(ell, r - band, r + band, color=colour, alpha=0.2)
    for model in ("integrated", "oracle"):
        mean = _seed_mean(curves[lambdas[0]], model)
        if mean is not None:
            ell, r, _ = mean
            ax.plot(
                ell,
                r,
                color=PALETTE[model],
                ls=LINESTYLES[model],
                lw=1.2,
                label=MODEL_LABELS[model],
            )
    for edge in (100, 200):
        ax.axvline(edge, color="0.7", lw=0.8, zorder=0)
    ax.set_xlabel(r"multipole $\ell$")
    ax.set_ylabel(r"mean cross-correlation $r(\ell)$, test set")
    ax.set_title(r"Effect of the loss weight $\lambda$")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower left")
    if trainings is not None:
        _terms_by_lambda_panel(axes[1], lambdas, trainings)
    fig.tight_layout()
    return fig


def _terms_by_lambda_panel(
    ax, lambdas: Sequence[float], trainings: Mapping[float, Sequence[pd.DataFrame]]
) -> None:
    """The two validation loss terms of the last epoch, one point per lambda."""
    terms = [_final_terms(trainings.get(lam, [])) for lam in lambdas]
    x = np.arange(len(lambdas))
    for term, (colour, label) in TERM_STYLE.items():
        ax.plot(x, [t[term] for t in terms], "o-", color=colour, label=label)
    log_if_decades(ax, np.array([[t[k] for k in TERM_STYLE] for t in terms], dtype=float))
    ax.set_xticks(x, [f"{lam:g}" for lam in lambdas])
    ax.set_xlabel(r"loss weight $\lambda$")
    ax.set_ylabel("validation loss term, last epoch")
    ax.set_title("The two terms of the loss (eq. 2.3)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def seed_ensemble_figure(
    r_ell_by_seed: Mapping[int, pd.DataFrame], per_cutout_by_seed: Mapping[int, pd.DataFrame]
) -> Figure:
    """Seed ensemble of one experiment: test r(ell) of every seed's U-Net (thin) and their
    mean (thick) with the seed-independent models (left), and each seed's mean test r50 and
    r150 per model with its error on the mean (right)."""
    seeds = sorted(r_ell_by_seed)
    fig, (ax, ax_pts) = plt.subplots(1, 2, figsize=(11.0, 4.4), width_ratios=(3, 2))
    curves = [r_ell_by_seed[s] for s in seeds]
    for seed in seeds:
        c = r_ell_by_seed[seed]
        c = c[(c["subset"] == "test") & (c["model"] == "unet")].sort_values("ell")
        ax.plot(c["ell"], c["r_mean"], color=PALETTE["unet"], lw=0.8, alpha=0.5)
    for model in ("integrated", "linear", "unet", "oracle"):
        mean = _seed_mean(curves if model == "unet" else curves[:1], model)
        if mean is None:
            continue
        ell, r, band = mean
        label = MODEL_LABELS[model] + (f", mean of {len(seeds)} seeds" if model == "unet" else "")
        ax.plot(ell, r, color=PALETTE[model], ls=LINESTYLES[model], lw=2.0, label=label)
        ax.fill_between(ell, r - band, r + band, color=PALETTE[model], alpha=0.2)
    ax.plot([], [], color=PALETTE["unet"], lw=0.8, alpha=0.5, label="U-Net, one seed")
    ax.set_xlabel(r"multipole $\ell$")
    ax.set_ylabel(r"mean cross-correlation $r(\ell)$, test set")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower left")
    for j, model in enumerate(("integrated", "linear", "unet", "oracle")):
        for k, metric in enumerate(("r50", "r150")):
            values, errors = [], []
            for seed in seeds:
                pc = per_cutout_by_seed[seed]
                sel = pc[(pc["subset"] == "test") & (pc["model"] == model)][metric]
                if len(sel):
                    values.append(sel.mean())
                    errors.append(sel.std(ddof=1) / np.sqrt(len(sel)) if len(sel) > 1 else 0.0)
            if not values:
                continue
            x = k + (j - 1.5) * 0.18 + np.linspace(-0.04, 0.04, len(values))
            ax_pts.errorbar(
                x,
                values,
                yerr=errors,
                fmt=MARKERS[model],
                color=PALETTE[model],
                ms=5,
                capsize=2,
                label=MODEL_LABELS[model] if k == 0 else None,
            )
    ax_pts.set_xticks([0, 1], [METRIC_LABELS["r50"], METRIC_LABELS["r150"]])
    ax_pts.set_ylabel("mean over test cutouts (one point per seed)")
    ax_pts.grid(alpha=0.3, axis="y")
    ax_pts.legend(fontsize="small")
    fig.suptitle(
        f"Seed ensemble: {len(seeds)} U-Net trainings (seeds {', '.join(map(str, seeds))})"
    )
    fig.tight_layout()
    return fig


# --- saving and file-level wrappers ---------------------------------------------------------


def plot_lambda_sweep(
    r_ell_paths: Sequence[str | os.PathLike],
    lambdas: Sequence[float],
    outputs: Sequence[str | os.PathLike],
    *,
    training_paths: Sequence[str | os.PathLike] | None = None,
    dpi: int = 150,
) -> None:
    """Fig. 6 from r(ell) tables; ``lambdas[i]`` is the loss weight of ``r_ell_paths[i]``
    (several paths per lambda are seeds of one experiment) and of ``training_paths[i]``
    (the same runs' training.csv, for the loss-term panel; None leaves it out)."""
    if len(r_ell_paths) != len(lambdas):
        raise InputError(f"{len(r_ell_paths)} r(ell) tables but {len(lambdas)} lambdas")
    if training_paths is not None and len(training_paths) != len(lambdas):
        raise InputError(f"{len(training_paths)} training tables but {len(lambdas)} lambdas")
    curves: dict[float, list[pd.DataFrame]] = {}
    for path, lam in zip(r_ell_paths, lambdas, strict=True):
        curves.setdefault(float(lam), []).append(read_table(path, R_ELL_COLUMNS))
    trainings: dict[float, list[pd.DataFrame]] | None = None
    if training_paths is not None:
        trainings = {}
        for path, lam in zip(training_paths, lambdas, strict=True):
            trainings.setdefault(float(lam), []).append(read_table(path, ["epoch"]))
    save_figure(lambda_sweep_figure(curves, trainings), outputs, dpi)


def plot_seed_ensemble(
    r_ell_paths: Sequence[str | os.PathLike],
    per_cutout_paths: Sequence[str | os.PathLike],
    seeds: Sequence[int],
    outputs: Sequence[str | os.PathLike],
    *,
    dpi: int = 150,
) -> None:
    """Seed-ensemble figure of one experiment from its per-seed tables (same order as seeds)."""
    r_ell = {int(s): read_table(p, R_ELL_COLUMNS) for s, p in zip(seeds, r_ell_paths, strict=True)}
    per_cutout = {
        int(s): read_table(p, PER_CUTOUT_COLUMNS)
        for s, p in zip(seeds, per_cutout_paths, strict=True)
    }
    save_figure(seed_ensemble_figure(r_ell, per_cutout), outputs, dpi)


def plot_east_west(
    r_ell_paths: Sequence[str | os.PathLike],
    outputs: Sequence[str | os.PathLike],
    *,
    experiment: str,
    dpi: int = 150,
) -> None:
    """Fig. 7: Fig. 5 of an east/west experiment, averaged over its seeds (one table each)."""
    tables = [read_table(path, R_ELL_COLUMNS) for path in r_ell_paths]
    n = len(tables)
    title = f"East/west split: experiment {experiment}" + (f", mean of {n} seeds" if n > 1 else "")
    fig = r_ell_figure(seed_averaged_r_ell(tables), split="east_west", title=title)
    save_figure(fig, outputs, dpi)
