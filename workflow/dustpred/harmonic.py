"""Low-pass filtering in ell and Nside changes, done together in one harmonic step.

A map at Nside ``n_in`` is brought to the working Nside ``n_out`` with the Butterworth
low-pass

    B(ell) = 1 / sqrt(1 + (ell / ell_c)**(2 n))

(``ell_c`` the cutoff, ``n`` the order; B(ell_c) = 1/sqrt(2)) by

    a_lm = map2alm(map, lmax)            at n_in (``iters`` Jacobi iterations)
    a_lm <- B(ell) a_lm
    map' = alm2map(a_lm, n_out, lmax)

with ``lmax = min(3 n_in, 3 n_out) - 1``: the largest multipole both pixelisations carry,
so no multipole is read above what the input resolves nor synthesised above what the
output can hold. Doing both in one step avoids the aliasing of a pixel-space
``ud_grade`` followed by a separate filter.

Pixel windows are not corrected. For the paper's setting (Nside 1024 in and out,
ell_c = 460) the filter suppresses ell > 460 where the Nside-1024 pixel window would matter,
and the dust and HI pass through the same pixelisation, so their ratio is unaffected.
(healpy's tabulated pixel windows would also need a download this workflow avoids.)

Masks are changed in pixel space: :func:`mask_to_nside` averages (or repeats) the keep
mask with ``healpy.ud_grade`` and keeps a working pixel when at least ``threshold`` of the
area it covers is kept.
"""

from __future__ import annotations

import healpy as hp
import numpy as np


def butterworth(ell: np.ndarray, ell_cutoff: float, order: int) -> np.ndarray:
    """Butterworth low-pass response ``1/sqrt(1 + (ell/ell_cutoff)**(2 order))``.

    Parameters
    ----------
    ell
        Multipoles (any shape).
    ell_cutoff
        Multipole where the response is 1/sqrt(2) (> 0).
    order
        Filter order n >= 1; larger is sharper.

    Returns
    -------
    numpy.ndarray
        Response, same shape as ``ell``, in (0, 1].
    """
    if ell_cutoff <= 0 or order < 1:
        raise ValueError(f"need ell_cutoff > 0 and order >= 1, got {ell_cutoff}, {order}")
    ratio = np.asarray(ell, dtype=np.float64) / float(ell_cutoff)
    return 1.0 / np.sqrt(1.0 + ratio ** (2 * int(order)))


def harmonic_lmax(nside_in: int, nside_out: int) -> int:
    """Largest multipole used when going from ``nside_in`` to ``nside_out``."""
    return 3 * min(int(nside_in), int(nside_out)) - 1


def lowpass_to_nside(
    healpix_map: np.ndarray,
    nside_out: int,
    ell_cutoff: float | None,
    order: int,
    *,
    iters: int = 3,
    lmax: int | None = None,
) -> np.ndarray:
    """Filter a RING map with the Butterworth low-pass and resample it to ``nside_out``.

    Parameters
    ----------
    healpix_map
        ``(12 n_in**2,)`` RING-ordered map (any float type).
    nside_out
        Working Nside of the result.
    ell_cutoff
        Butterworth cutoff; ``None`` applies no filter (only the Nside change, band-limited
        at ``lmax``).
    order
        Butterworth order.
    iters
        Jacobi iterations of ``healpy.map2alm`` (3 is healpy's default; more is more
        accurate near ``lmax`` and slower).
    lmax
        Override of :func:`harmonic_lmax`.

    Returns
    -------
    numpy.ndarray
        ``(12 nside_out**2,)`` float64 RING map.
    """
    nside_in = hp.npix2nside(len(healpix_map))
    lmax = harmonic_lmax(nside_in, nside_out) if lmax is None else int(lmax)
    alm = hp.map2alm(np.asarray(healpix_map, dtype=np.float64), lmax=lmax, iter=iters)
    if ell_cutoff is not None:
        alm = hp.almxfl(alm, butterworth(np.arange(lmax + 1), ell_cutoff, order))
    return hp.alm2map(alm, int(nside_out), lmax=lmax)


def mask_to_nside(keep: np.ndarray, nside_out: int, threshold: float = 0.5) -> np.ndarray:
    """Bring a keep-mask (1 = use, 0 = masked) to ``nside_out`` and return MASKED pixels.

    Parameters
    ----------
    keep
        ``(12 n_in**2,)`` RING map with values in [0, 1] (1 = keep, the Planck convention).
    nside_out
        Working Nside.
    threshold
        A working pixel is kept when the mean of ``keep`` over the area it covers
        (``healpy.ud_grade`` average; repetition when upgrading) is >= ``threshold``.

    Returns
    -------
    numpy.ndarray
        ``(12 nside_out**2,)`` uint8, 1 = MASKED (the project's convention), RING.
    """
    keep = np.asarray(keep, dtype=np.float64)
    graded = hp.ud_grade(keep, int(nside_out), order_in="RING", order_out="RING")
    return (graded < threshold).astype(np.uint8)
