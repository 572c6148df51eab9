"""Fig. 1 of the paper: total HI intensity per velocity channel over random unmasked pointings.

The paper sums the 21-cm brightness temperature of 10,000 random pointings outside the mask
in every velocity slice of the HI4PI cube and marks the range it keeps (-64.5 to 17 km/s),
which holds most of the signal. Pointings are HEALPix pixels of the cube drawn uniformly
(equal-area pixels, so uniform on the sphere) without replacement among those whose centre
falls in an unmasked pixel of the mask map.
"""

from __future__ import annotations

import logging
import os

import healpy as hp
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dustpred.atomic import atomic_write
from dustpred.errors import InputError
from dustpred.figures.style import plt, save_figure
from dustpred.inputs.healpix_maps import read_healpix_map
from dustpred.inputs.hi_cube import open_hi_cube

log = logging.getLogger(__name__)

COLUMNS = ["channel", "velocity_kms", "total_K", "mean_K", "in_range"]


def unmasked_pointings(
    keep: np.ndarray, nside: int, n: int, rng: np.random.Generator, *, source: str = "mask"
) -> np.ndarray:
    """``n`` distinct random RING pixels at ``nside`` whose centres lie where ``keep >= 0.5``.

    Parameters
    ----------
    keep
        ``(12 Nside_mask**2,)`` RING keep-map (1 = unmasked), any Nside.
    nside
        Nside of the pointings (the HI cube's).
    rng
        Source of randomness.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` int64 RING pixel indices at ``nside``, in draw order.
    """
    npix = 12 * nside**2
    mask_nside = hp.npix2nside(keep.size)
    order = rng.permutation(npix)
    parts: list[np.ndarray] = []
    found = 0
    block = max(4 * n, 2**16)
    # Test the permuted pixels block by block until n are unmasked (a few blocks at most).
    for start in range(0, npix, block):
        pix = order[start : start + block]
        if mask_nside != nside:
            theta, phi = hp.pix2ang(nside, pix)
            ok = keep[hp.ang2pix(mask_nside, theta, phi)] >= 0.5
        else:
            ok = keep[pix] >= 0.5
        parts.append(pix[ok][: n - found])
        found += parts[-1].size
        if found == n:
            break
    chosen = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    if chosen.size < n:
        raise InputError(
            f"{source}: only {chosen.size} unmasked pixels at Nside {nside}; expected at least "
            f"{n} pointings (config 'cutouts.spectrum_pointings')"
        )
    return chosen


def velocity_spectrum(
    hi_path: str | os.PathLike,
    mask_path: str | os.PathLike,
    *,
    n_pointings: int = 10000,
    seed: int = 0,
    mask_field: str = "LR72",
    velocity_kms: tuple[float, float] = (-64.5, 17.0),
    hi_column: str | None = None,
    coordsys_if_missing: str | None = None,
) -> pd.DataFrame:
    """Total and mean brightness temperature per channel over random unmasked pointings.

    Parameters
    ----------
    hi_path
        Raw HI cube (file or directory, see :mod:`dustpred.inputs.hi_cube`), all channels used.
    mask_path
        Mask table; column ``mask_field`` is a keep-mask (1 = unmasked).
    n_pointings
        Number of random pointings (the paper: 10,000).
    seed
        Seed of the pointing draw.
    velocity_kms
        Selected range, flagged in column ``in_range``.
    hi_column, coordsys_if_missing
        As in :func:`dustpred.inputs.hi_cube.open_hi_cube` (spectrum column; coordinate system to
        assume for files without ``COORDSYS``).

    Returns
    -------
    pandas.DataFrame
        One row per channel: ``channel``, ``velocity_kms``, ``total_K`` (sum over pointings),
        ``mean_K``, ``in_range``; sorted by velocity.
    """
    cube = open_hi_cube(hi_path, column=hi_column, coordsys_if_missing=coordsys_if_missing)
    velocities = cube.velocities
    nside = cube.nside
    keep = read_healpix_map(mask_path, mask_field, coordsys_if_missing=coordsys_if_missing)
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(3,)))
    pixels = unmasked_pointings(keep, nside, int(n_pointings), rng, source=os.fspath(mask_path))
    spectra = cube.read_spectra(np.sort(pixels))
    spectra = spectra.astype(np.float64)
    total = spectra.sum(axis=0)
    lo, hi = sorted(float(v) for v in velocity_kms)
    table = pd.DataFrame(
        {
            "channel": np.arange(velocities.size),
            "velocity_kms": velocities,
            "total_K": total,
            "mean_K": total / pixels.size,
            "in_range": (velocities >= lo) & (velocities <= hi),
        }
    )
    log.info(
        "%d pointings at Nside %d, %d channels; %.1f %% of the total intensity in [%g, %g] km/s",
        pixels.size,
        nside,
        velocities.size,
        100.0 * total[table["in_range"].to_numpy()].sum() / total.sum() if total.sum() else 0.0,
        lo,
        hi,
    )
    return table.sort_values("velocity_kms", kind="stable").reset_index(drop=True)


def velocity_spectrum_figure(
    table: pd.DataFrame, velocity_kms: tuple[float, float], n_pointings: int
) -> Figure:
    """The figure: total intensity against velocity, selected range as dotted lines."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(table["velocity_kms"], table["total_K"], color="#1f77b4", lw=1.2)
    for v in velocity_kms:
        ax.axvline(v, color="k", ls=":", lw=1.0)
    ax.set_xlabel("velocity [km/s]")
    ax.set_ylabel(f"total intensity of {n_pointings:,} pointings [K]")
    ax.set_title(
        f"HI spectrum outside the mask; kept {velocity_kms[0]:g} to {velocity_kms[1]:g} km/s"
    )
    ax.margins(x=0)
    fig.tight_layout()
    return fig


def plot_velocity_spectrum(
    hi_path: str | os.PathLike,
    mask_path: str | os.PathLike,
    png_path: str | os.PathLike,
    pdf_path: str | os.PathLike,
    csv_path: str | os.PathLike,
    *,
    n_pointings: int = 10000,
    seed: int = 0,
    mask_field: str = "LR72",
    velocity_kms: tuple[float, float] = (-64.5, 17.0),
    hi_column: str | None = None,
    coordsys_if_missing: str | None = None,
    dpi: int = 150,
) -> pd.DataFrame:
    """Compute :func:`velocity_spectrum`, write its CSV table and the figure (PNG and PDF)."""
    table = velocity_spectrum(
        hi_path,
        mask_path,
        n_pointings=n_pointings,
        seed=seed,
        mask_field=mask_field,
        velocity_kms=velocity_kms,
        hi_column=hi_column,
        coordsys_if_missing=coordsys_if_missing,
    )
    atomic_write(csv_path, lambda tmp: table.to_csv(tmp, index=False, float_format="%.6g"))
    fig = velocity_spectrum_figure(table, velocity_kms, n_pointings)
    # The figure fills its canvas (tight_layout): saved without bbox_inches.
    save_figure(fig, [png_path, pdf_path], dpi=dpi, bbox_inches=None)
    return table
