"""Summaries across runs: one row per (experiment, seed, model), spreads over seeds and over
sky realisations, and the text that ``make run`` prints.

The text opens with a headline: for each group of runs on the same test cutouts (same
velocity range, split and training seed), every model side by side, i.e. integrated
intensity, both linear models and the oracle once, and each experiment's U-Net labelled by
its ``unet.variant`` (:func:`headline_lines`). Per-run paragraphs follow.

Every mean comes with its block-bootstrap error over sky regions of the test cutout centres
(:class:`dustpred.evaluation.resampling.ErrorSettings`) and the naive error (cutouts treated as
independent, ``*_err_naive``); the text prints "mean ± error (N effective patches)". The
gain of a model is its mean r minus integrated intensity's on the same cutouts; its error is
that of the paired difference, so the shared sky variance cancels. Models are listed in the
order of :data:`dustpred.evaluation.tables.MODEL_LABELS`: a new model needs only an entry there.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dustpred.atomic import atomic_write
from dustpred.config import SETTING_COLUMNS
from dustpred.errors import InputError
from dustpred.evaluation import resampling
from dustpred.evaluation.evaluate import wins_table
from dustpred.evaluation.resampling import ErrorSettings
from dustpred.evaluation.tables import (
    ALL_METRICS,
    METRICS,
    ORACLE,
    PER_CUTOUT_COLUMNS,
    REFERENCE,
    SUBSETS,
    model_label,
    model_order,
    read_table,
    write_table,
)

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = [
    "experiment",
    "seed",
    "model",
    *SETTING_COLUMNS,
    "n_test",
    "n_patches",
    *[f"{m}_test{e}" for m in ALL_METRICS for e in ("", "_err", "_err_naive")],
    *[f"gain_{m}{e}" for m in ALL_METRICS for e in ("", "_err", "_err_naive")],
    *[f"{m}_train" for m in METRICS],
    *[f"wins_{m}" for m in METRICS],
    *[f"frac_wins_{m}{e}" for m in ALL_METRICS for e in ("", "_err", "_err_naive")],
]
BY_EXPERIMENT_STATS = [
    "r50_test",
    "r150_test",
    "gain_r50",
    "gain_r150",
    "gain_r50_robust",
    "gain_r150_robust",
    "wins_r50",
    "wins_r150",
]
# The statistics with a block error: their seed mean gets the error of both sources.
TOTAL_ERROR_STATS = [c for c in BY_EXPERIMENT_STATS if not c.startswith("wins_")]
SUMMARY_BY_EXPERIMENT_COLUMNS = [
    "experiment",
    "model",
    *SETTING_COLUMNS,
    "n_seeds",
    *[f"{c}_{s}" for c in BY_EXPERIMENT_STATS for s in ("mean", "sd")],
    *[f"{c}_err_total" for c in TOTAL_ERROR_STATS],
]
GAINS = [f"gain_{m}" for m in ALL_METRICS]


def _wide(per_cutout: pd.DataFrame, subset: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The ``subset`` rows as (cutout x (metric, model)) and the cutouts' centres (2, N)."""
    sel = per_cutout[per_cutout["subset"] == subset]
    metrics = [m for m in ALL_METRICS if m in sel.columns]
    wide = sel.pivot(index="cutout", columns="model", values=metrics)
    first = sel[sel["model"] == sel["model"].iloc[0]].set_index("cutout").loc[wide.index]
    return wide, np.stack([first["lon"].to_numpy(), first["lat"].to_numpy()])


def _names(stem: str) -> list[str]:
    """The value, block-error and naive-error column names of ``stem``."""
    return [f"{stem}{e}" for e in ("", "_err", "_err_naive")]


def _mean_row(values: np.ndarray, labels: np.ndarray, errors: ErrorSettings) -> tuple:
    """(mean, block error, naive error) of values (N,); errors NaN for N < 2."""
    if len(values) < 2:
        return float(values.mean()) if len(values) else np.nan, np.nan, np.nan
    block = float(errors.block_error(values, labels))
    return float(values.mean()), block, float(resampling.naive_error(values))


def summary_rows(
    experiment: str,
    seed: int,
    per_cutout: pd.DataFrame,
    wins: pd.DataFrame,
    errors: ErrorSettings | None = None,
    *,
    subset: str = "test",
) -> pd.DataFrame:
    """One row per model of one experiment and seed, with :data:`SUMMARY_COLUMNS`, from its
    per-cutout table and :func:`dustpred.evaluation.evaluate.wins_table` of it. The ``*_test``
    columns hold ``subset`` (default the test set)."""
    errors = errors or ErrorSettings()
    if not (per_cutout["subset"] == subset).any():
        raise InputError(f"summary of {experiment} seed {seed}: no {subset} cutouts in the table")
    wide, (lon, lat) = _wide(per_cutout, subset)
    labels = errors.labels(lon, lat)
    rows = []
    for model in model_order(per_cutout["model"]):
        row: dict[str, object] = {"experiment": experiment, "seed": int(seed), "model": model}
        row["n_test"] = len(wide)
        row["n_patches"] = resampling.effective_patches(labels)
        for metric in [m for m in ALL_METRICS if m in wide.columns.levels[0]]:
            r = wide[(metric, model)].to_numpy()
            values = _mean_row(r, labels, errors)
            row.update(zip(_names(f"{metric}_test"), values, strict=True))
            gain = _mean_row(r - wide[(metric, REFERENCE)].to_numpy(), labels, errors)
            row.update(zip(_names(f"gain_{metric}"), gain, strict=True))
            w = wins[(wins["subset"] == subset) & (wins["model"] == model)]
            w = w[w["metric"] == metric]
            pairs = zip(_names(f"frac_wins_{metric}"), _names("fraction"), strict=True)
            row.update({k: float(w[c].iloc[0]) if len(w) else np.nan for k, c in pairs})
            if metric in METRICS:
                row[f"wins_{metric}"] = int(w["wins"].iloc[0]) if len(w) else pd.NA
        train = per_cutout[(per_cutout["subset"] == "train") & (per_cutout["model"] == model)]
        for metric in METRICS:
            row[f"{metric}_train"] = train[metric].mean() if len(train) else np.nan
        rows.append(row)
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    for metric in METRICS:
        out[f"wins_{metric}"] = out[f"wins_{metric}"].astype("Int64")
    return out


def pm(value: float, error: float, digits: int = 3, sign: str = "") -> str:
    """``value ± error`` with ``digits`` decimals (``sign="+"``: always signed)."""
    return f"{value:{sign}.{digits}f} ± {error:.{digits}f}"


LABEL_WIDTH = 24  # the narrowest label column of the text


def summary_lines(
    per_cutout: pd.DataFrame,
    wins: pd.DataFrame,
    subset: str = "test",
    errors: ErrorSettings | None = None,
) -> list[str]:
    """Human-readable lines on ``subset``: each model's mean r50/r150 (paper's and robust
    form) and gain over integrated intensity as "mean ± error", and its win counts with the
    win fraction's error, each gain and win fraction with its robust-r value beside it; the
    header gives the effective number of patches."""
    errors = errors or ErrorSettings()
    sel = per_cutout[per_cutout["subset"] == subset]
    if sel.empty:
        return [f"no {subset} cutouts"]
    table = summary_rows("-", 0, per_cutout, wins, errors, subset=subset)
    n, patches = int(table["n_test"].iloc[0]), float(table["n_patches"].iloc[0])
    width = max(LABEL_WIDTH, *(len(model_label(m)) for m in table["model"]))
    lines = [
        f"{subset} set, {n} cutouts ({patches:.1f} effective patches of HEALPix Nside "
        f"{errors.region_nside}): mean ± block-bootstrap error [naive error]",
    ]
    for _, row in table.iterrows():
        label = model_label(row["model"])
        lines.append(
            f"  {label:<{width}} r50 = {pm(row['r50_test'], row['r50_test_err'])} "
            f"[{row['r50_test_err_naive']:.3f}]   r150 = "
            f"{pm(row['r150_test'], row['r150_test_err'])} [{row['r150_test_err_naive']:.3f}]"
        )
        if "r50_robust_test" in row and not pd.isna(row["r50_robust_test"]):
            lines.append(
                f"  {'':<{width}} robust r50 = "
                f"{pm(row['r50_robust_test'], row['r50_robust_test_err'])}"
                f"   robust r150 = {pm(row['r150_robust_test'], row['r150_robust_test_err'])}"
            )
    for _, row in table[table["model"] != REFERENCE].iterrows():
        label = model_label(row["model"])
        if pd.isna(row["wins_r50"]):
            continue
        lines.append(
            f"  {label} beats integrated intensity in {int(row['wins_r50'])}/{n} (r50), "
            f"{int(row['wins_r150'])}/{n} (r150); win fraction r50 = "
            f"{pm(row['frac_wins_r50'], row['frac_wins_r50_err'], 2)}, r150 = "
            f"{pm(row['frac_wins_r150'], row['frac_wins_r150_err'], 2)} "
            f"({patches:.1f} effective patches); robust r: "
            f"{pm(row['frac_wins_r50_robust'], row['frac_wins_r50_robust_err'], 2)}, "
            f"{pm(row['frac_wins_r150_robust'], row['frac_wins_r150_robust_err'], 2)}"
        )
        lines.append(
            f"  {'':<4}gain over integrated: r50 = "
            f"{pm(row['gain_r50'], row['gain_r50_err'], sign='+')}, r150 = "
            f"{pm(row['gain_r150'], row['gain_r150_err'], sign='+')} "
            f"(naive ± {row['gain_r50_err_naive']:.3f}, {row['gain_r150_err_naive']:.3f}); "
            f"robust r: r50 = {pm(row['gain_r50_robust'], row['gain_r50_robust_err'], sign='+')}"
            f", r150 = {pm(row['gain_r150_robust'], row['gain_r150_robust_err'], sign='+')}"
        )
    return lines


# --- the headline: every model on the same test cutouts ------------------------------------

# Models that depend only on the cutouts: the same in every run on the same cutouts.
CUTOUT_MODELS = (REFERENCE, ORACLE)
# Models trained per experiment and seed: one headline entry per run.
TRAINED_MODELS = ("unet",)
# r values of two runs' model agreeing this closely are the same model on the same cutouts
# (they come from the same inputs; only the CSV round trip separates them).
SAME_ATOL = 1e-6
SAME_COLUMNS = ("lon", "lat", "psi", *ALL_METRICS)


def headline_groups(
    runs: Sequence[tuple[str, int]], settings: Mapping[str, Mapping[str, object]] | None
) -> dict[tuple, list[tuple[str, int]]]:
    """Runs on the same test cutouts: (split, pairing, velocity range, seed) -> its runs.

    The cutouts depend on the velocity range, the split and the pairing only, so experiments
    that share them and a training seed are compared side by side. A run whose experiment
    has no entry in ``settings`` (:data:`dustpred.config.SETTING_COLUMNS`) forms its own
    group.
    """
    groups: dict[tuple, list[tuple[str, int]]] = {}
    for experiment, seed in runs:
        s = (settings or {}).get(experiment)
        key = (
            (s["split"], s.get("pairing"), s["velocity_kms"], seed)
            if s
            else (experiment, None, None, seed)
        )
        groups.setdefault(key, []).append((experiment, seed))
    return groups


def unet_tags(
    experiments: Sequence[str], settings: Mapping[str, Mapping[str, object]] | None
) -> dict[str, str]:
    """Headline tag of each experiment's U-Net: its ``unet.variant`` (``residual``,
    ``paper``), with the experiment's name where two share a variant, else the name alone."""
    variants = {e: (settings or {}).get(e, {}).get("variant") for e in experiments}
    count = Counter(variants.values())
    return {e: (v if count[v] == 1 else f"{v}, {e}") if v else e for e, v in variants.items()}


def _same_model(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Whether two runs' rows of one model are the same cutouts with the same r."""
    a, b = (t.sort_values(["subset", "cutout"]).reset_index(drop=True) for t in (a, b))
    if len(a) != len(b) or not (a[["subset", "cutout"]] == b[["subset", "cutout"]]).all().all():
        return False
    cols = [c for c in SAME_COLUMNS if c in a.columns and c in b.columns]
    return bool(
        np.allclose(
            a[cols].to_numpy(float), b[cols].to_numpy(float), rtol=0, atol=SAME_ATOL, equal_nan=True
        )
    )


def combine_runs(per_cutout: Mapping[str, pd.DataFrame], tags: Mapping[str, str]) -> pd.DataFrame:
    """One per-cutout table of the runs of one headline group (experiment -> its table).

    Integrated intensity and the oracle are taken once, after checking that every run has
    them on the same cutouts with the same r (else InputError: the runs do not share their
    cutouts). The linear models are taken once where they agree (the same ``linear``
    settings), else once per run as ``<model>:<experiment>``; each U-Net is
    ``unet:<tag>`` (``tags``: :func:`unet_tags`).
    """
    names = list(per_cutout)
    frames = []
    models = model_order(m for t in per_cutout.values() for m in t["model"].unique())
    for model in models:
        rows = {e: t[t["model"] == model] for e, t in per_cutout.items()}
        rows = {e: r for e, r in rows.items() if len(r)}
        first = next(iter(rows))
        if model in TRAINED_MODELS:
            frames += [r.assign(model=f"{model}:{tags[e]}") for e, r in rows.items()]
        elif all(_same_model(rows[first], r) for r in rows.values()):
            frames.append(rows[first])
        elif model in CUTOUT_MODELS:
            raise InputError(
                f"summary headline: {model_label(model)} differs between the runs of "
                f"experiments {names} (velocity range, split and seed alike); expected the "
                "same test cutouts (are some per-cutout tables stale?)"
            )
        else:
            frames += [r.assign(model=f"{model}:{e}") for e, r in rows.items()]
    return pd.concat(frames, ignore_index=True)[PER_CUTOUT_COLUMNS]


def headline_lines(
    per_cutout: Mapping[tuple[str, int], pd.DataFrame],
    settings: Mapping[str, Mapping[str, object]] | None = None,
    errors: ErrorSettings | None = None,
) -> list[str]:
    """The headline of the text summary: per group of :func:`headline_groups`, the lines of
    :func:`summary_lines` on :func:`combine_runs` of its runs ((experiment, seed) -> that
    run's per-cutout table)."""
    errors = errors or ErrorSettings()
    lines = ["headline: every model on the same test cutouts", "-" * 46]
    for key, runs in headline_groups(list(per_cutout), settings).items():
        split, pairing, velocity, seed = key
        experiments = [e for e, _ in runs]
        if velocity is None:  # no settings: the run alone
            lines.append(f"experiment {split}, seed {seed}")
        else:
            shuffled = (
                ", HI paired with dust 180 deg away (null test)" if pairing == "shuffled" else ""
            )
            lines.append(
                f"split {split}{shuffled}, HI {velocity} km/s, seed {seed}: "
                f"experiment{'s' if len(runs) > 1 else ''} {', '.join(experiments)}"
            )
        tables = {e: per_cutout[(e, s)] for e, s in runs}
        combined = combine_runs(tables, unet_tags(experiments, settings))
        wins = wins_table(combined, errors)
        lines.extend(summary_lines(combined, wins, errors=errors))
        lines.append("")
    return lines


def summarize(
    per_cutout_paths: Mapping[tuple[str, int], str | os.PathLike],
    summary_csv: str | os.PathLike,
    summary_txt: str | os.PathLike,
    summary_parquet: str | os.PathLike | None = None,
    *,
    by_experiment: Sequence[str | os.PathLike] | None = None,
    settings: Mapping[str, Mapping[str, object]] | None = None,
    errors: ErrorSettings | None = None,
) -> pd.DataFrame:
    """Summary across experiments and seeds: one table row per (experiment, seed, model).

    Parameters
    ----------
    per_cutout_paths
        (experiment, seed) -> that run's per-cutout CSV table.
    summary_csv, summary_txt, summary_parquet
        Outputs: the table, and a human-readable text (also logged): the headline
        (:func:`headline_lines`: the models of the runs on the same test cutouts side by
        side), then one paragraph per run and the spread over seeds.
    by_experiment
        (csv, parquet) paths of the table of means and sds over seeds per experiment and
        model (:data:`SUMMARY_BY_EXPERIMENT_COLUMNS`), or None.
    settings
        Experiment name -> its :data:`SETTING_COLUMNS` values (see
        :func:`dustpred.config.experiment_settings`); fills those columns of both tables and
        groups the headline (without it, each run is its own headline group).
    errors
        How errors are computed (default :class:`dustpred.evaluation.resampling.ErrorSettings`).

    Adding experiments or seeds only adds rows (and paragraphs of the text).
    """
    errors = errors or ErrorSettings()
    frames, runs_text, test_rows = [], ["every run", "---------"], {}
    for (experiment, seed), path in per_cutout_paths.items():
        per_cutout = read_table(path, PER_CUTOUT_COLUMNS)
        wins = wins_table(per_cutout, errors)
        frames.append(summary_rows(experiment, seed, per_cutout, wins, errors))
        runs_text.append(f"experiment {experiment}, seed {seed}")
        runs_text.extend(summary_lines(per_cutout, wins, errors=errors))
        runs_text.append("")
        # The headline reads only the test rows: hold those alone (memory at paper scale).
        test_rows[(experiment, seed)] = per_cutout[per_cutout["subset"] == "test"]
    text = ["dustpred summary", "================", ""]
    if test_rows:
        text += headline_lines(test_rows, settings, errors) + runs_text
    table = (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SUMMARY_COLUMNS)
    )
    spread = seed_spread(table)
    text.extend(seed_spread_lines(spread))
    if settings is not None:
        _with_settings(table, settings)
        _with_settings(spread, settings)
    write_table(table, summary_csv, summary_parquet)
    if by_experiment is not None:
        write_table(spread, *by_experiment)
    write_lines(summary_txt, text)
    return table


def write_lines(path: str | os.PathLike, lines: Sequence[str]) -> None:
    body = "\n".join(lines).rstrip() + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(body))
    for line in body.splitlines():
        log.info(line)


def _with_settings(table: pd.DataFrame, settings: Mapping[str, Mapping[str, object]]) -> None:
    """Fill the :data:`SETTING_COLUMNS` of ``table`` in place, per experiment."""
    for column in SETTING_COLUMNS:
        table[column] = [settings.get(e, {}).get(column) for e in table["experiment"]]


def seed_spread(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over seeds of the test scores, gains and win counts, per experiment and
    model. Returns a DataFrame with :data:`SUMMARY_BY_EXPERIMENT_COLUMNS`; sds are NaN for a
    single seed.

    ``<stat>_err_total`` is the error of the seed mean of a statistic with a block error:
    the block error (averaged over seeds: the seeds share the test cutouts, so it does not
    shrink with their number) and the seed sd / sqrt(n_seeds) in quadrature. With five
    skies of two seeds each the block error alone was a third to a half too small for the
    U-Net's gains (bench/RESULTS.md); NaN for a single seed."""
    if table.empty:
        return pd.DataFrame(columns=SUMMARY_BY_EXPERIMENT_COLUMNS)
    values = table[["experiment", "model", *BY_EXPERIMENT_STATS]].copy()
    values[BY_EXPERIMENT_STATS] = values[BY_EXPERIMENT_STATS].astype("float64")
    grouped = values.groupby(["experiment", "model"], sort=False)[BY_EXPERIMENT_STATS]
    mean = grouped.mean().add_suffix("_mean")
    sd = grouped.std(ddof=1).add_suffix("_sd")
    n = grouped.size().rename("n_seeds")
    errors = table[["experiment", "model"]].join(
        table[[f"{c}_err" for c in TOTAL_ERROR_STATS]].astype("float64")
    )
    block = errors.groupby(["experiment", "model"], sort=False).mean()
    total = pd.DataFrame(
        {
            f"{c}_err_total": np.sqrt(block[f"{c}_err"] ** 2 + sd[f"{c}_sd"] ** 2 / n)
            for c in TOTAL_ERROR_STATS
        }
    )
    out = pd.concat([n, mean, sd, total], axis=1).reset_index()
    first = table.groupby(["experiment", "model"], sort=False)[SETTING_COLUMNS].first()
    out = out.join(first, on=["experiment", "model"])
    return out[SUMMARY_BY_EXPERIMENT_COLUMNS]


def seed_spread_lines(spread: pd.DataFrame) -> list[str]:
    """Text lines for experiments with more than one seed: mean +- sd over seeds, from
    :func:`seed_spread`."""
    spread = spread[spread["n_seeds"] > 1]
    if spread.empty:
        return []
    lines = [
        "mean +- sd over seeds (test set); [error of the mean: block error and sd / sqrt(seeds)]"
    ]
    for _, row in spread.iterrows():
        r50, r150 = _spread_text(row, "r50_test"), _spread_text(row, "r150_test")
        gain, robust = _spread_text(row, "gain_r50", "+"), _spread_text(row, "gain_r50_robust", "+")
        lines.append(
            f"  {row['experiment']:<16} {model_label(row['model']):<24} "
            f"r50 = {r50}   r150 = {r150}   gain r50 = {gain} (robust r: {robust})   "
            f"({int(row['n_seeds'])} seeds)"
        )
    return lines


def _spread_text(row: pd.Series, name: str, sign: str = "") -> str:
    """``mean +- sd [error of the mean]`` of statistic ``name`` in a :func:`seed_spread` row."""
    return (
        f"{row[f'{name}_mean']:{sign}.3f} +- {row[f'{name}_sd']:.3f} "
        f"[{row[f'{name}_err_total']:.3f}]"
    )


__all__ = [
    "SUBSETS",
    "SUMMARY_BY_EXPERIMENT_COLUMNS",
    "SUMMARY_COLUMNS",
    "seed_spread",
    "summarize",
    "combine_runs",
    "headline_groups",
    "headline_lines",
    "summary_lines",
    "summary_rows",
]
