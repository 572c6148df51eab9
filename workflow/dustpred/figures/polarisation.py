"""The polarisation figures: mean r_ell^EE and r_ell^BB per model, and the E and B maps of one
test cutout (target, oracle, the best baseline and the U-Net)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dustpred.figures.paper import choose_example
from dustpred.figures.style import MASK_COLOUR, PALETTE, save_figure
from dustpred.qu_evaluation.predict import read_qu_predictions
from dustpred.qu_evaluation.tables import read_qu_r_ell

#: Colours and line styles of the polarisation models (the U-Net and oracle as for intensity).
QU_STYLE = {
    "hi_orientation": ("#ff7f0e", ":"),
    "hi_channels": ("#9467bd", "-"),
    "unet": (PALETTE["unet"], "-."),
    "oracle": (PALETTE["oracle"], "--"),
}
LABELS = {
    "hi_orientation": "HI orientation (integrated)",
    "hi_channels": "HI orientation (per channel)",
    "unet": "U-Net (E and B maps)",
    "oracle": "oracle (HI-traced part)",
}


def qu_r_ell_figure(r_ell: pd.DataFrame) -> Figure:
    """Two panels, r_ell^EE and r_ell^BB against ell, one line per model."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, mode in zip(axes, ("EE", "BB"), strict=True):
        rows = r_ell[r_ell["mode"] == mode]
        for model, group in rows.groupby("model", sort=False):
            colour, style = QU_STYLE.get(model, ("#444444", "-"))
            ax.plot(group["ell"], group["r"], style, color=colour, label=LABELS.get(model, model))
        ax.axhline(0.0, color="#bbbbbb", lw=0.8)
        ax.set_xlabel(r"$\ell$")
        ax.set_title(rf"$r_\ell^{{{mode}}}$ of the test cutouts (mean)")
    axes[0].set_ylabel(r"$r_\ell$")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def eb_maps_figure(maps: dict[str, tuple[np.ndarray, np.ndarray]], mask: np.ndarray) -> Figure:
    """E (top row) and B (bottom row) maps of one cutout, one column per entry of ``maps``
    (each scaled to its own range: r ignores the scale)."""
    fig, axes = plt.subplots(2, len(maps), figsize=(2.6 * len(maps), 5.4), squeeze=False)
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad=MASK_COLOUR)
    for j, (name, pair) in enumerate(maps.items()):
        for i, (mode, image) in enumerate(zip("EB", pair, strict=True)):
            shown = np.ma.masked_array(image, mask)
            limit = float(np.abs(shown).max()) or 1.0
            ax = axes[i, j]
            ax.imshow(shown, origin="lower", cmap=cmap, vmin=-limit, vmax=limit)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{mode}: {LABELS.get(name, name)}", fontsize=8)
    fig.tight_layout()
    return fig


def plot_qu_r_ell(table: str | os.PathLike, paths: Sequence[str | os.PathLike], dpi: int) -> None:
    """The r_ell^EE / r_ell^BB figure of a ``qu_r_ell.csv`` table."""
    save_figure(qu_r_ell_figure(read_qu_r_ell(table)), paths, dpi=dpi)


def plot_eb_example(
    predictions: str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    *,
    dpi: int,
    index: int | None = None,
) -> None:
    """The E/B maps of test cutout ``index`` (None: the least masked one)."""
    data, models = read_qu_predictions(predictions)
    i = choose_example(data["mask"].mean(axis=(1, 2)), index)
    shown = {"target": (data["e"][i], data["b"][i])}
    shown |= {m: (e[i], b[i]) for m, (e, b) in models.items() if m != "hi_orientation"}
    save_figure(eb_maps_figure(shown, data["mask"][i]), paths, dpi=dpi)
