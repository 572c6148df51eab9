"""The evaluation's table vocabulary: model names and labels, table columns, CSV/Parquet I/O.

Shared by the evaluate rule (:mod:`dustpred.evaluation.evaluate`), the summaries
(:mod:`dustpred.evaluation.summary`), the template's sphere tables and every figure.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from dustpred.atomic import atomic_write
from dustpred.errors import InputError

log = logging.getLogger(__name__)


REFERENCE = "integrated"


MODELS = ("integrated", "linear", "unet")


ORACLE = "oracle"


# Maps a prediction file may lack: prediction files written before the scale-dependent
# model was evaluated, and skies without an oracle (real data).
OPTIONAL_MODELS = ("linear_sd", ORACLE)


SUBSETS = ("train", "test")


METRICS = ("r50", "r150")


# The paper's r and the offset-robust r, per cutout; wins and summaries use both.
ROBUST_METRICS = ("r50_robust", "r150_robust")


ALL_METRICS = (*METRICS, *ROBUST_METRICS)


# Display order and labels of every model the tables may hold: adding a model to the
# evaluation is adding it here (models not listed come last, labelled by their name). A name
# "<model>:<tag>" (the summary's headline, e.g. "unet:paper") sorts with <model> and is
# labelled "<label> (<tag>)".
MODEL_LABELS = {
    "integrated": "integrated intensity",
    "linear": "linear, scale-independent",
    "linear_sd": "linear, scale-dependent",
    "unet": "U-Net",
    "oracle": "oracle (HI-traced dust)",
}


PER_CUTOUT_COLUMNS = [
    "subset",
    "cutout",
    "lon",
    "lat",
    "psi",
    "masked_fraction",
    "model",
    *ALL_METRICS,
]


R_ELL_COLUMNS = [
    "subset",
    "model",
    "ell",
    "ell_lo",
    "ell_hi",
    "r_mean",
    "r_err",
    "r_err_naive",
    "r_std",
    "r_robust_mean",
    "r_robust_err",
    "n",
    "n_patches",
]


WINS_COLUMNS = [
    "subset",
    "model",
    "metric",
    "wins",
    "n",
    "fraction",
    "fraction_err",
    "fraction_err_naive",
    "n_patches",
]


def model_order(names: Iterable[str]) -> list[str]:
    """``names`` (unique) in the display order of :data:`MODEL_LABELS` (a tagged name
    ``model:tag`` at its model's place, tags in the order given), unknown ones last."""
    names = list(dict.fromkeys(names))
    rank = {m: i for i, m in enumerate(MODEL_LABELS)}
    return sorted(names, key=lambda m: rank.get(m.split(":", 1)[0], len(rank)))


def model_label(model: str) -> str:
    """Display label of ``model``; ``"unet:paper"`` -> ``"U-Net (paper)"``."""
    base, sep, tag = model.partition(":")
    if sep and base in MODEL_LABELS:
        return f"{MODEL_LABELS[base]} ({tag})"
    return MODEL_LABELS.get(model, model)


def write_table(table: pd.DataFrame, csv_path: str | os.PathLike, parquet_path=None) -> None:
    """Write ``table`` to CSV (and Parquet if a path is given), each atomically."""
    atomic_write(csv_path, lambda tmp: table.to_csv(tmp, index=False))
    if parquet_path is not None:
        atomic_write(parquet_path, lambda tmp: table.to_parquet(tmp, index=False))


def read_table(path: str | os.PathLike, columns: Iterable[str]) -> pd.DataFrame:
    """Read a CSV table and check it has ``columns`` (InputError naming the file if not)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: table not found")
    table = pd.read_csv(path)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {missing}; found {list(table.columns)}, "
            f"expected {list(columns)}"
        )
    return table
