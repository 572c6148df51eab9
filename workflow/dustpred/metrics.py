"""Flat-sky cross-correlation r(ell) of two cutouts, as defined in the paper (eq. 2.1).

**Contract.** Per Fourier mode k of the 2-D FFT,
``r_k = Re(T_k conj(P_k)) / (|T_k| |P_k|)``; modes are binned in ``ell = ell_F |k|`` with
bins of width ``ell_F = 2 pi / side`` starting at ``ell_F`` (bin j covers
``[j ell_F, (j + 1) ell_F)``, j = 1 .. n/2); ``r50`` is the mean of r_k over
``ell_F <= ell < 100`` and ``r150`` over ``100 <= ell < 200``. Masked pixels must already be
zero in both maps (or the mask be passed, which zeroes them). r is invariant to a positive
rescaling of the prediction.

Functions take numpy arrays of shape (..., H, W) and return numpy arrays; the ``*_torch``
functions are differentiable twins sharing the mode geometry and amplitude floor
(:func:`mode_correlation_torch` is what :mod:`dustpred.training.losses` uses).

A mode of (numerically) zero amplitude has no phase; its r_k is defined as 0. To get there
without NaN, each map's mode amplitude is floored at ``sqrt(EPS_POWER)`` times that map's
largest amplitude (``|T_k| -> sqrt(|T_k|^2 + EPS_POWER max|T|^2)``), identically in numpy and
torch. The floor is 1e-6 of the largest amplitude, far below any mode of a real map.

**Offset-robust form (not the paper's).** Zeroing masked pixels multiplies each map by the
mask, so a map's mean (its offset) leaks into every mode through the mask's Fourier
transform; two maps sharing a mask then correlate even when their fluctuations are
independent. With ``robust=True`` (and the mask passed) each map is first replaced by
``a (X - <X>_a)``, where ``a`` is :func:`apodisation_window` (0 on masked pixels, a cosine
taper rising to 1 over ``taper_pix`` pixels from the mask edge, 1 elsewhere) and ``<X>_a``
the a-weighted mean of X over the unmasked pixels. The weighted map then has no offset
at all (its k = 0 mode is zero), so r is exactly invariant to adding a constant to either
map, and the taper keeps the mask's sharp edge from scattering power between modes. The
cutout's own border is not tapered: without a mask the robust form differs from the
paper's only by the removed mean (the k = 0 mode, outside every bin), i.e. not beyond the
amplitude floor. The paper's form (``robust=False``) stays the default and is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache

import numpy as np

from dustpred.errors import InputError

DEFAULT_SIDE_DEG = 64 * 23.4 / 60.0  # 24.96 deg: 64 pixels of 23.4 arcmin
R50_RANGE = (None, 100.0)  # lower edge is ell_F
R150_RANGE = (100.0, 200.0)
# Relative floor on each map's mode power (see module docstring).
EPS_POWER = 1e-12
# Absolute floor so that an all-zero map gives r_k = 0 (not 0/0) and finite gradients.
_TINY = 1e-30
# Width of the robust form's cosine taper at the mask edge, in pixels (4 x 23.4' = 1.56 deg).
TAPER_PIX = 4.0


def ell_fundamental(side_deg: float = DEFAULT_SIDE_DEG) -> float:
    """Fundamental multipole ``ell_F = 2 pi / side`` of a square cutout of side ``side_deg``.

    ``side_deg`` is in degrees; 24.96 deg gives ell_F = 360 / 24.96 = 14.42.
    """
    return 2.0 * np.pi / np.deg2rad(side_deg)


def ell_grid(shape: tuple[int, int], side_deg: float = DEFAULT_SIDE_DEG) -> np.ndarray:
    """Multipole ``ell = ell_F |k|`` of every mode of an FFT of ``shape`` (H, W), in FFT order.

    Returns an array of shape (H, W); k are integer wavenumbers (cycles per cutout side).
    """
    h, w = shape
    ky = np.fft.fftfreq(h) * h
    kx = np.fft.fftfreq(w) * w
    return ell_fundamental(side_deg) * np.hypot(ky[:, None], kx[None, :])


def bin_edges(npix: int, side_deg: float = DEFAULT_SIDE_DEG) -> np.ndarray:
    """Edges ``j ell_F`` (j = 1 .. npix/2 + 1) of the r(ell) bins, shape (npix/2 + 1,)."""
    return ell_fundamental(side_deg) * np.arange(1, npix // 2 + 2)


def rfft_multiplicity(npix: int) -> np.ndarray:
    """(npix, npix // 2 + 1) weight of each mode of a real FFT's half-plane: 2 where the mode
    also stands for its mirror -k, 1 in column 0 and (for even npix) column npix / 2, which
    hold both k and -k themselves."""
    mult = np.full((npix, npix // 2 + 1), 2.0)
    mult[:, 0] = 1.0
    if npix % 2 == 0:
        mult[:, -1] = 1.0
    return mult


def _check_shapes(target_shape: tuple[int, ...], prediction_shape: tuple[int, ...]) -> None:
    if tuple(target_shape) != tuple(prediction_shape):
        raise InputError(
            f"r(ell): target has shape {tuple(target_shape)} but prediction has shape "
            f"{tuple(prediction_shape)}; expected equal shapes (..., H, W)"
        )
    if len(target_shape) < 2 or target_shape[-1] != target_shape[-2]:
        raise InputError(
            f"r(ell): maps of shape {tuple(target_shape)}; expected square cutouts (..., n, n)"
        )


@lru_cache(maxsize=32)
def _weights(shape: tuple[int, int], side_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Averaging weights: bins (H*W, nbins), r50/r150 (H*W, 2), and bin centres (nbins,).

    Read-only (they are cached and shared).
    """
    ell_f = ell_fundamental(side_deg)
    ell = ell_grid(shape, side_deg).ravel()
    nbins = min(shape) // 2
    edges = bin_edges(min(shape), side_deg)
    idx = np.digitize(ell, edges) - 1  # -1 below ell_F, nbins above the last edge
    bins = np.zeros((ell.size, nbins))
    inside = (idx >= 0) & (idx < nbins)
    bins[np.flatnonzero(inside), idx[inside]] = 1.0
    bins /= np.maximum(bins.sum(axis=0), 1.0)
    bands = np.zeros((ell.size, 2))
    bands[:, 0] = (ell >= ell_f) & (ell < R50_RANGE[1])
    bands[:, 1] = (ell >= R150_RANGE[0]) & (ell < R150_RANGE[1])
    if not bands.sum(axis=0).all():
        raise InputError(
            f"r(ell): a cutout of shape {shape} and side {side_deg} deg has no Fourier modes in "
            f"the r50 or r150 range; expected ell_F < 100 and modes up to ell = 200"
        )
    bands /= bands.sum(axis=0)
    centres = ell_f * (np.arange(1, nbins + 1) + 0.5)
    for array in (bins, bands, centres):
        array.setflags(write=False)
    return bins, bands, centres


def modes_per_bin(npix: int, side_deg: float = DEFAULT_SIDE_DEG) -> np.ndarray:
    """Number of FFT modes in each r(ell) bin of an ``npix`` x ``npix`` cutout, shape (npix/2,).

    Modes k and -k of a real map are counted separately (they carry the same r_k), so the
    number of independent modes is about half of this.
    """
    bins, _, _ = _weights((npix, npix), float(side_deg))
    return np.count_nonzero(bins, axis=0)


def apodisation_window(mask: np.ndarray, taper_pix: float = TAPER_PIX) -> np.ndarray:
    """Window of the offset-robust r: 0 on masked pixels, a cosine taper near the mask, else 1.

    Parameters
    ----------
    mask : ndarray of bool, shape (..., H, W)
        True (or 1) = masked.
    taper_pix : float
        Taper width in pixels (default :data:`TAPER_PIX`); 0 gives the plain unmasked
        indicator.

    Returns
    -------
    window : ndarray of float64, shape (..., H, W)
        ``(1 - cos(pi min(d, taper_pix) / taper_pix)) / 2``, with d the Euclidean distance
        in pixels from a pixel's centre to the nearest masked pixel's centre (0 on masked
        pixels, so a pixel next to the mask has d = 1). Pixels beyond the cutout's border are
        not masked: the border itself is not tapered.
    """
    mask = np.asarray(mask).astype(bool)
    if not np.isfinite(taper_pix) or taper_pix < 0:
        raise InputError(f"r(ell): taper_pix = {taper_pix!r}; expected a finite number >= 0")
    if taper_pix == 0:
        return (~mask).astype(np.float64)
    distance = _distance_to_mask(mask, float(taper_pix))
    return 0.5 * (1.0 - np.cos(np.pi * np.minimum(distance, taper_pix) / taper_pix))


def _distance_to_mask(mask: np.ndarray, reach: float) -> np.ndarray:
    """Distance (pixels) of every pixel to the nearest masked one, capped at ``reach``.

    Brute force over the offsets shorter than ``reach`` (about pi reach^2 array shifts over
    the whole batch), which is exact and fast for tapers of a few pixels.
    """
    r = int(np.ceil(reach))
    h, w = mask.shape[-2:]
    padded = np.pad(mask, [(0, 0)] * (mask.ndim - 2) + [(r, r), (r, r)])
    distance = np.where(mask, 0.0, reach)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            d = float(np.hypot(dy, dx))
            if 0 < d < reach:
                shifted = padded[..., r + dy : r + dy + h, r + dx : r + dx + w]
                np.minimum(distance, d, out=distance, where=shifted)
    return distance


def apodise(maps: np.ndarray, window: np.ndarray) -> np.ndarray:
    """``window (X - <X>_window)``: a map stripped of its offset and tapered at the mask.

    ``maps`` (..., H, W) and ``window`` (broadcastable, from :func:`apodisation_window`);
    ``<X>_window`` is the window-weighted mean of each map over its last two axes, so the
    result sums to zero. A map whose window is all zero (fully masked) becomes zero.
    Returns float64 of the broadcast shape.
    """
    x = np.asarray(maps, dtype=np.float64)
    window = np.broadcast_to(np.asarray(window, dtype=np.float64), x.shape)
    total = window.sum(axis=(-2, -1), keepdims=True)
    weighted = (window * x).sum(axis=(-2, -1), keepdims=True)
    mean = np.divide(weighted, total, out=np.zeros_like(total), where=total > 0)
    return window * (x - mean)


def _form(
    mask: np.ndarray | None, shape: tuple[int, ...], robust: bool, taper_pix: float
) -> Callable[[np.ndarray], np.ndarray]:
    """What the chosen form does to a map of ``shape`` before the FFT.

    Paper's form: nothing (masked pixels zeroed if ``mask`` is given, which leaves maps that
    already have zeros there value for value the same); robust form: :func:`apodise` with
    the window of ``mask``, computed once here for every map it is applied to.
    """
    if mask is not None:
        mask = np.asarray(mask).astype(bool)
        try:
            mask = np.broadcast_to(mask, shape)
        except ValueError:
            raise InputError(
                f"r(ell): mask has shape {mask.shape} but the maps have shape {shape}; "
                f"expected a mask broadcastable to the maps"
            ) from None
    if not robust:
        if mask is None:
            return lambda x: x
        return lambda x: np.where(mask, 0.0, x)
    window = np.ones(shape[-2:]) if mask is None else apodisation_window(mask, taper_pix)
    return lambda x: apodise(x, window)


def _prepared(
    target: np.ndarray,
    prediction: np.ndarray,
    mask: np.ndarray | None,
    robust: bool,
    taper_pix: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The two maps as the chosen form (:func:`_form`) transforms them before the FFT."""
    target = np.asarray(target)
    prediction = np.asarray(prediction)
    _check_shapes(target.shape, prediction.shape)
    form = _form(mask, target.shape, robust, taper_pix)
    return form(target), form(prediction)


def _floored_amplitude(power: np.ndarray) -> np.ndarray:
    """sqrt(|X_k|^2 + EPS_POWER max_k |X_k|^2 + tiny), per map over the last two axes."""
    floor = EPS_POWER * power.max(axis=(-2, -1), keepdims=True) + _TINY
    return np.sqrt(power + floor)


def _spectrum(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FFT (..., H, W) of maps and its floored amplitude (:func:`_floored_amplitude`)."""
    f = np.fft.fft2(np.asarray(maps, dtype=np.float64))
    return f, _floored_amplitude(np.abs(f) ** 2)


def mode_correlation(target: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Per-mode correlation r_k of two maps of shape (..., H, W); float64, FFT order."""
    (t, amp_t), (p, amp_p) = _spectrum(target), _spectrum(prediction)
    return (t * p.conj()).real / (amp_t * amp_p)


def r_ell(
    target: np.ndarray,
    prediction: np.ndarray,
    *,
    side_deg: float = DEFAULT_SIDE_DEG,
    form: str = "mode",
    mask: np.ndarray | None = None,
    robust: bool = False,
    taper_pix: float = TAPER_PIX,
) -> tuple[np.ndarray, np.ndarray]:
    """Binned cross-correlation coefficient r(ell).

    Parameters
    ----------
    target, prediction : ndarray, shape (..., n, n)
        Maps with masked pixels already zero, or ``mask`` given (any units; r is
        dimensionless).
    side_deg : float
        Side of the cutout in degrees (default 24.96).
    form : {"mode", "power"}
        ``"mode"``: mean of per-mode r_k in each bin (the paper's definition);
        ``"power"``: ``C_TP / sqrt(C_TT C_PP)`` from the bin-averaged spectra.
    mask : ndarray of bool, shape broadcastable to (..., n, n), optional
        True = masked. The paper's form zeroes these pixels (a no-op on maps already zero
        there); the robust form needs it for its window.
    robust : bool
        False (default): the paper's definition. True: the offset-robust form of the
        module docstring (mean removed, mask edge tapered over ``taper_pix`` pixels).
    taper_pix : float
        Width of the robust form's taper in pixels (default :data:`TAPER_PIX`).

    Returns
    -------
    ell_centres : ndarray, shape (n/2,)
        ``(j + 1/2) ell_F`` for bins j = 1 .. n/2.
    r : ndarray, shape (..., n/2)
    """
    target, prediction = _prepared(target, prediction, mask, robust, taper_pix)
    bins, _, centres = _weights(tuple(target.shape[-2:]), float(side_deg))
    lead = target.shape[:-2]
    if form == "mode":
        rk = mode_correlation(target, prediction).reshape(*lead, -1)
        return centres.copy(), rk @ bins
    if form == "power":
        t = np.fft.fft2(np.asarray(target, dtype=np.float64)).reshape(*lead, -1)
        p = np.fft.fft2(np.asarray(prediction, dtype=np.float64)).reshape(*lead, -1)
        ctp = (t * p.conj()).real @ bins
        ctt = (np.abs(t) ** 2) @ bins
        cpp = (np.abs(p) ** 2) @ bins
        return centres.copy(), ctp / np.sqrt(np.maximum(ctt * cpp, np.finfo(float).tiny))
    raise ValueError(f"form must be 'mode' or 'power', got {form!r}")


def r50_r150(
    target: np.ndarray,
    prediction: np.ndarray,
    *,
    side_deg: float = DEFAULT_SIDE_DEG,
    mask: np.ndarray | None = None,
    robust: bool = False,
    taper_pix: float = TAPER_PIX,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean per-mode r over ``ell_F <= ell < 100`` (r50) and ``100 <= ell < 200`` (r150).

    Inputs of shape (..., n, n) with masked pixels zero (or ``mask`` given); ``mask``,
    ``robust`` and ``taper_pix`` as in :func:`r_ell`. Returns two float64 arrays of shape
    (...).
    """
    _, _, r50, r150 = r_ell_r50_r150(
        target, prediction, side_deg=side_deg, mask=mask, robust=robust, taper_pix=taper_pix
    )
    return r50, r150


def r_ell_r50_r150(
    target: np.ndarray,
    prediction: np.ndarray,
    *,
    side_deg: float = DEFAULT_SIDE_DEG,
    mask: np.ndarray | None = None,
    robust: bool = False,
    taper_pix: float = TAPER_PIX,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`r_ell` (mode form) and :func:`r50_r150` from one per-mode correlation.

    Returns ``(ell_centres (nbins,), r (..., nbins), r50 (...), r150 (...))``; equal to the
    two functions' results, at half the FFTs. ``mask``, ``robust`` and ``taper_pix`` as in
    :func:`r_ell` (``robust=True`` with the mask gives the offset-robust form).
    """
    centres, out = r_ell_r50_r150_models(
        target,
        {"": prediction},
        side_deg=side_deg,
        mask=mask,
        robust=robust,
        taper_pix=taper_pix,
    )
    return (centres, *out[""])


def r_ell_r50_r150_models(
    target: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    *,
    side_deg: float = DEFAULT_SIDE_DEG,
    mask: np.ndarray | None = None,
    robust: bool = False,
    taper_pix: float = TAPER_PIX,
) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """:func:`r_ell_r50_r150` of several predictions against one target.

    The target's FFT and the robust form's window are computed once for all of them, so
    each prediction costs one FFT; the results equal :func:`r_ell_r50_r150`'s value for
    value.

    Returns
    -------
    ell_centres : ndarray, shape (nbins,)
    by_name : dict
        Name -> ``(r (..., nbins), r50 (...), r150 (...))``.
    """
    target = np.asarray(target)
    maps = {name: np.asarray(p) for name, p in predictions.items()}
    for p in maps.values():
        _check_shapes(target.shape, p.shape)
    form = _form(mask, target.shape, robust, taper_pix)
    bins, bands, centres = _weights(tuple(target.shape[-2:]), float(side_deg))
    t, amp_t = _spectrum(form(target))
    out = {}
    for name, p in maps.items():
        f, amp_p = _spectrum(form(p))
        rk = ((t * f.conj()).real / (amp_t * amp_p)).reshape(*target.shape[:-2], -1)
        r = rk @ bands
        out[name] = (rk @ bins, r[..., 0], r[..., 1])
    return centres.copy(), out


def r50_r150_torch(target, prediction, *, side_deg: float = DEFAULT_SIDE_DEG):
    """Differentiable torch twin of :func:`r50_r150` for tensors of shape (B, n, n).

    Returns a tensor of shape (B, 2): r50 and r150 per cutout, in float32 (float64 if
    either input is float64). Same amplitude floor as the numpy version, so gradients are
    finite where a mode's amplitude is ~0; the floor is not differentiated through.
    """
    import torch

    _check_shapes(tuple(target.shape), tuple(prediction.shape))
    _, bands, _ = _weights(tuple(target.shape[-2:]), float(side_deg))
    dtype = torch.promote_types(torch.promote_types(target.dtype, prediction.dtype), torch.float32)
    w = torch.tensor(bands, dtype=dtype, device=target.device)
    rk = mode_correlation_torch(
        torch.fft.fft2(target.to(dtype)), torch.fft.fft2(prediction.to(dtype))
    )
    return rk.flatten(-2) @ w


def mode_correlation_torch(t, p):
    """Per-mode r_k (..., ny, nx) of two complex torch FFTs (..., ny, nx), with the amplitude
    floor of :func:`mode_correlation`; the floor is not differentiated through."""
    num = t.real * p.real + t.imag * p.imag
    pow_t = t.real**2 + t.imag**2
    pow_p = p.real**2 + p.imag**2
    floor_t = (EPS_POWER * pow_t.amax(dim=(-2, -1), keepdim=True)).detach() + _TINY
    floor_p = (EPS_POWER * pow_p.amax(dim=(-2, -1), keepdim=True)).detach() + _TINY
    # Two amplitudes, each floored, rather than sqrt(pow_t * pow_p): the product of four
    # powers of the FFT amplitude overflows float32 for maps of order 1e3 (K km/s).
    return num / ((pow_t + floor_t).sqrt() * (pow_p + floor_p).sqrt())
