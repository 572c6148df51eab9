"""The paper's figures from the evaluation tables (matplotlib, Agg backend; PNG and PDF).

Figure functions take tables or arrays and return a :class:`matplotlib.figure.Figure`;
``plot_*`` functions read the workflow's files, draw, and save PNG and PDF atomically.
Colours, line styles and the save path: :mod:`dustpred.figures.style`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dustpred.errors import InputError
from dustpred.evaluation.evaluate import Predictions
from dustpred.evaluation.tables import (
    MODEL_LABELS,
    PER_CUTOUT_COLUMNS,
    R_ELL_COLUMNS,
    WINS_COLUMNS,
    read_table,
)
from dustpred.figures.style import (
    LINESTYLES,
    MARKERS,
    MASK_COLOUR,
    METRIC_LABELS,
    PALETTE,
    log_if_decades,
    plt,
    save_figure,
)

SPLIT_SUBSET_LABELS = {
    "north_south": {"train": "train: north", "test": "test: south"},
    "east_west": {"train": "train: east", "test": "test: west"},
}
TRAINING_COLUMNS = ["epoch", "train_loss", "val_loss", "val_r50", "val_r150"]
TERM_COLUMNS = ["train_l1", "train_corr", "val_l1", "val_corr"]  # logged since issue 15
TERM_STYLE = {  # term -> colour, label
    "l1": ("#7f7f7f", r"mean $|T - \tilde T|$"),
    "corr": ("#9467bd", r"$\lambda[(1 - r_{50}) + (1 - r_{150})]$"),
}


def _subset_label(subset: str, split: str | None) -> str:
    return SPLIT_SUBSET_LABELS.get(split or "", {}).get(subset, f"{subset} set")


# --- figures --------------------------------------------------------------------------------


def example_figure(
    maps: Mapping[str, np.ndarray],
    mask: np.ndarray,
    *,
    side_deg: float,
    cmap: str = "inferno",
    title: str | None = None,
) -> Figure:
    """Fig. 3: one cutout's target and the three predictions, each divided by its maximum.

    Parameters
    ----------
    maps
        ``target``, ``integrated``, ``linear``, ``unet`` -> (n, n) maps.
    mask
        (n, n) bool, True = masked; those pixels are drawn in grey.
    side_deg
        Cutout side in degrees (axis extent).
    """
    panels = [
        ("target", "target dust"),
        ("integrated", MODEL_LABELS["integrated"]),
        ("linear", MODEL_LABELS["linear"]),
        ("unet", MODEL_LABELS["unet"]),
    ]
    normalised = {}
    for key, _ in panels:
        valid = maps[key][~mask]
        peak = np.max(valid) if valid.size else 0.0
        normalised[key] = maps[key] / peak if peak > 0 else np.zeros_like(maps[key])
    finite = np.concatenate([v[~mask] for v in normalised.values()])
    vmin = float(np.percentile(finite, 1)) if finite.size else 0.0
    try:
        cm = plt.get_cmap(cmap).with_extremes(bad=MASK_COLOUR)
    except ValueError:
        raise InputError(
            f"config key 'plots.cmap': {cmap!r} is not a matplotlib colormap; expected a name "
            f"such as 'inferno' or 'viridis'"
        ) from None
    half = side_deg / 2
    fig, axes = plt.subplots(2, 2, figsize=(8.4, 7.6), sharex=True, sharey=True)
    image = None
    for ax, (key, label) in zip(axes.flat, panels, strict=True):
        image = ax.imshow(
            np.ma.masked_array(normalised[key], mask),
            origin="lower",
            extent=(-half, half, -half, half),
            cmap=cm,
            vmin=min(vmin, 0.999),
            vmax=1.0,
            interpolation="nearest",
        )
        ax.set_title(label, color=PALETTE[key])
    for ax in axes[-1]:
        ax.set_xlabel("x [deg]")
    for ax in axes[:, 0]:
        ax.set_ylabel("y [deg]")
    fig.colorbar(image, ax=axes, shrink=0.85, label="map / its maximum (masked: grey)")
    if title:
        fig.suptitle(title)
    return fig


def per_cutout_figure(
    per_cutout: pd.DataFrame, wins: pd.DataFrame, *, subset: str = "test"
) -> Figure:
    """Fig. 4: r50 (left) and r150 (right) of linear and U-Net against integrated, per cutout.

    Points above the dashed y = x line are cutouts where the model beats integrated
    intensity; the legend gives those counts and the win fraction with its block-bootstrap
    error over sky regions (the cutouts overlap, so the count is not binomial).
    """
    sel = per_cutout[per_cutout["subset"] == subset]
    if sel.empty:
        raise InputError(f"per-cutout table: no rows for subset {subset!r}")
    wide = sel.pivot(index="cutout", columns="model", values=["r50", "r150"])
    n = len(wide)
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 5.0))
    for ax, metric in zip(axes, ("r50", "r150"), strict=True):
        x = wide[(metric, "integrated")]
        lo = min(np.floor(float(wide[metric].min().min()) * 20) / 20, 0.95)
        for model in ("linear", "unet"):
            if (metric, model) not in wide:
                continue
            w = wins[(wins["subset"] == subset) & (wins["model"] == model)]
            w = w[w["metric"] == metric]
            count = ""
            if len(w):
                row = w.iloc[0]
                count = (
                    f": better in {int(row['wins'])}/{n} "
                    f"({row['fraction']:.2f} ± {row['fraction_err']:.2f})"
                )
            ax.scatter(
                x,
                wide[(metric, model)],
                s=14 if n > 200 else 24,
                marker=MARKERS[model],
                facecolors="none" if model == "linear" else PALETTE[model],
                edgecolors=PALETTE[model],
                alpha=0.7,
                linewidths=0.8,
                label=f"{MODEL_LABELS[model]}{count}",
            )
        ax.plot([lo, 1], [lo, 1], "k--", lw=1, label="y = x (no improvement)")
        ax.set_xlim(lo, 1)
        ax.set_ylim(lo, 1)
        ax.set_aspect("equal")
        ax.set_xlabel(f"{METRIC_LABELS[metric]}, integrated intensity")
        ax.set_ylabel(f"{METRIC_LABELS[metric]}, other model")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
    fig.suptitle(f"Per-cutout correlation with the target dust ({subset} set, {n} cutouts)")
    fig.tight_layout()
    return fig


def r_ell_figure(
    r_ell: pd.DataFrame, *, split: str | None = None, title: str | None = None
) -> Figure:
    """Fig. 5: mean r(ell) of every model for the training (left) and test (right) sets.

    Bands are +- the block-bootstrap error of the mean over sky regions (``r_err``; the naive
    error where that is undefined); the oracle (HI-traced dust, when known) is dashed.
    ``split`` names the panels (e.g. "train: east", "test: west" for ``east_west``).
    """
    subsets = [s for s in ("train", "test") if s in set(r_ell["subset"])]
    if not subsets:
        raise InputError("r(ell) table: no rows for subsets 'train' or 'test'")
    fig, axes = plt.subplots(1, len(subsets), figsize=(5.2 * len(subsets), 4.4), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, subset in zip(axes, subsets, strict=True):
        sel = r_ell[r_ell["subset"] == subset]
        n = int(sel["n"].iloc[0])
        for model in ("integrated", "linear", "unet", "oracle"):
            m = sel[sel["model"] == model].sort_values("ell")
            if m.empty:
                continue
            ax.plot(
                m["ell"],
                m["r_mean"],
                color=PALETTE[model],
                ls=LINESTYLES[model],
                lw=1.6,
                label=MODEL_LABELS[model],
            )
            sem = m["r_err"].fillna(m["r_err_naive"]).fillna(0.0)
            ax.fill_between(
                m["ell"], m["r_mean"] - sem, m["r_mean"] + sem, color=PALETTE[model], alpha=0.2
            )
        for edge in (100, 200):
            ax.axvline(edge, color="0.7", lw=0.8, zorder=0)
        ax.set_xlabel(r"multipole $\ell$")
        ax.set_title(f"{_subset_label(subset, split)} ({n} cutouts)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(r"mean cross-correlation $r(\ell)$")
    axes[0].legend(loc="lower left", fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def seed_averaged_r_ell(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Mean over seeds of r(ell) tables (same subsets, models and bins).

    ``r_mean`` and ``r_robust_mean`` are averaged; ``r_err`` is kept for one seed, else it is
    the sd over seeds / sqrt(number of seeds) (the seed-to-seed spread, which includes the
    training noise but not the sky's: all seeds see the same cutouts); the other error
    columns are averaged over seeds.
    """
    if len(tables) == 1:
        return tables[0]
    keys = ["subset", "model", "ell", "ell_lo", "ell_hi"]
    stacked = pd.concat(tables, ignore_index=True)
    grouped = stacked.groupby(keys, sort=False)
    out = grouped.agg(
        r_mean=("r_mean", "mean"),
        r_std=("r_std", "mean"),
        r_err_naive=("r_err_naive", "mean"),
        r_robust_mean=("r_robust_mean", "mean"),
        r_robust_err=("r_robust_err", "mean"),
        n=("n", "first"),
        n_patches=("n_patches", "first"),
    )
    sd = grouped["r_mean"].std(ddof=1).fillna(0.0)
    out["r_err"] = sd / np.sqrt(len(tables))
    return out.reset_index()[R_ELL_COLUMNS]


def _loss_terms_panel(ax, training: pd.DataFrame) -> None:
    """The loss's two terms by epoch: L1 and lambda [(1 - r50) + (1 - r150)], train dashed,
    validation solid."""
    epoch = training["epoch"]
    for term, (colour, label) in TERM_STYLE.items():
        ax.plot(epoch, training[f"train_{term}"], color=colour, ls="--")
        ax.plot(epoch, training[f"val_{term}"], color=colour, ls="-", label=label)
    ax.plot([], [], color="0.4", ls="--", label="train")
    ax.plot([], [], color="0.4", ls="-", label="validation")
    log_if_decades(ax, training[TERM_COLUMNS].to_numpy(dtype=float))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss term")
    ax.legend(fontsize="small")


def training_figure(training: pd.DataFrame) -> Figure:
    """Training curves by epoch, train and validation: the loss (left), its two terms (middle;
    only where the table has :data:`TERM_COLUMNS`) and r50/r150 (right)."""
    terms = all(c in training for c in TERM_COLUMNS)
    fig, axes = plt.subplots(1, 3 if terms else 2, figsize=(15.0 if terms else 10.0, 4.0))
    ax_loss, ax_r = axes[0], axes[-1]
    epoch = training["epoch"]
    ax_loss.plot(epoch, training["train_loss"], color=PALETTE["unet"], ls="--", label="train")
    ax_loss.plot(epoch, training["val_loss"], color=PALETTE["unet"], ls="-", label="validation")
    log_if_decades(ax_loss, training[["train_loss", "val_loss"]].to_numpy(dtype=float))
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss (eq. 2.3)")
    ax_loss.legend()
    if terms:
        _loss_terms_panel(axes[1], training)
    shades = {"r50": "#1f77b4", "r150": "#17becf"}
    for metric in ("r50", "r150"):
        if f"train_{metric}" in training:
            ax_r.plot(epoch, training[f"train_{metric}"], color=shades[metric], ls="--")
        ax_r.plot(epoch, training[f"val_{metric}"], color=shades[metric], ls="-", label=f"{metric}")
    ax_r.plot([], [], color="0.4", ls="--", label="train")
    ax_r.plot([], [], color="0.4", ls="-", label="validation")
    ax_r.set_xlabel("epoch")
    ax_r.set_ylabel(r"mean $r$ (U-Net)")
    ax_r.legend(fontsize="small")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle("U-Net training")
    fig.tight_layout()
    return fig


def choose_example(masked_fraction: np.ndarray, index: int | None) -> int:
    """Cutout shown in Fig. 3: ``index`` if given, else the least-masked cutout (first of ties)."""
    n = len(masked_fraction)
    if index is None:
        return int(np.argmin(masked_fraction))
    if not 0 <= index < n:
        raise InputError(
            f"config key 'plots.example_cutout': {index} is out of range; expected 0..{n - 1} "
            f"or null"
        )
    return int(index)


def plot_example(
    predictions: str | os.PathLike,
    outputs: Sequence[str | os.PathLike],
    *,
    index: int | None = None,
    cmap: str = "inferno",
    dpi: int = 150,
) -> int:
    """Fig. 3 from a test prediction file; returns the index of the cutout shown."""
    pred = Predictions(predictions)
    i = choose_example(pred.masked_fraction(), index)
    data = pred.read(i, i + 1)
    maps = {k: data[k][0] for k in ("target", "integrated", "linear", "unet")}
    lon, lat = pred.lon[i], pred.lat[i]
    where = f" at (l, b) = ({lon:.1f}, {lat:.1f}) deg" if np.isfinite(lon) else ""
    fig = example_figure(
        maps,
        data["mask"][0],
        side_deg=pred.side_deg,
        cmap=cmap,
        title=f"Test cutout {i}{where}",
    )
    save_figure(fig, outputs, dpi)
    return i


def plot_per_cutout(
    per_cutout: str | os.PathLike,
    wins: str | os.PathLike,
    outputs: Sequence[str | os.PathLike],
    *,
    dpi: int = 150,
) -> None:
    """Fig. 4 from the per-cutout and wins tables."""
    fig = per_cutout_figure(
        read_table(per_cutout, PER_CUTOUT_COLUMNS), read_table(wins, WINS_COLUMNS)
    )
    save_figure(fig, outputs, dpi)


def plot_r_ell(
    r_ell: str | os.PathLike,
    outputs: Sequence[str | os.PathLike],
    *,
    split: str | None = None,
    dpi: int = 150,
) -> None:
    """Fig. 5 from the r(ell) table."""
    save_figure(r_ell_figure(read_table(r_ell, R_ELL_COLUMNS), split=split), outputs, dpi)


def plot_training(
    training: str | os.PathLike, outputs: Sequence[str | os.PathLike], *, dpi: int = 150
) -> None:
    """Training curves from the per-epoch training log (CSV)."""
    table = read_table(training, TRAINING_COLUMNS)
    if table.empty:
        raise InputError(f"{training}: no epochs logged; expected at least one row")
    save_figure(training_figure(table), outputs, dpi)
