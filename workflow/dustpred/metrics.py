"""Flat-sky cross-correlation r(ell) of two cutouts, as defined in the paper (eq. 2.1).

**Contract.** Per Fourier mode k of the 2-D FFT,
``r_k = Re(T_k conj(P_k)) / (|T_k| |P_k|)``; modes are binned in ``ell = ell_F |k|`` with
bins of width ``ell_F = 2 pi / side`` starting at ``ell_F`` (bin j covers
``[j ell_F, (j + 1) ell_F)``, j = 1 .. n/2); ``r50`` is the mean of r_k over
``ell_F <= ell < 100`` and ``r150`` over ``100 <= ell < 200``. Masked pixels must already be
zero in both maps. r is invariant to a positive rescaling of the prediction.

Functions take numpy arrays of shape (..., H, W) and return numpy arrays; the ``*_torch``
twins share the mode geometry and are differentiable (used by :mod:`dustpred.losses`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

DEFAULT_SIDE_DEG = 64 * 23.4 / 60.0  # 24.96 deg: 64 pixels of 23.4 arcmin
R50_RANGE = (None, 100.0)  # lower edge is ell_F
R150_RANGE = (100.0, 200.0)
# Relative floor on |T_k||P_k| so that modes of ~zero amplitude give r_k ~ 0, not NaN.
_EPS = 1e-12


def ell_fundamental(side_deg: float = DEFAULT_SIDE_DEG) -> float:
    """Fundamental multipole ``ell_F = 2 pi / side`` of a square cutout of side ``side_deg``."""
    return 2.0 * np.pi / np.deg2rad(side_deg)


def ell_grid(shape: tuple[int, int], side_deg: float = DEFAULT_SIDE_DEG) -> np.ndarray:
    """Multipole ``ell = ell_F |k|`` of every mode of an FFT of ``shape`` (H, W), in FFT order."""
    h, w = shape
    ky = np.fft.fftfreq(h) * h
    kx = np.fft.fftfreq(w) * w
    return ell_fundamental(side_deg) * np.hypot(ky[:, None], kx[None, :])


@lru_cache(maxsize=32)
def _weights(shape: tuple[int, int], side_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Averaging weights: bins (H*W, nbins), r50/r150 (H*W, 2), and bin centres (nbins,)."""
    ell_f = ell_fundamental(side_deg)
    ell = ell_grid(shape, side_deg).ravel()
    nbins = min(shape) // 2
    edges = ell_f * np.arange(1, nbins + 2)
    idx = np.digitize(ell, edges) - 1  # -1 below ell_F, nbins above the last edge
    bins = np.zeros((ell.size, nbins))
    inside = (idx >= 0) & (idx < nbins)
    bins[np.flatnonzero(inside), idx[inside]] = 1.0
    bins /= np.maximum(bins.sum(axis=0), 1.0)
    bands = np.zeros((ell.size, 2))
    bands[:, 0] = (ell >= ell_f) & (ell < R50_RANGE[1])
    bands[:, 1] = (ell >= R150_RANGE[0]) & (ell < R150_RANGE[1])
    if not bands.sum(axis=0).all():
        raise ValueError(f"cutout of shape {shape} and side {side_deg} deg has no modes in r50/r150")
    bands /= bands.sum(axis=0)
    centres = ell_f * (np.arange(1, nbins + 1) + 0.5)
    return bins, bands, centres


def mode_correlation(target: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Per-mode correlation r_k, shape (..., H, W) in FFT order (float64)."""
    t = np.fft.fft2(np.asarray(target, dtype=np.float64))
    p = np.fft.fft2(np.asarray(prediction, dtype=np.float64))
    num = (t * p.conj()).real
    den = np.abs(t) * np.abs(p)
    scale = np.maximum(den.max(axis=(-2, -1), keepdims=True), np.finfo(float).tiny)
    return num / (den + _EPS * scale)


def r_ell(
    target: np.ndarray,
    prediction: np.ndarray,
    *,
    side_deg: float = DEFAULT_SIDE_DEG,
    form: str = "mode",
) -> tuple[np.ndarray, np.ndarray]:
    """Binned cross-correlation coefficient r(ell).

    Parameters
    ----------
    target, prediction : ndarray, shape (..., H, W)
        Maps with masked pixels already zero.
    side_deg : float
        Side of the cutout in degrees (default 24.96).
    form : {"mode", "power"}
        ``"mode"``: mean of per-mode r_k in each bin (the paper's definition);
        ``"power"``: ``C_TP / sqrt(C_TT C_PP)`` from the bin-averaged spectra.

    Returns
    -------
    ell_centres : ndarray, shape (nbins,)
    r : ndarray, shape (..., nbins)
    """
    target = np.asarray(target)
    shape = target.shape[-2:]
    bins, _, centres = _weights(tuple(shape), float(side_deg))
    lead = target.shape[:-2]
    if form == "mode":
        rk = mode_correlation(target, prediction).reshape(*lead, -1)
        return centres, rk @ bins
    if form == "power":
        t = np.fft.fft2(np.asarray(target, dtype=np.float64)).reshape(*lead, -1)
        p = np.fft.fft2(np.asarray(prediction, dtype=np.float64)).reshape(*lead, -1)
        ctp = (t * p.conj()).real @ bins
        ctt = (np.abs(t) ** 2) @ bins
        cpp = (np.abs(p) ** 2) @ bins
        return centres, ctp / np.sqrt(np.maximum(ctt * cpp, np.finfo(float).tiny))
    raise ValueError(f"form must be 'mode' or 'power', got {form!r}")


def r50_r150(
    target: np.ndarray, prediction: np.ndarray, *, side_deg: float = DEFAULT_SIDE_DEG
) -> tuple[np.ndarray, np.ndarray]:
    """Mean per-mode r over ``ell_F <= ell < 100`` (r50) and ``100 <= ell < 200`` (r150).

    Inputs of shape (..., H, W) with masked pixels zero; returns two arrays of shape (...).
    """
    target = np.asarray(target)
    _, bands, _ = _weights(tuple(target.shape[-2:]), float(side_deg))
    rk = mode_correlation(target, prediction).reshape(*target.shape[:-2], -1)
    r = rk @ bands
    return r[..., 0], r[..., 1]


def r50_r150_torch(target, prediction, *, side_deg: float = DEFAULT_SIDE_DEG):
    """Differentiable torch twin of :func:`r50_r150` for tensors of shape (B, H, W).

    Returns a tensor of shape (B, 2): r50 and r150 per cutout. Safe where a mode's
    amplitude is ~0 (the denominator has a relative floor and a smooth square root).
    """
    import torch

    _, bands, _ = _weights(tuple(target.shape[-2:]), float(side_deg))
    w = torch.as_tensor(bands, dtype=torch.float32, device=target.device)
    t = torch.fft.fft2(target.float())
    p = torch.fft.fft2(prediction.float())
    num = (t * p.conj()).real
    # |t||p| = sqrt(|t|^2 |p|^2 + tiny): finite gradient at zero amplitude.
    pow_t = t.real**2 + t.imag**2
    pow_p = p.real**2 + p.imag**2
    scale = (pow_t.amax(dim=(-2, -1), keepdim=True) * pow_p.amax(dim=(-2, -1), keepdim=True)).detach()
    den = torch.sqrt(pow_t * pow_p + 1e-12 * scale + 1e-30)
    rk = (num / den).flatten(-2)
    return rk @ w
