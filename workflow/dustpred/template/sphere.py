"""Validation of a full-sky template on the sphere: r_ell per hemisphere from the spectra.

For each hemisphere of the split (:func:`dustpred.template.tiling.region_map`), the kept sky (the LR
mask) inside it is apodised (:func:`apodised_mask`), the weighted mean of each map over it is
removed, and the spectra of ``w * map`` give, per bin ``b`` of width ``bin_width`` from
``ell_min`` up to the filter cutoff,

    r_b = sum_b (2l+1) C_l^{TP} / sqrt(sum_b (2l+1) C_l^{TT} * sum_b (2l+1) C_l^{PP})

between the target ``T`` and each template ``P``: the sphere's version of the paper's r(ell)
(1 for a template proportional to the target plus an offset; invariant to the scale). No
mode-coupling correction is applied: the same window multiplies both maps, so it cancels to
first order in the ratio, and bins much wider than the window's width in ell keep the rest
small.

Each row also gives the bin's mean power (weights ``2l+1``) of the target, ``cl_target``, and
of the residual ``T - P``, ``cl_residual``, divided by the mean of ``w**2`` (the pseudo-C_l
estimate of the full-sky power, without mode-coupling correction): the residual spectrum a CMB
analysis that marginalises over the template needs.

The transforms are :mod:`dustpred.sky.harmonic`'s (ducc0, ``nthreads`` threads; healpy's
``map2alm(iter=3)`` to rounding). The window's Gaussian smoothing stops at the multipole
where the beam has fallen below :data:`BEAM_TOLERANCE` (ell ~ 140 for a 5 deg FWHM), not at
``3 Nside - 1``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import healpy as hp
import numpy as np
import pandas as pd

from dustpred.errors import InputError
from dustpred.evaluation.tables import write_table
from dustpred.sky import harmonic
from dustpred.sky.stack import load_preprocessed
from dustpred.template.fitsfile import read_template
from dustpred.template.tiling import region_map

#: Largest Gaussian beam response b_ell = exp(-ell(ell+1) sigma^2 / 2) the smoothing drops.
BEAM_TOLERANCE = 1e-6

#: Hemisphere names of each split: (region 0 = sampling's 'train', region 1 = 'test').
HEMISPHERES = {"north_south": ("north", "south"), "east_west": ("east", "west")}


def smooth(values: np.ndarray, fwhm_deg: float, *, nthreads: int = 1) -> np.ndarray:
    """``healpy.smoothing(values, fwhm)`` (Gaussian beam, 3 iterations), band-limited where
    the beam falls below :data:`BEAM_TOLERANCE`: ``lmax = sqrt(2 ln(1/tol)) / sigma``.

    ``values``: ``(12 Nside**2,)`` RING map; returns the smoothed float64 map.
    """
    nside = hp.npix2nside(len(values))
    sigma = np.radians(fwhm_deg) / np.sqrt(8.0 * np.log(2.0))
    band = int(np.ceil(np.sqrt(2.0 * np.log(1.0 / BEAM_TOLERANCE)) / sigma))
    lmax = min(3 * nside - 1, band)
    alm = harmonic.analysis(values, lmax, iters=3, nthreads=nthreads)
    beam = hp.gauss_beam(np.radians(fwhm_deg), lmax=lmax)
    return harmonic.synthesis(hp.almxfl(alm, beam), nside, lmax, nthreads=nthreads)


def apodised_mask(keep: np.ndarray, apod_deg: float, *, nthreads: int = 1) -> np.ndarray:
    """A smooth window inside ``keep`` that falls to ~0 at its edge.

    The kept region is eroded (pixels where ``keep`` smoothed by a Gaussian of FWHM
    ``apod_deg`` is at least 0.99, i.e. ~1 FWHM inside the edge), the eroded region is smoothed
    by the same Gaussian, and the result is cut to ``keep``: 1 deep inside, below ~0.01 at
    ``keep``'s edge, 0 outside.

    Parameters
    ----------
    keep
        ``(12 Nside**2,)`` bool RING, True = use.
    apod_deg
        Apodisation scale (FWHM of the Gaussian), degrees; 0 returns ``keep`` as float.
    nthreads
        Threads of the transforms (:func:`smooth`).

    Returns
    -------
    numpy.ndarray
        ``(12 Nside**2,)`` float64 in [0, 1].
    """
    keep = np.asarray(keep, dtype=np.float64)
    if apod_deg <= 0:
        return keep
    core = (smooth(keep, apod_deg, nthreads=nthreads) >= 0.99).astype(np.float64)
    return np.clip(smooth(core, apod_deg, nthreads=nthreads), 0.0, 1.0) * keep


def ell_bins(ell_min: int, ell_cutoff: float, bin_width: int) -> np.ndarray:
    """Bin edges ``[ell_min, ell_min + width, ...]`` to ``ell_cutoff`` (last bin may be short)."""
    if bin_width < 1 or ell_min < 0 or ell_cutoff <= ell_min:
        raise InputError(
            f"r_ell bins: found ell_min={ell_min}, ell_cutoff={ell_cutoff}, bin_width="
            f"{bin_width}; expected 0 <= ell_min < ell_cutoff and bin_width >= 1"
        )
    top = int(np.floor(ell_cutoff)) + 1
    edges = np.arange(int(ell_min), top, int(bin_width))
    return np.append(edges, top) if edges[-1] != top else edges


def sphere_r_ell(
    target: np.ndarray,
    templates: dict[str, np.ndarray],
    keep: np.ndarray,
    *,
    split: str,
    ell_cutoff: float,
    bin_width: int = 20,
    ell_min: int = 2,
    apod_deg: float = 5.0,
    nthreads: int = 1,
) -> pd.DataFrame:
    """Binned r_ell between the target and each template, per hemisphere (module docstring).

    Parameters
    ----------
    target
        ``(12 Nside**2,)`` RING target dust map.
    templates
        ``{name: (12 Nside**2,) map}``, e.g. ``{'unet': ..., 'integrated': ..., 'linear': ...,
        'oracle': ...}``.
    keep
        ``(12 Nside**2,)`` bool, True = usable sky (the LR mask, and the template's
        ``WEIGHT > 0``).
    split
        ``'north_south'`` or ``'east_west'``: the two hemispheres.
    ell_cutoff
        Largest multipole (the preprocessing filter's cutoff).
    bin_width, ell_min
        Bins ``[ell_min + k * bin_width, ...)`` up to ``ell_cutoff``.
    apod_deg
        :func:`apodised_mask` scale.
    nthreads
        Threads of the harmonic transforms (the results do not depend on it).

    Returns
    -------
    pandas.DataFrame
        One row per (hemisphere, model, bin): ``hemisphere``, ``model``, ``ell_lo``,
        ``ell_hi`` (exclusive), ``ell`` (bin centre), ``r``, ``cl_target``, ``cl_residual``
        (target unit squared), ``f_sky`` (mean of the window).
    """
    target = np.asarray(target, dtype=np.float64)
    npix = target.size
    for name, values in {"keep": keep, **templates}.items():
        if np.shape(values) != (npix,):
            raise InputError(
                f"sphere_r_ell: {name} has shape {np.shape(values)}; expected ({npix},)"
            )
    nside = hp.npix2nside(npix)
    edges = ell_bins(ell_min, ell_cutoff, bin_width)
    lmax = int(min(edges[-1] - 1, 3 * nside - 1))
    ell = np.arange(lmax + 1)
    rows = []
    for region, hemisphere in zip(("train", "test"), HEMISPHERES[split], strict=True):
        window = apodised_mask(
            np.asarray(keep, dtype=bool) & region_map(nside, split, region),
            apod_deg,
            nthreads=nthreads,
        )
        if not window.sum() > 0:
            raise InputError(f"sphere_r_ell: no usable sky in the {hemisphere} hemisphere")

        def alm(values, window=window):
            values = np.asarray(values, dtype=np.float64)
            mean = (window * values).sum() / window.sum()
            return harmonic.analysis(window * (values - mean), lmax, iters=3, nthreads=nthreads)

        alm_t = alm(target)
        cl_tt = hp.alm2cl(alm_t)
        w2 = float(np.mean(window**2))
        for name, values in templates.items():
            alm_p = alm(values)
            cl_tp, cl_pp = hp.alm2cl(alm_t, alm_p), hp.alm2cl(alm_p)
            cl_res = hp.alm2cl(alm_t - alm_p)
            for lo, hi in zip(edges[:-1], edges[1:], strict=True):
                sel = (ell >= lo) & (ell < hi)
                mult = 2 * ell[sel] + 1
                tp, tt, pp, res = (float(mult @ c[sel]) for c in (cl_tp, cl_tt, cl_pp, cl_res))
                rows.append(
                    {
                        "hemisphere": hemisphere,
                        "model": name,
                        "ell_lo": int(lo),
                        "ell_hi": int(hi),
                        "ell": 0.5 * (lo + hi - 1),
                        "r": tp / np.sqrt(tt * pp) if tt > 0 and pp > 0 else np.nan,
                        "cl_target": tt / mult.sum() / w2,
                        "cl_residual": res / mult.sum() / w2,
                        "f_sky": float(window.mean()),
                    }
                )
    return pd.DataFrame(rows)


def at_nside(values: np.ndarray, nside: int) -> np.ndarray:
    """A RING map at ``nside`` (``healpy.ud_grade``: block means / copies)."""
    values = np.asarray(values, dtype=np.float64)
    return values if hp.npix2nside(values.size) == nside else hp.ud_grade(values, nside)


def target_and_mask(pre, nside: int) -> tuple[np.ndarray, np.ndarray]:
    """The filtered dust (last stack column) and the mask (bool, True = masked) at ``nside``.

    A coarser pixel is masked when at least half of its working pixels are.
    """
    target = at_nside(pre.stack[:, -1], nside)
    mask = at_nside(pre.mask != 0, nside) >= 0.5
    return target, mask


def write_sphere_r_ell(
    template_path: str | os.PathLike,
    preprocessed: Mapping[str, str],
    oracle_path: str | os.PathLike | None,
    out_paths: tuple[str | os.PathLike, str | os.PathLike],
    *,
    split: str,
    ell_cutoff: float,
    validation: Mapping[str, Any],
    nthreads: int = 1,
) -> pd.DataFrame:
    """The sphere r_ell table (:func:`dustpred.template.sphere.sphere_r_ell`) of a template.

    Models ``unet`` (``I``), ``integrated``, ``linear`` and, when ``oracle_path`` is given,
    ``oracle`` (the HI-traced dust of the synthetic sky); kept sky: unmasked and
    ``WEIGHT > 0``. ``validation``: config ``template.validation`` (``bin_width``,
    ``ell_min``, ``apod_deg``); ``nthreads``: threads of the transforms. Written as CSV and
    Parquet (``out_paths``).
    """
    maps = read_template(template_path, ["I", "I_INTEGRATED", "I_LINEAR", "WEIGHT"])
    nside = hp.npix2nside(maps["I"].size)
    pre = load_preprocessed(
        preprocessed["stack"], preprocessed["mask"], preprocessed["meta"], oracle_path
    )
    target, mask = target_and_mask(pre, nside)
    covered = maps["WEIGHT"] > 0  # elsewhere UNSEEN: outside `keep`, set to 0 for the transforms
    templates = {
        name: np.where(covered, maps[column], 0.0)
        for name, column in (("unet", "I"), ("integrated", "I_INTEGRATED"), ("linear", "I_LINEAR"))
    }
    if pre.oracle is not None:
        templates["oracle"] = at_nside(pre.oracle, nside)
    table = sphere_r_ell(
        target,
        templates,
        ~mask & covered,
        split=split,
        ell_cutoff=ell_cutoff,
        bin_width=int(validation["bin_width"]),
        ell_min=int(validation["ell_min"]),
        apod_deg=float(validation["apod_deg"]),
        nthreads=nthreads,
    )
    write_table(table, *out_paths)
    return table
