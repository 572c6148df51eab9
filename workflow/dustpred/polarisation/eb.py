"""Per-cutout E/B cross-correlation r_ell^EE and r_ell^BB of a Q/U prediction with its target.

The intensity metric (:mod:`dustpred.metrics`, the paper's eq. 2.1) carried to spin 2: both
cutouts' Q, U (cutout frame) are multiplied by one window, decomposed into flat-sky E and B
(:func:`dustpred.polarisation.spin2.flat_eb`); the inverse FFTs of E and B, zeroed at masked
pixels, are the cutout's **E and B maps** (:func:`eb_maps`), and r^EE, r^BB are the paper's
r (:mod:`dustpred.metrics`: per Fourier mode ``r_k = Re(T_k conj(P_k)) / (|T_k| |P_k|)``,
averaged in the same ell bins and bands, r50: ell_F <= ell < 100, r150: 100 <= ell < 200) of
the E maps and of the B maps. Without a mask this is the correlation of the E and B modes
themselves; with one, the masked pixels are zeroed in both maps, as for intensity.

**The window** is the product of the mask's apodisation
(:func:`dustpred.metrics.apodisation_window`: 0 on masked pixels, a cosine taper over
``taper_pix`` pixels from the mask) and a cosine taper over ``border_pix`` pixels at the
cutout's border: an FFT's periodic edges, like a sharp mask edge, mix E and B. Before the
window is applied, a quadratic surface (window-weighted least squares) is removed from each map
(:func:`detrend`): on a red spectrum (dust's C_ell ~ ell^-2.4) most of a cutout's power sits in
modes larger than the cutout, which the window would otherwise spread into the lowest bins as
E/B mixtures.

**Leakage** (tests/test_eb_metrics.py, pure-E ``healpy.synfast`` skies with C_ell^EE ~
ell^-2.5, 1 deg beam, 20 cutouts): the B power left in the r150 band is 3 % of the E power
(at most 4.2 % per cutout), and in the r50 band 19 % (at most 30 %): modes of one to six
cycles per 25 deg cutout cannot be split cleanly into E and B, so r50^EE and r50^BB compare
E- and B-dominated mixtures, the same for target and prediction. r150 is the band to read as
E and B.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from dustpred.metrics import (
    DEFAULT_SIDE_DEG,
    TAPER_PIX,
    apodisation_window,
    r_ell_r50_r150_models,
)
from dustpred.polarisation.spin2 import flat_eb

BORDER_PIX = 12
MODES = ("EE", "BB")


def _surface_terms(npix: int) -> np.ndarray:
    """``(npix * npix, 6)`` terms ``1, x, y, x^2, y^2, xy`` of a quadratic surface."""
    y, x = (np.mgrid[:npix, :npix] / (npix - 1.0) - 0.5).reshape(2, -1)
    return np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=-1)


def detrend(maps: np.ndarray, window: np.ndarray) -> np.ndarray:
    """``window (X - S)`` with ``S`` the quadratic surface fitted to each map ``(..., H, W)``
    by least squares weighted by ``window`` (broadcastable); float64. A map whose window
    has too few pixels for the fit keeps its values."""
    x = np.asarray(maps, np.float64)
    w = np.broadcast_to(np.asarray(window, np.float64), x.shape)
    lead, npix = x.shape[:-2], x.shape[-1]
    terms = _surface_terms(npix)
    xf, wf = x.reshape(-1, npix * npix), w.reshape(-1, npix * npix)
    normal = np.einsum("np,pa,pb->nab", wf, terms, terms)
    rhs = np.einsum("np,pa,np->na", wf, terms, xf)
    solvable = np.linalg.matrix_rank(normal) == terms.shape[1]
    coef = np.zeros_like(rhs)
    if solvable.any():
        coef[solvable] = np.linalg.solve(normal[solvable], rhs[solvable][..., None])[..., 0]
    surface = coef @ terms.T
    return (wf * (xf - surface)).reshape(*lead, npix, npix)


def border_taper(npix: int, border_pix: float = BORDER_PIX) -> np.ndarray:
    """``(npix, npix)`` window: 1 inside, a cosine rise over ``border_pix`` pixels at each
    edge (pixel centres), the outer product of two such profiles."""
    i = np.arange(npix) + 0.5
    edge = np.minimum(i, npix - i) / float(border_pix)
    profile = np.where(edge < 1.0, 0.5 * (1.0 - np.cos(np.pi * np.clip(edge, 0, 1))), 1.0)
    return np.outer(profile, profile)


def eb_window(
    mask: np.ndarray, *, taper_pix: float = TAPER_PIX, border_pix: float = BORDER_PIX
) -> np.ndarray:
    """The E/B window of cutouts with ``mask`` ``(..., H, W)`` (True = masked), float64."""
    mask = np.asarray(mask, bool)
    return apodisation_window(mask, taper_pix) * border_taper(mask.shape[-1], border_pix)


def eb_modes(q: np.ndarray, u: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E and B Fourier modes ``(..., H, W)`` of the detrended, windowed cutout-frame ``q``,
    ``u`` (:func:`detrend`). The Nyquist row and column (even sizes) are set to 0: their
    wavevector is its own mirror image, so their E/B split has no sign to follow under a
    flip or a quarter turn (and they lie at ell = 0.5 npix ell_F, far above r150)."""
    e, b = flat_eb(detrend(q, window), detrend(u, window))
    for modes in (e, b):
        for axis, n in ((-2, modes.shape[-2]), (-1, modes.shape[-1])):
            if n % 2 == 0:
                np.moveaxis(modes, axis, -1)[..., n // 2] = 0.0
    return e, b


def eb_maps(
    q: np.ndarray,
    u: np.ndarray,
    mask: np.ndarray,
    *,
    taper_pix: float = TAPER_PIX,
    border_pix: float = BORDER_PIX,
) -> tuple[np.ndarray, np.ndarray]:
    """The E and B maps ``(..., H, W)`` float64 of cutout-frame ``q``, ``u``: the inverse
    FFTs of :func:`eb_modes` with the :func:`eb_window` of ``mask``, zero at masked pixels.

    Scalar maps (E) and pseudo-scalar maps (B: a mirror image changes its sign) that the
    intensity machinery (the paper's r, its loss, the U-Net) takes as they are.
    """
    window = eb_window(mask, taper_pix=taper_pix, border_pix=border_pix)
    keep = ~np.asarray(mask, bool)
    return tuple(np.fft.ifft2(m).real * keep for m in eb_modes(q, u, window))


def r_eb_models(
    target: tuple[np.ndarray, np.ndarray],
    predictions: Mapping[str, tuple[np.ndarray, np.ndarray]],
    mask: np.ndarray,
    *,
    side_deg: float = DEFAULT_SIDE_DEG,
) -> tuple[np.ndarray, dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]]:
    """r_ell^EE and r_ell^BB of several predictions against one target, from E/B maps.

    Parameters
    ----------
    target
        ``(E, B)`` maps of the target (:func:`eb_maps`), each ``(N, H, W)``.
    predictions
        Name -> ``(E, B)`` maps, each ``(N, H, W)`` (a U-Net predicts them directly; the
        baselines' come from their Q/U through :func:`eb_maps`).
    mask
        ``(N, H, W)``, True = masked (zeroed in every map, as the paper's r does).

    Returns
    -------
    ell_centres : numpy.ndarray
        ``(nbins,)``.
    by_name : dict
        Name -> ``{"EE": (r (N, nbins), r50 (N,), r150 (N,)), "BB": (...)}``: the paper's r
        (:func:`dustpred.metrics.r_ell_r50_r150_models`) of the E maps and of the B maps.
    """
    out: dict[str, dict] = {name: {} for name in predictions}
    centres = np.zeros(0)
    for k, mode in enumerate(MODES):
        maps = {name: p[k] for name, p in predictions.items()}
        centres, by_name = r_ell_r50_r150_models(target[k], maps, side_deg=side_deg, mask=mask)
        for name, values in by_name.items():
            out[name][mode] = values
    return centres, out
