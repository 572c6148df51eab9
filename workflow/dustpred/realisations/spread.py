"""Each model's headline statistics across sky realisations and training seeds.

Input: the ``summary.csv`` of each realisation's run (:mod:`dustpred.realisations.runs`);
output, per statistic of :data:`STATISTICS` (the mean r50 / r150 of the test set, the gain over
integrated intensity and the win fraction, each with the paper's r and the robust r): the mean
over runs, their sd, the mean within-sky block-bootstrap error, and ``ratio`` = sd / mean
error. A block error that describes the sky-to-sky scatter has a ratio near 1 (with 5 skies
the sd itself is uncertain by ~35 %).

The block error resamples sky regions of one trained model: it leaves out the spread over
training seeds, which the runs' sd includes. Where skies have several training seeds, the
table also gives ``seed_sd`` (the sd over a sky's seeds, averaged over skies), ``err_total``
(the block error and the seed sd added in quadrature, sky by sky, then averaged) and
``ratio_total`` = sd / err_total.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import pandas as pd

from dustpred.errors import InputError
from dustpred.evaluation.summary import SUMMARY_COLUMNS, pm, write_lines
from dustpred.evaluation.tables import (
    ALL_METRICS,
    REFERENCE,
    model_label,
    model_order,
    read_table,
    write_table,
)

#: The summary columns compared across skies (each has an ``_err`` column).
STATISTICS = [
    f"{kind}{m}{tail}"
    for kind, tail in (("", "_test"), ("gain_", ""), ("frac_wins_", ""))
    for m in ALL_METRICS
]
REALISATION_COLUMNS = [
    "experiment",
    "model",
    "n_realisations",
    "n_runs",
    *[
        f"{g}_{s}"
        for g in STATISTICS
        for s in ("mean", "sd", "err_mean", "ratio", "seed_sd", "err_total", "ratio_total")
    ],
]


def realisation_spread(tables: Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    """Mean and spread of each model's gain over integrated intensity across realisations and
    training seeds.

    Parameters
    ----------
    tables
        Realisation number -> that run's summary table (:data:`SUMMARY_COLUMNS`).

    Returns
    -------
    DataFrame with :data:`REALISATION_COLUMNS`, one row per (experiment, model): for each
    statistic, the mean over all (realisation, seed) runs, their sd (ddof=1; NaN for one run),
    the mean of the runs' own block-bootstrap errors (``err_mean``) and ``ratio`` = sd /
    err_mean (NaN where the error is 0, e.g. integrated intensity's gain over itself).
    """
    if not tables:
        raise InputError("realisation summary: no summary tables; expected at least one")
    frames = [t.assign(realisation=int(k)) for k, t in tables.items()]
    runs = pd.concat(frames, ignore_index=True)
    grouped = runs.groupby(["experiment", "model"], sort=False)
    out = pd.DataFrame(
        {
            "n_realisations": grouped["realisation"].nunique(),
            "n_runs": grouped.size(),
        }
    )
    for stat in STATISTICS:
        out[f"{stat}_mean"] = grouped[stat].mean()
        out[f"{stat}_sd"] = grouped[stat].std(ddof=1)
        out[f"{stat}_err_mean"] = grouped[f"{stat}_err"].mean()
        error = out[f"{stat}_err_mean"]
        out[f"{stat}_ratio"] = (out[f"{stat}_sd"] / error).where(error > 0)
        out[f"{stat}_seed_sd"], out[f"{stat}_err_total"] = _with_seed_spread(runs, stat)
        total = out[f"{stat}_err_total"]
        out[f"{stat}_ratio_total"] = (out[f"{stat}_sd"] / total).where(total > 0)
    out = out.reset_index()
    order = {m: i for i, m in enumerate(model_order(out["model"]))}
    out = out.sort_values(
        ["experiment", "model"],
        key=lambda c: c.map(order).fillna(c) if c.name == "model" else c,
        kind="stable",
    )
    return out[REALISATION_COLUMNS].reset_index(drop=True)


def _with_seed_spread(runs: pd.DataFrame, stat: str) -> tuple[pd.Series, pd.Series]:
    """Per (experiment, model): the sd of ``stat`` over one sky's training seeds, and the block
    error and that sd in quadrature, each averaged over the skies with two or more seeds (NaN
    where none has)."""
    per_sky = runs.groupby(["experiment", "model", "realisation"], sort=False).agg(
        seed_sd=(stat, lambda v: v.std(ddof=1)), err=(f"{stat}_err", "mean")
    )
    per_sky = per_sky.dropna(subset=["seed_sd"])
    per_sky["err_total"] = (per_sky["err"] ** 2 + per_sky["seed_sd"] ** 2) ** 0.5
    by_model = per_sky.groupby(level=["experiment", "model"], sort=False)
    return by_model["seed_sd"].mean(), by_model["err_total"].mean()


def realisation_lines(spread: pd.DataFrame) -> list[str]:
    """Text of :func:`realisation_spread`: gain mean ± sd over runs per experiment and model."""
    lines = [
        "gain over integrated intensity across sky realisations and training seeds",
        "(mean ± sd over runs; [mean within-sky block-bootstrap error])",
    ]
    for _, row in spread[spread["model"] != REFERENCE].iterrows():
        lines.append(
            f"  {row['experiment']:<16} {model_label(row['model']):<24} "
            f"r50 {pm(row['gain_r50_mean'], row['gain_r50_sd'], sign='+')} "
            f"[{row['gain_r50_err_mean']:.3f}]   r150 "
            f"{pm(row['gain_r150_mean'], row['gain_r150_sd'], sign='+')} "
            f"[{row['gain_r150_err_mean']:.3f}]   ({int(row['n_realisations'])} skies, "
            f"{int(row['n_runs'])} runs)"
        )
    lines += ratio_lines(spread, "ratio", "mean within-sky block-bootstrap error")
    if spread[[f"{s}_ratio_total" for s in STATISTICS]].notna().any(axis=None):
        lines += ratio_lines(
            spread, "ratio_total", "(block error and training-seed sd in quadrature)"
        )
    return lines


def ratio_lines(spread: pd.DataFrame, column: str, error: str) -> list[str]:
    """Per model: sd over runs / ``error`` of every statistic (the ``_{column}`` columns; 1 =
    errors that match the scatter over skies and seeds)."""
    lines = [f"sd over runs / {error}"]
    for _, row in spread.iterrows():
        ratios = "  ".join(
            f"{stat} {row[f'{stat}_{column}']:.2f}"
            for stat in STATISTICS
            if pd.notna(row[f"{stat}_{column}"])
        )
        lines.append(f"  {row['experiment']:<16} {model_label(row['model']):<24} {ratios}")
    return lines


def summarize_realisations(
    summary_paths: Mapping[int, str | os.PathLike],
    csv_path: str | os.PathLike,
    txt_path: str | os.PathLike,
) -> pd.DataFrame:
    """Read each realisation's ``summary.csv``, write :func:`realisation_spread` (CSV) and
    its text; returns the table."""
    tables = {k: read_table(p, SUMMARY_COLUMNS) for k, p in summary_paths.items()}
    spread = realisation_spread(tables)
    write_table(spread, csv_path)
    write_lines(txt_path, realisation_lines(spread))
    return spread
