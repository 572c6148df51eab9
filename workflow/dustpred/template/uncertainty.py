"""The template's calibrated 1-sigma error (``I_ERR``, ``I_ERR_1DEG``) and its coverage.

With cross-fitting every pixel comes from a model that never saw it: a pixel with ``FOLD = k``
is model k's, trained on the other hemisphere, so its residual ``target - I`` is out of
sample. The error of the pixels with ``FOLD = k`` is calibrated on the residuals of the
other fold's pixels (``FOLD = 1 - k``, :func:`calibration_pixels`): neither the pixel's own
target nor any target of the sky its model provides enters it, and coverage is judged on
``FOLD = k`` (:func:`evaluation_pixels`), a set disjoint from the calibration set.

The other fold's residuals are model 1 - k's, on the other hemisphere: the error carries
over to the extent that the two models and the two hemispheres err alike at the same ``I``.
Neither a model-quality ratio measured on held-out validation regions nor features known
everywhere (latitude, tile spread, the distance from the baselines) predicted the difference
on the default run (README, "Full-sky template"); the coverage table measures it.

**Error model** (:func:`fit_error_model`): the residual's size as a function of the
prediction ``I``, which is known everywhere. The calibration pixels are cut into ``bins``
bins of equal count in ``I``; in each, the 68.27 % quantile of ``|target - I|`` (the 1-sigma
level of a Gaussian; a quantile rather than a standard deviation, so that a few large
residuals do not set it); the error of a pixel is that quantile interpolated linearly in
``I`` between the bins' median ``I`` (constant beyond the first and last bin). It includes
everything in the other hemisphere's residuals: the model's error, the amplitude fit's
error, and the part of the dust the HI does not trace; the coverage table checks it on each
hemisphere.

**Smoothed to 1 degree** (``I_ERR_1DEG``): the same, with residual and prediction smoothed
by a Gaussian of FWHM ``fwhm_deg`` *within* each fold's usable pixels,
``smooth(x w) / smooth(w)`` with ``w`` = the fold's unmasked covered pixels, kept where
``smooth(w) >= VALID_WEIGHT`` (:func:`smooth_within`). The smoothing so mixes no pixel of the
other fold or of the mask into a pixel's value, and the error is defined one beam inside the
fold's edges.

**Coverage** (:func:`coverage_table`): the fraction of evaluation pixels with
``|target - I| <= z(p) * error``, ``z(p) = sqrt(2) erfinv(p)`` (a unit Gaussian lies within
``z(p)`` with probability ``p``), at nominal levels ``p``; for a calibrated Gaussian error it
is ``p``. Pixels of a HEALPix map are correlated (the
template is band-limited), so a coverage's scatter is larger than the binomial one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import healpy as hp
import numpy as np
import pandas as pd
from astropy.io import fits

from dustpred.errors import InputError
from dustpred.evaluation.tables import write_table
from dustpred.sky.stack import load_preprocessed
from dustpred.template.fitsfile import read_template
from dustpred.template.sphere import HEMISPHERES, smooth, target_and_mask
from dustpred.template.tiling import region_map

#: Nominal coverage of 1 sigma: P(|x| <= 1) for a Gaussian.
ONE_SIGMA = math.erf(1.0 / math.sqrt(2.0))
#: Nominal levels of the coverage table and figure.
LEVELS = (0.2, 0.4, ONE_SIGMA, 0.8, 0.9, 0.95, 0.99)
#: Columns of the coverage table.
COVERAGE_COLUMNS = [
    "scale",
    "fwhm_deg",
    "hemisphere",
    "region",
    "level",
    "coverage",
    "n_pixels",
]
#: Least smoothed weight of a pixel's own fold for its smoothed value to count.
VALID_WEIGHT = 0.9


@dataclass(frozen=True)
class ErrorSettings:
    """Config section ``template.errors`` (see config/README.md): ``ErrorSettings(**section)``."""

    bins: int = 20
    fwhm_deg: float = 1.0


@dataclass(frozen=True)
class ErrorModel:
    """The 1-sigma residual size at ``centres`` (median prediction of each bin)."""

    centres: np.ndarray
    sigma: np.ndarray

    def __call__(self, prediction: np.ndarray) -> np.ndarray:
        """The error at each ``prediction`` (any shape), float64."""
        return np.interp(np.asarray(prediction, dtype=np.float64), self.centres, self.sigma)


def fit_error_model(prediction: np.ndarray, residual: np.ndarray, bins: int) -> ErrorModel:
    """The 68.27 % quantile of ``|residual|`` in ``bins`` equal-count bins of ``prediction``.

    Parameters
    ----------
    prediction, residual
        ``(n,)`` the calibration pixels' prediction and ``target - prediction`` (target unit).
    bins
        Number of bins (fewer when there are fewer than 10 pixels per bin).
    """
    x = np.asarray(prediction, dtype=np.float64)
    y = np.abs(np.asarray(residual, dtype=np.float64))
    if x.shape != y.shape or x.ndim != 1:
        raise InputError(
            f"fit_error_model: prediction {x.shape}, residual {y.shape}; expected one (n,) shape"
        )
    bins = min(int(bins), x.size // 10)
    if bins < 1:
        raise InputError(
            f"fit_error_model: {x.size} calibration pixels; expected at least 10 (the other "
            "fold's unmasked, covered pixels)"
        )
    order = np.argsort(x, kind="stable")
    groups = np.array_split(order, bins)
    centres = np.array([np.median(x[g]) for g in groups])
    sigma = np.array([np.quantile(y[g], ONE_SIGMA) for g in groups])
    return ErrorModel(centres, sigma)


def calibration_pixels(fold: np.ndarray, usable: np.ndarray, k: int) -> np.ndarray:
    """``(npix,)`` bool: the pixels whose residuals calibrate the error of fold ``k``'s
    pixels, the other fold's usable ones."""
    return np.asarray(usable, dtype=bool) & (np.asarray(fold) == 1 - k)


def evaluation_pixels(fold: np.ndarray, usable: np.ndarray, k: int) -> np.ndarray:
    """``(npix,)`` bool: fold ``k``'s usable pixels, where its error is judged."""
    return np.asarray(usable, dtype=bool) & (np.asarray(fold) == k)


def smooth_within(
    values: np.ndarray, within: np.ndarray, fwhm_deg: float, *, nthreads: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """``values`` smoothed using only the pixels ``within`` (module docstring).

    ``values``: one ``(npix,)`` map or a ``(m, npix)`` stack (the weight is smoothed once for
    all). Returns the smoothed map(s), of the same shape, and the ``(npix,)`` bool pixels where
    they are valid (``within`` and a smoothed weight of at least :data:`VALID_WEIGHT`).
    """
    within = np.asarray(within, dtype=bool)
    stack = np.atleast_2d(np.asarray(values, dtype=np.float64))
    sw = smooth(within.astype(np.float64), fwhm_deg, nthreads=nthreads)
    valid = within & (sw >= VALID_WEIGHT)
    out = np.zeros_like(stack)
    for row, x in zip(out, stack, strict=True):
        row[valid] = smooth(np.where(within, x, 0.0), fwhm_deg, nthreads=nthreads)[valid]
        row[valid] /= sw[valid]
    return out.reshape(np.shape(values)), valid


def fold_views(
    prediction: np.ndarray,
    target: np.ndarray,
    fold: np.ndarray,
    usable: np.ndarray,
    fwhm_deg: float | None,
    *,
    nthreads: int = 1,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per fold k: ``(prediction, residual, valid)`` at the map's resolution
    (``fwhm_deg=None``; valid = :func:`evaluation_pixels`) or smoothed within fold k's usable
    pixels (:func:`smooth_within`)."""
    prediction = np.asarray(prediction, dtype=np.float64)
    residual = np.asarray(target, dtype=np.float64) - prediction
    views = []
    for k in (0, 1):
        own = evaluation_pixels(fold, usable, k)
        if fwhm_deg is None:
            views.append((prediction, residual, own))
            continue
        (p, r), valid = smooth_within(
            np.stack([prediction, residual]), own, fwhm_deg, nthreads=nthreads
        )
        views.append((p, r, valid))
    return views


def cross_calibrated_error(
    prediction: np.ndarray,
    target: np.ndarray,
    fold: np.ndarray,
    usable: np.ndarray,
    *,
    bins: int,
    fwhm_deg: float | None = None,
    nthreads: int = 1,
) -> np.ndarray:
    """The 1-sigma error of each pixel, calibrated on the other fold's residuals.

    Parameters
    ----------
    prediction, target
        ``(npix,)`` the template ``I`` and the target dust (target unit).
    fold
        ``(npix,)`` the template's ``FOLD`` (0 or 1; cross-fitting).
    usable
        ``(npix,)`` bool: unmasked and covered (``WEIGHT > 0``).
    bins
        :func:`fit_error_model` bins.
    fwhm_deg
        None: the error of a pixel of ``I``, on every pixel (masked ones extrapolate the
        model, which is calibrated on unmasked sky only); a FWHM: the error of ``I`` smoothed
        within its fold, where :func:`smooth_within` is valid.

    Returns
    -------
    numpy.ndarray
        ``(npix,)`` float64, NaN where undefined.
    """
    views = fold_views(prediction, target, fold, usable, fwhm_deg, nthreads=nthreads)
    error = np.full(np.shape(prediction), np.nan)
    for k in (0, 1):
        p_cal, r_cal, valid_cal = views[1 - k]
        cal = calibration_pixels(fold, usable, k) & valid_cal  # smoothing: one beam inside
        model = fit_error_model(p_cal[cal], r_cal[cal], bins)
        p_own, _, valid_own = views[k]
        apply = (np.asarray(fold) == k) if fwhm_deg is None else valid_own
        error[apply] = model(p_own[apply])
    return error


def coverage_table(
    prediction: np.ndarray,
    target: np.ndarray,
    errors: Mapping[str, np.ndarray],
    fold: np.ndarray,
    usable: np.ndarray,
    *,
    split: str,
    fwhm_deg: float,
    region_nside: int = 2,
    min_region_pixels: int = 200,
    levels: Sequence[float] = LEVELS,
    nthreads: int = 1,
) -> pd.DataFrame:
    """Coverage of the errors on the evaluation pixels, per hemisphere and region.

    Parameters
    ----------
    prediction, target, fold, usable
        As :func:`cross_calibrated_error`.
    errors
        ``{'pixel': I_ERR, 'smoothed': I_ERR_1DEG}`` (NaN where undefined).
    split
        The hemispheres (:data:`dustpred.template.sphere.HEMISPHERES`).
    fwhm_deg
        The smoothing of the ``'smoothed'`` error (the template's ``ERRFWHM``).
    region_nside, min_region_pixels
        Regions: the pixels of a HEALPix grid at ``region_nside``; those with fewer
        evaluation pixels than ``min_region_pixels`` are left out.

    Returns
    -------
    pandas.DataFrame
        One row per (scale, hemisphere, region, level): ``scale`` ('pixel' or 'smoothed'),
        ``fwhm_deg`` (0 for 'pixel'), ``hemisphere``, ``region`` (the Nside-``region_nside``
        RING pixel, -1 for the whole hemisphere), ``level``, ``coverage``, ``n_pixels``.
    """
    npix = np.size(prediction)
    nside = hp.npix2nside(npix)
    theta, phi = hp.pix2ang(nside, np.arange(npix))
    region = hp.ang2pix(region_nside, theta, phi)
    rows = []
    for scale, fwhm in (("pixel", None), ("smoothed", fwhm_deg)):
        views = fold_views(prediction, target, fold, usable, fwhm, nthreads=nthreads)
        residual = np.zeros(npix)
        judged = np.zeros(npix, bool)
        for _, r, valid in views:
            residual[valid] = r[valid]
            judged |= valid
        error = np.asarray(errors[scale], dtype=np.float64)
        judged &= np.isfinite(error)
        ratio = np.abs(residual) / np.where(judged, error, 1.0)
        for subset, hemisphere in zip(("train", "test"), HEMISPHERES[split], strict=True):
            inside = judged & region_map(nside, split, subset)
            scopes = [(-1, inside)] + [
                (int(r), inside & (region == r)) for r in np.unique(region[inside])
            ]
            for r, sel in scopes:
                n = int(sel.sum())
                if n == 0 or (r >= 0 and n < min_region_pixels):
                    continue
                for level in levels:
                    z = NormalDist().inv_cdf(0.5 + 0.5 * level)
                    rows.append(
                        {
                            "scale": scale,
                            "fwhm_deg": 0.0 if fwhm is None else float(fwhm),
                            "hemisphere": hemisphere,
                            "region": r,
                            "level": float(level),
                            "coverage": float(np.mean(ratio[sel] <= z)),
                            "n_pixels": n,
                        }
                    )
    return pd.DataFrame(rows, columns=COVERAGE_COLUMNS)


def write_coverage(
    template_path: str | os.PathLike,
    preprocessed: Mapping[str, str],
    out_paths: tuple[str | os.PathLike, str | os.PathLike],
    *,
    split: str,
    validation: Mapping[str, Any],
    nthreads: int = 1,
) -> pd.DataFrame:
    """The coverage table (:func:`coverage_table`) of a template's ``I_ERR`` and
    ``I_ERR_1DEG`` against the target of the preprocess stage; written as CSV and Parquet.

    ``validation``: config ``template.validation`` (``coverage_region_nside``,
    ``coverage_min_pixels``). A template without a calibrated error (``ERRCAL = 'none'``:
    no cross-fitting) gives a table without rows.
    """
    columns = ["I", "I_ERR", "I_ERR_1DEG", "WEIGHT", "FOLD"]
    maps = read_template(template_path, columns)
    header = fits.getheader(template_path, 1)
    nside = hp.npix2nside(maps["I"].size)
    pre = load_preprocessed(preprocessed["stack"], preprocessed["mask"], preprocessed["meta"])
    target, mask = target_and_mask(pre, nside)
    if header.get("ERRCAL", "none") == "none":
        table = pd.DataFrame(columns=COVERAGE_COLUMNS)
    else:
        errors = {
            scale: np.where(maps[column] == hp.UNSEEN, np.nan, maps[column])
            for scale, column in (("pixel", "I_ERR"), ("smoothed", "I_ERR_1DEG"))
        }
        table = coverage_table(
            maps["I"],
            target,
            errors,
            maps["FOLD"],
            ~mask & (maps["WEIGHT"] > 0),
            split=split,
            fwhm_deg=float(header["ERRFWHM"]),
            region_nside=int(validation["coverage_region_nside"]),
            min_region_pixels=int(validation["coverage_min_pixels"]),
            nthreads=nthreads,
        )
    write_table(table, *out_paths)
    return table
