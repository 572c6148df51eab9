"""Low-pass filtering in ell and Nside changes, done together in one harmonic step.

A map at Nside ``n_in`` is brought to the working Nside ``n_out`` with the Butterworth
low-pass

    B(ell) = 1 / sqrt(1 + (ell / ell_c)**(2 n))

(``ell_c`` the cutoff, ``n`` the order; B(ell_c) = 1/sqrt(2)) by

    a_lm = map2alm(map, lmax)            at n_in (``iters`` Jacobi iterations)
    a_lm <- B(ell) a_lm
    map' = alm2map(a_lm, n_out, lmax)

with ``lmax`` from :func:`filter_lmax`: the largest multipole both pixelisations carry
(``min(3 n_in, 3 n_out) - 1``, so no multipole is read above what the input resolves nor
synthesised above what the output can hold), lowered to where the filter's
response has fallen below :data:`RESPONSE_TOLERANCE` (1e-3). Doing both in one step avoids
the aliasing of a pixel-space ``ud_grade`` followed by a separate filter.

The transforms are ducc0's multithreaded spherical-harmonic transforms
(``ducc0.sht.experimental`` on the ring geometry of ``ducc0.healpix``), with healpy's
``map2alm`` iterations reproduced; healpy stays as the reference
(:func:`lowpass_to_nside_healpy`; equal to rounding at the same lmax).

Pixel windows are not corrected. For the paper's setting (Nside 1024 in and out,
ell_c = 460) the filter suppresses ell > 460 where the Nside-1024 pixel window would matter,
and the dust and HI pass through the same pixelisation, so their ratio is unaffected.
(healpy's tabulated pixel windows would also need a download this workflow avoids.)

Masks are changed in pixel space: :func:`mask_to_nside` averages (or repeats) the keep
mask with ``healpy.ud_grade`` and keeps a working pixel when at least ``threshold`` of the
area it covers is kept.
"""

from __future__ import annotations

import ducc0
import healpy as hp
import numpy as np
from ducc0.sht import experimental as sht

# Largest Butterworth response of a multipole the transforms leave out (see filter_lmax).
RESPONSE_TOLERANCE = 1e-3


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
    """Largest multipole both pixelisations carry, ``3 min(nside_in, nside_out) - 1``."""
    return 3 * min(int(nside_in), int(nside_out)) - 1


def filter_lmax(
    nside_in: int,
    nside_out: int,
    ell_cutoff: float | None,
    order: int,
    tolerance: float = RESPONSE_TOLERANCE,
) -> int:
    """Multipole where the transforms stop: where the filter makes the rest negligible.

    ``lmax = min(harmonic_lmax(nside_in, nside_out), ell_eps)`` with ``ell_eps`` the
    smallest integer multipole at which the Butterworth response has fallen to
    ``tolerance`` (B decreases with ell, so it stays below it above):

        ell_eps = ceil(ell_c (tolerance**-2 - 1)**(1 / (2 n)))

    (ell_c = 460, n = 4, tolerance 1e-3: ell_eps = 2587, below 3071 at Nside 1024.)

    Parameters
    ----------
    nside_in, nside_out
        Nside of the input and of the result.
    ell_cutoff, order
        Butterworth settings; ``ell_cutoff=None`` (no filter) gives ``harmonic_lmax``.
    tolerance
        Largest response ``B(ell)`` of a multipole that is dropped.

    Returns
    -------
    int
        The lmax of the analysis and the synthesis.

    Notes
    -----
    Error bound: the dropped multipoles reach the output with weight ``B(ell) <=
    tolerance``, so their part of the output has an rms of at most ``tolerance`` times the
    rms of the input's multipoles above ``lmax`` (which is at most the input's standard
    deviation). Truncating also changes which small scales the Jacobi iterations remove
    before their aliasing reaches low ell; that part is measured, not bounded. Measured
    against the full path (``lmax = 3 Nside - 1``, 3 iterations) at the paper's ratio
    ell_c / Nside = 460 / 1024 (tests/test_harmonic.py, Nside 256, ell_c = 115): the
    relative rms difference (over the reference's standard deviation) is 3.9e-5 for an
    HI channel with its 43 mK noise and 4.8e-5 for a dust-like ell^-2.5 map with a white
    noise floor, below the tested 1e-4.
    """
    full = harmonic_lmax(nside_in, nside_out)
    if ell_cutoff is None:
        return full
    if not 0.0 < tolerance < 1.0:
        raise ValueError(f"need 0 < tolerance < 1, got {tolerance}")
    butterworth(np.zeros(1), ell_cutoff, order)  # validates ell_cutoff and order
    ell_eps = float(ell_cutoff) * (tolerance**-2 - 1.0) ** (1.0 / (2 * int(order)))
    return min(full, int(np.ceil(ell_eps)))


def _geometry(nside: int) -> dict[str, np.ndarray]:
    """Ring geometry of a RING-ordered HEALPix map, in ducc0's ``sht_info`` form."""
    return ducc0.healpix.Healpix_Base(int(nside), "RING").sht_info()


def synthesis(
    alm: np.ndarray, nside: int, lmax: int, *, spin: int = 0, nthreads: int = 1
) -> np.ndarray:
    """``healpy.alm2map`` with ducc0: a_lm (healpy's order, mmax = lmax) to a RING map.

    Parameters
    ----------
    alm
        ``(Alm.getsize(lmax),)`` complex128 coefficients; with ``spin=2`` the ``(2, nalm)``
        E and B coefficients.
    nside
        Nside of the map.
    lmax
        Band limit of ``alm``.
    spin
        0 for a scalar map, 2 for Stokes Q, U (COSMO, healpy's convention).
    nthreads
        Threads of the transform.

    Returns
    -------
    numpy.ndarray
        ``(12 nside**2,)`` float64 RING map; ``(2, 12 nside**2)`` Q, U with ``spin=2``.
    """
    alm = np.ascontiguousarray(alm, dtype=np.complex128).reshape(1 if spin == 0 else 2, -1)
    geom = _geometry(nside)
    out = sht.synthesis(alm=alm, lmax=int(lmax), spin=int(spin), nthreads=int(nthreads), **geom)
    return out[0] if spin == 0 else out


def analysis(
    healpix_map: np.ndarray, lmax: int, *, iters: int = 3, spin: int = 0, nthreads: int = 1
) -> np.ndarray:
    """``healpy.map2alm(map, lmax, iter=iters)`` with ducc0 (same Jacobi iterations).

    healpy (HEALPix C++ ``map2alm_iter``) starts from the quadrature with uniform weights
    ``4 pi / npix`` and adds the quadrature of the residual ``iters`` times:

        a_0 = Y^T w m,   a_(k+1) = a_k + Y^T w (m - Y a_k)

    This function does the same with ducc0's transforms, so the two agree to rounding.

    Parameters
    ----------
    healpix_map
        ``(12 nside**2,)`` RING map; with ``spin=2`` the ``(2, 12 nside**2)`` Q and U.
    lmax
        Band limit of the result (mmax = lmax).
    iters
        Jacobi iterations.
    spin
        0, or 2 for Q, U (the E and B a_lm of ``healpy.map2alm(..., pol=True)``).
    nthreads
        Threads of each transform.

    Returns
    -------
    numpy.ndarray
        ``(Alm.getsize(lmax),)`` complex128 a_lm in healpy's order; ``(2, nalm)`` E, B with
        ``spin=2``.
    """
    values = np.ascontiguousarray(healpix_map, dtype=np.float64).reshape(1 if spin == 0 else 2, -1)
    nside = hp.npix2nside(values.shape[1])
    geom = _geometry(nside)
    weight = 4.0 * np.pi / values.shape[1]

    def quadrature(m: np.ndarray) -> np.ndarray:
        alm = sht.adjoint_synthesis(
            map=m, lmax=int(lmax), spin=int(spin), nthreads=int(nthreads), **geom
        )
        return alm * weight

    def model(a: np.ndarray) -> np.ndarray:
        return synthesis(a, nside, lmax, spin=spin, nthreads=nthreads).reshape(values.shape)

    alm = quadrature(values)
    for _ in range(int(iters)):
        alm += quadrature(values - model(alm))
    return alm[0] if spin == 0 else alm


def lowpass_to_nside(
    healpix_map: np.ndarray,
    nside_out: int,
    ell_cutoff: float | None,
    order: int,
    *,
    iters: int = 3,
    lmax: int | None = None,
    spin: int = 0,
    nthreads: int = 1,
) -> np.ndarray:
    """Filter a RING map with the Butterworth low-pass and resample it to ``nside_out``.

    The transforms are ducc0's (multithreaded); :func:`lowpass_to_nside_healpy` is the
    healpy reference it is tested against.

    Parameters
    ----------
    healpix_map
        ``(12 n_in**2,)`` RING-ordered map (any float type); with ``spin=2`` the
        ``(2, 12 n_in**2)`` Stokes Q and U, filtered as E and B (the same B(ell) on both).
    nside_out
        Working Nside of the result.
    ell_cutoff
        Butterworth cutoff; ``None`` applies no filter (only the Nside change, band-limited
        at ``lmax``).
    order
        Butterworth order.
    iters
        Jacobi iterations of the analysis (3 is healpy's default; more is more accurate
        near ``lmax`` and slower).
    lmax
        Override of :func:`filter_lmax`.
    spin
        0, or 2 for Q, U.
    nthreads
        Threads of each transform.

    Returns
    -------
    numpy.ndarray
        ``(12 nside_out**2,)`` float64 RING map; ``(2, 12 nside_out**2)`` with ``spin=2``.
    """
    nside_in = hp.npix2nside(np.shape(healpix_map)[-1])
    if lmax is None:
        lmax = filter_lmax(nside_in, nside_out, ell_cutoff, order)
    alm = analysis(healpix_map, lmax, iters=iters, spin=spin, nthreads=nthreads)
    if ell_cutoff is not None:
        response = butterworth(np.arange(lmax + 1), ell_cutoff, order)
        alm = np.array([hp.almxfl(a, response) for a in np.reshape(alm, (-1, alm.shape[-1]))])
    return synthesis(alm, nside_out, lmax, spin=spin, nthreads=nthreads)


def lowpass_to_nside_healpy(
    healpix_map: np.ndarray,
    nside_out: int,
    ell_cutoff: float | None,
    order: int,
    *,
    iters: int = 3,
    lmax: int | None = None,
) -> np.ndarray:
    """The healpy reference of :func:`lowpass_to_nside` (the workflow's earlier path).

    ``healpy.map2alm(iter=iters)``, :func:`butterworth`, ``healpy.alm2map``, with
    ``lmax`` defaulting to :func:`harmonic_lmax` (no cut from the filter). Same
    parameters and result as :func:`lowpass_to_nside`; healpy's threads come from
    ``OMP_NUM_THREADS``.
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
