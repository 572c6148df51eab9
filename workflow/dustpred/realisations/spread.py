"""Each model's headline statistics across sky realisations and training seeds.

Input: the ``summary.csv`` of each realisation's run (:mod:`dustpred.realisations.runs`);
output, per statistic of :data:`STATISTICS` (the mean r50 / r150 of the test set, the gain over
integrated intensity and the win fraction, each with the paper's r and the robust r): the mean
over runs, their sd, the mean within-sky block-bootstrap error, and ``ratio`` = sd / mean
error. A block error that describes the sky-to-sky scatter has a ratio near 1 (with 5 skies
the sd itself is uncertain by ~35 %).
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
    *[f"{g}_{s}" for g in STATISTICS for s in ("mean", "sd", "err_mean", "ratio")],
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
    out = out.reset_index()
    order = {m: i for i, m in enumerate(model_order(out["model"]))}
    out = out.sort_values(
        ["experiment", "model"],
        key=lambda c: c.map(order).fillna(c) if c.name == "model" else c,
        kind="stable",
    )
    return out[REALISATION_COLUMNS].reset_index(drop=True)


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
    return lines + ratio_lines(spread)


def ratio_lines(spread: pd.DataFrame) -> list[str]:
    """Per model: sd over runs / mean block error of every statistic (1 = errors that match
    the sky-to-sky scatter)."""
    lines = ["sd over runs / mean within-sky block-bootstrap error"]
    for _, row in spread.iterrows():
        ratios = "  ".join(
            f"{stat} {row[f'{stat}_ratio']:.2f}"
            for stat in STATISTICS
            if pd.notna(row[f"{stat}_ratio"])
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
