"""Tables of the polarisation stage: r^EE and r^BB per test cutout, their means with block
errors, and each model's gain and wins over the best HI-orientation baseline.

Statistics (:data:`STATS`): ``r50_EE``, ``r150_EE``, ``r50_BB``, ``r150_BB`` of
:func:`dustpred.polarisation.eb.r_eb_models`: the paper's r of the E maps and of the B maps,
per cutout; r50 compares E/B mixtures, see that module). Errors are the block bootstrap over
HEALPix regions of the cutout centres (:mod:`dustpred.evaluation.resampling`, config
``evaluation``), as for intensity.

**The reference** of a statistic is the baseline (a model of
:data:`dustpred.polarisation.baselines.BASELINES`) with the highest mean of it; every other
model's gain is the mean of the per-cutout difference from it, and its wins the cutouts where
it is strictly higher.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from dustpred.evaluation.resampling import ErrorSettings, win_fraction
from dustpred.evaluation.tables import read_table
from dustpred.polarisation.eb import MODES, r_eb_models

STATS = ("r50_EE", "r150_EE", "r50_BB", "r150_BB")
R_ELL_COLUMNS = ("model", "mode", "ell", "r")
CHUNK = 256


def per_cutout_qu(
    data: Mapping[str, np.ndarray],
    predictions: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    side_deg: float,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """r^EE/r^BB of every model on every cutout, and the mean r_ell per model and mode.

    ``data``: the target's ``e``, ``b`` maps, ``mask``, ``lon``, ``lat``; ``predictions``:
    ``{model: (E, B)}`` maps (:func:`dustpred.qu_evaluation.predict.read_qu_predictions`).

    Returns
    -------
    per_cutout : pandas.DataFrame
        One row per (cutout, model): ``cutout``, ``model``, ``lon``, ``lat`` and
        :data:`STATS`.
    r_ell : pandas.DataFrame
        One row per (model, mode, ell bin): ``model``, ``mode``, ``ell``, ``r`` (mean over
        cutouts).
    """
    n = data["e"].shape[0]
    stats = {m: {s: np.zeros(n) for s in STATS} for m in predictions}
    sums: dict[tuple[str, str], np.ndarray] = {}
    centres = np.zeros(0)
    for lo in range(0, n, CHUNK):
        hi = min(lo + CHUNK, n)
        chunk = {m: (e[lo:hi], b[lo:hi]) for m, (e, b) in predictions.items()}
        target = (data["e"][lo:hi], data["b"][lo:hi])
        centres, out = r_eb_models(target, chunk, data["mask"][lo:hi], side_deg=side_deg)
        for model, by_mode in out.items():
            for mode in MODES:
                r, r50, r150 = by_mode[mode]
                stats[model][f"r50_{mode}"][lo:hi] = r50
                stats[model][f"r150_{mode}"][lo:hi] = r150
                sums[model, mode] = sums.get((model, mode), 0.0) + r.sum(axis=0)
    rows = [
        pd.DataFrame(
            {"cutout": np.arange(n), "model": model, "lon": data["lon"], "lat": data["lat"]}
            | values
        )
        for model, values in stats.items()
    ]
    r_ell = pd.DataFrame(
        [
            {"model": model, "mode": mode, "ell": float(ell), "r": float(r)}
            for (model, mode), total in sums.items()
            for ell, r in zip(centres, total / n, strict=True)
        ]
    )
    return pd.concat(rows, ignore_index=True), r_ell


def summary_qu(
    per_cutout: pd.DataFrame, baselines: Sequence[str], errors: ErrorSettings
) -> pd.DataFrame:
    """Per model and statistic: mean ± block error, and gain ± block error and wins (with the
    win fraction's block error) over the statistic's reference (the best of ``baselines``);
    one row per (model, stat)."""
    wide = {m: g.sort_values("cutout") for m, g in per_cutout.groupby("model", sort=False)}
    first = next(iter(wide.values()))
    labels = errors.labels(first["lon"].to_numpy(), first["lat"].to_numpy())
    rows = []
    for stat in STATS:
        means = {m: float(g[stat].mean()) for m, g in wide.items()}
        reference = max((b for b in baselines if b in wide), key=means.get)
        ref_values = wide[reference][stat].to_numpy()
        for model, g in wide.items():
            values = g[stat].to_numpy()
            row = {
                "model": model,
                "stat": stat,
                "mean": means[model],
                "error": float(errors.block_error(values, labels)),
                "reference": reference,
            }
            if model != reference:
                wins = win_fraction(
                    values, ref_values, labels, n_boot=errors.n_boot, seed=errors.seed
                )
                gain = values - ref_values
                row |= {
                    "gain": float(gain.mean()),
                    "gain_error": float(errors.block_error(gain, labels)),
                    "wins": wins.wins,
                    "n": wins.n,
                    "win_fraction_error": wins.block_error,
                }
            rows.append(row)
    return pd.DataFrame(rows)


def summary_lines(summary: pd.DataFrame, sky: str) -> list[str]:
    """The summary as text: one line per model and statistic."""
    lines = [
        f"Polarisation, {sky}: r^EE / r^BB per test cutout, mean +- block error; gain and "
        "wins over the best HI-orientation baseline (the reference) of each statistic"
    ]
    for row in summary.itertuples():
        text = f"  {row.stat:8s} {row.model:15s} {row.mean:.3f} +- {row.error:.3f}"
        if row.model != row.reference:
            text += (
                f"   gain over {row.reference}: {row.gain:+.3f} +- {row.gain_error:.3f}, "
                f"wins {int(row.wins)}/{int(row.n)}"
            )
        lines.append(text)
    return lines


def read_qu_r_ell(path: str) -> pd.DataFrame:
    """A ``qu_r_ell.csv`` table (:func:`per_cutout_qu`), its columns checked."""
    return read_table(path, R_ELL_COLUMNS)
