"""The one figure style: the Agg backend, each model's colour, line style and marker, and the
atomic save path of every figure (PNG and PDF).

Every figure uses :data:`PALETTE`, :data:`LINESTYLES` and :data:`MARKERS`, so a model has
the same colour everywhere (integrated red, linear green, U-Net blue as in the paper's
Fig. 5; the oracle black dashed).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display in workflow jobs; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from dustpred.atomic import atomic_path  # noqa: E402

PALETTE = {
    "target": "#444444",
    "integrated": "#d62728",
    "linear": "#2ca02c",
    "unet": "#1f77b4",
    "oracle": "#000000",
}


LINESTYLES = {"integrated": "-", "linear": ":", "unet": "-.", "oracle": "--"}


MARKERS = {"integrated": "s", "linear": "o", "unet": "^", "oracle": "D"}


METRIC_LABELS = {
    "r50": r"$r_{50}$ ($\ell_F \leq \ell < 100$)",
    "r150": r"$r_{150}$ ($100 \leq \ell < 200$)",
}


MASK_COLOUR = "#9e9e9e"


def log_if_decades(ax, values: np.ndarray) -> None:
    """Log y scale only where positive values span more than a decade (else it just hides the
    ticks)."""
    if np.all(values > 0) and np.nanmax(values) > 10 * np.nanmin(values):
        ax.set_yscale("log")


def save_figure(
    fig: Figure,
    paths: Sequence[str | os.PathLike],
    dpi: int = 150,
    bbox_inches: str | None = "tight",
) -> None:
    """Save ``fig`` to each path (format from the suffix, e.g. .png, .pdf) atomically; close it."""
    try:
        for path in paths:
            with atomic_path(path) as tmp:
                fmt = Path(path).suffix.lstrip(".")
                fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches=bbox_inches)
    finally:
        plt.close(fig)
