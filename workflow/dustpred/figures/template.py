"""Figures of the full-sky template: the maps (Mollweide and both poles) and the sphere r_ell.

Same conventions as :mod:`dustpred.figures.paper` (colours per model, PNG and PDF saved atomically).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import healpy as hp
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dustpred.evaluation.tables import MODEL_LABELS, read_table
from dustpred.figures.style import LINESTYLES, MARKERS, MASK_COLOUR, PALETTE, plt, save_figure
from dustpred.sky.stack import load_preprocessed
from dustpred.template.fitsfile import read_template
from dustpred.template.sphere import target_and_mask

R_ELL_TABLE_COLUMNS = ["hemisphere", "model", "ell", "r"]
#: View centres (lon, lat) of the three rows: whole sky, north pole, south pole.
POLES = {"north pole": (0.0, 90.0), "south pole": (0.0, -90.0)}


def _limits(*maps: np.ndarray) -> tuple[float, float]:
    values = np.concatenate([m[m != hp.UNSEEN] for m in maps])
    return tuple(float(v) for v in np.percentile(values, [1, 99])) if values.size else (0, 1)


def _projected(m: np.ndarray, rot: tuple[float, float] | None, xsize: int) -> np.ndarray:
    """``m`` as an image, Mollweide (``rot=None``) or the orthographic half-sky centred on
    ``rot`` (lon, lat in degrees); masked pixels are NaN, those off the sphere -inf."""
    if rot is None:
        proj = hp.projector.MollweideProj(xsize=xsize)
    else:
        proj = hp.projector.OrthographicProj(rot=rot, half_sky=True, xsize=xsize)
    nside = hp.npix2nside(m.size)
    image = proj.projmap(m, lambda x, y, z: hp.vec2pix(nside, x, y, z))
    return np.where(image == hp.UNSEEN, np.nan, image)


def template_maps_figure(panels: Mapping[str, np.ndarray], unit: str) -> Figure:
    """Rows: Mollweide, orthographic north pole, south pole; columns: ``panels`` (name -> map
    with masked pixels ``healpy.UNSEEN``; the first two share a colour scale).

    The images come from healpy's projectors and are drawn once, at the save: ``hp.mollview``
    and ``hp.orthview`` redraw the whole figure after each panel.
    """
    names = list(panels)
    fig, axes = plt.subplots(3, len(names), figsize=(4.2 * len(names), 9.5), squeeze=False)
    cmap = plt.get_cmap("inferno").with_extremes(bad=MASK_COLOUR)
    shared = _limits(*(panels[n] for n in names[:2]))
    views = {"": None, **POLES}
    for c, name in enumerate(names):
        lo, hi = shared if c < 2 else _limits(panels[name])
        for r, (view, rot) in enumerate(views.items()):
            ax = axes[r, c]
            xsize = 800 if rot is None else 400
            projected = _projected(panels[name], rot, xsize)
            image = ax.imshow(
                projected,
                alpha=np.where(np.isneginf(projected), 0.0, 1.0),
                origin="lower",
                cmap=cmap,
                vmin=lo,
                vmax=hi,
            )
            ax.set_title(f"{name}: {view}" if view else name, fontsize=9)
            ax.set_axis_off()
            if rot is None:
                fig.colorbar(image, ax=ax, orientation="horizontal", label=unit, shrink=0.8)
    return fig


def plot_template_maps(
    template: str | os.PathLike,
    preprocessed: Mapping[str, str],
    outputs: Sequence[str | os.PathLike],
    *,
    dpi: int = 150,
) -> None:
    """Target, template ``I``, residual and uncertainty (``I_STD`` with several seeds, else
    ``I_TILE_STD``) on the unmasked sky."""
    maps = read_template(template, ["I", "I_STD", "I_TILE_STD", "WEIGHT"])
    nside = hp.npix2nside(maps["I"].size)
    pre = load_preprocessed(preprocessed["stack"], preprocessed["mask"], preprocessed["meta"])
    target, mask = target_and_mask(pre, nside)
    hide = mask | (maps["WEIGHT"] <= 0)
    several = bool(np.any(maps["I_STD"] > 0))
    panels = {
        "target dust": target,
        "U-Net template I": maps["I"],
        "residual target - I": target - maps["I"],
        "I_STD (seed spread)" if several else "I_TILE_STD (tile spread)": maps[
            "I_STD" if several else "I_TILE_STD"
        ],
    }
    panels = {k: np.where(hide, hp.UNSEEN, v) for k, v in panels.items()}
    save_figure(template_maps_figure(panels, str(pre.meta["units"]["dust"])), outputs, dpi)


def template_r_ell_figure(table: pd.DataFrame) -> Figure:
    """One panel per hemisphere: binned sphere r_ell of each model against the target."""
    hemispheres = list(dict.fromkeys(table["hemisphere"]))
    fig, axes = plt.subplots(1, len(hemispheres), figsize=(5 * len(hemispheres), 3.8), sharey=True)
    for ax, hemisphere in zip(np.atleast_1d(axes), hemispheres, strict=True):
        part = table[table["hemisphere"] == hemisphere]
        for model, rows in part.groupby("model", sort=False):
            ax.plot(
                rows["ell"],
                rows["r"],
                color=PALETTE.get(model),
                marker=MARKERS.get(model),
                linestyle=LINESTYLES.get(model, "-"),
                label=MODEL_LABELS.get(model, model),
            )
        ax.set_title(hemisphere)
        ax.set_xlabel(r"$\ell$")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel(r"$r_\ell$ on the sphere")
    np.atleast_1d(axes)[0].legend(loc="lower left")
    return fig


def plot_template_r_ell(
    r_ell: str | os.PathLike, outputs: Sequence[str | os.PathLike], *, dpi: int = 150
) -> None:
    """The sphere r_ell figure from ``template_r_ell.csv``."""
    save_figure(template_r_ell_figure(read_table(r_ell, R_ELL_TABLE_COLUMNS)), outputs, dpi)


def template_coverage_figure(coverage: pd.DataFrame, r_ell: pd.DataFrame) -> Figure:
    """Left: the coverage of ``I_ERR`` (solid) and ``I_ERR_1DEG`` (dashed) against the nominal
    level, per hemisphere; right: the residual power ``cl_residual`` of each model and the
    target's ``cl_target``, per hemisphere."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    whole = coverage[coverage["region"] == -1]
    left.plot([0, 1], [0, 1], color="0.5", linewidth=0.8, label="calibrated")
    for c, hemisphere in enumerate(dict.fromkeys(r_ell["hemisphere"])):
        colour = f"C{c}"
        for scale, style in (("pixel", "-"), ("smoothed", "--")):
            rows = whole[(whole["hemisphere"] == hemisphere) & (whole["scale"] == scale)]
            if len(rows):
                label = f"{hemisphere}, " + (
                    "pixel" if scale == "pixel" else f"{rows['fwhm_deg'].iloc[0]:g} deg"
                )
                left.plot(rows["level"], rows["coverage"], style, color=colour, label=label)
        part = r_ell[r_ell["hemisphere"] == hemisphere]
        target = part[part["model"] == part["model"].iloc[0]]
        right.semilogy(
            target["ell"], target["cl_target"], ":", color=colour, label=f"{hemisphere}: target"
        )
        for model, rows in part[part["model"] != "oracle"].groupby("model", sort=False):
            right.semilogy(
                rows["ell"],
                rows["cl_residual"],
                color=colour,
                marker=MARKERS.get(model),
                linestyle=LINESTYLES.get(model, "-"),
                label=f"{hemisphere}: {MODEL_LABELS.get(model, model)} residual",
            )
    if whole.empty:
        left.text(0.5, 0.5, "no calibrated error\n(no cross-fitting)", ha="center", va="center")
    left.set_xlabel("nominal level")
    left.set_ylabel("fraction of held-out pixels covered")
    left.grid(alpha=0.3)
    left.legend(loc="upper left", fontsize=7)
    right.set_xlabel(r"$\ell$")
    right.set_ylabel(r"$C_\ell$ (unit$^2$)")
    right.grid(alpha=0.3)
    right.legend(loc="lower left", fontsize=6)
    return fig


def plot_template_coverage(
    coverage: str | os.PathLike,
    r_ell: str | os.PathLike,
    outputs: Sequence[str | os.PathLike],
    *,
    dpi: int = 150,
) -> None:
    """The coverage figure from ``template_coverage.csv`` and ``template_r_ell.csv``."""
    table = read_table(r_ell, [*R_ELL_TABLE_COLUMNS, "cl_target", "cl_residual"])
    columns = ["scale", "fwhm_deg", "hemisphere", "region", "level", "coverage"]
    save_figure(template_coverage_figure(read_table(coverage, columns), table), outputs, dpi)
