"""Spin-2 fields (Stokes Q, U) on gnomonic cutouts: the cutout frame, its symmetries, E/B.

The first step of the polarisation work (issue 28); no workflow rule uses it yet. The
cutouts' geometry comes from :mod:`dustpred.cutouts.projection`.

**Conventions.** The HEALPix maps are in the COSMO convention (healpy's, and Planck's
``POLCCONV = 'COSMO'``): it differs from IAU (polarisation angle from north through east) by
the sign of U. A cutout (:mod:`dustpred.cutouts.projection`, healpy's ``flip='astro'``) shows
the sky as seen from inside: row ``i`` is the plane's ``y`` (up), column ``j`` its ``x``, and
east is to the left. In the **cutout frame** Q and U refer to the image axes, with the
polarisation angle ``chi`` measured from ``+x`` toward ``+y`` (``Q = P cos 2chi``,
``U = P sin 2chi``), the frame of the flat-sky E/B decomposition below. On the sky ``+x`` to
``+y`` turns the same way as north to east, so with ``alpha`` the angle of the image's ``+y``
axis at a pixel from galactic north toward east (:func:`frame_angles`),
``chi = gamma_IAU - alpha + 90 deg`` and

    Q_c + i U_c = -(Q - i U) exp(-2 i alpha)        (Q, U in COSMO; Q - i U in IAU).

tests/test_spin2.py establishes it on pure-E and pure-B skies from ``healpy.synfast`` (the sign
of U and of alpha each swap or mix E and B when wrong) and checks ``alpha`` against healpy's
own projector.

**Symmetries** (:func:`rot90_qu`, :func:`mirror_qu`), for the dihedral augmentation: turning
the image by 90 deg turns the frame too, so Q and U change sign; mirroring it left to right
reverses the angle, so U changes sign.

**Flat-sky E/B** (:func:`flat_eb`): per Fourier mode at angle ``phi`` from the ``x`` axis,
``E = Q cos 2phi + U sin 2phi``, ``B = -Q sin 2phi + U cos 2phi``.
"""

from __future__ import annotations

import numpy as np

from dustpred.cutouts.projection import (
    cutout_pixels,
    cutout_vectors,
    plane_vectors,
    rotation_matrices,
)

_Z = np.array([0.0, 0.0, 1.0])


def frame_angles(
    lon: np.ndarray,
    lat: np.ndarray,
    psi: np.ndarray,
    *,
    npix: int = 64,
    reso_arcmin: float = 23.4,
) -> np.ndarray:
    """The angle of the cutout frame's ``+y`` axis at each pixel from galactic north,
    toward east (the image's ``+y`` axis, corrected for the projection's shear).

    Parameters
    ----------
    lon, lat, psi
        ``(N,)`` cutout centres and rotations, degrees (as :func:`cutout_pixels`).

    Returns
    -------
    numpy.ndarray
        ``(N, npix, npix)`` float64, radians. Undefined within a pixel of the poles.
    """
    plane = plane_vectors(npix, reso_arcmin)
    vec = cutout_vectors(lon, lat, psi, npix=npix, reso_arcmin=reso_arcmin, plane=plane)
    inverse = np.swapaxes(rotation_matrices(*np.broadcast_arrays(lon, lat, psi)), -1, -2)
    north = _Z[None, :, None] - vec * vec[:, 2:3]
    east = np.cross(_Z[None, :, None], vec, axis=1)
    bearings = []
    # The plane's y and x directions at each pixel: d/dy and d/dx of (1, -x, y) / r, the
    # plane's z and -y axes projected on the tangent plane; the rotation carries them.
    for axis in (np.array([0.0, 0.0, 1.0]), np.array([0.0, -1.0, 0.0])):
        tangent = inverse.reshape(-1, 3, 3) @ (axis[:, None] - plane * (axis @ plane))
        bearings.append(np.arctan2((tangent * east).sum(axis=1), (tangent * north).sum(axis=1)))
    # Off the centre the gnomonic x and y axes are not perpendicular on the sphere: the frame's
    # y axis bisects the +y axis and the +x axis turned by 90 deg, so that a quarter turn of
    # the grid (psi + 90) turns the frame by exactly 90 deg.
    along_y, along_x = bearings
    angle = along_y + 0.5 * np.angle(np.exp(1j * (along_x + np.pi / 2 - along_y)))
    return angle.reshape(-1, npix, npix)


def to_cutout_frame(q: np.ndarray, u: np.ndarray, alpha: np.ndarray) -> tuple:
    """COSMO Q, U at the cutout pixels (any shape, with ``alpha`` of :func:`frame_angles`)
    in the cutout frame; float64."""
    z = -(np.asarray(q, np.float64) - 1j * np.asarray(u, np.float64)) * np.exp(-2j * alpha)
    return z.real, z.imag


def cutout_qu(
    q_map: np.ndarray,
    u_map: np.ndarray,
    lon: np.ndarray,
    lat: np.ndarray,
    psi: np.ndarray,
    *,
    npix: int = 64,
    reso_arcmin: float = 23.4,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-pixel gnomonic cutouts of the COSMO ``q_map``, ``u_map`` (RING, one Nside),
    in the cutout frame: two ``(N, npix, npix)`` float64 arrays."""
    nside = int(np.sqrt(np.asarray(q_map).size / 12))
    pix = cutout_pixels(nside, lon, lat, psi, npix=npix, reso_arcmin=reso_arcmin)
    alpha = frame_angles(lon, lat, psi, npix=npix, reso_arcmin=reso_arcmin)
    return to_cutout_frame(np.asarray(q_map)[pix], np.asarray(u_map)[pix], alpha)


def rot90_qu(q: np.ndarray, u: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Cutout-frame ``q``, ``u`` (..., H, W) turned ``k`` times by 90 deg, as ``np.rot90``
    turns the image (from ``+x`` toward ``+y``... in array terms, axes (-1, -2)): the field
    turns with it, so each quarter turn changes the sign of Q and U."""
    sign = -1.0 if k % 2 else 1.0
    turn = (np.rot90(a, k, axes=(-1, -2)) for a in (q, u))
    return tuple(sign * a for a in turn)


def mirror_qu(q: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cutout-frame ``q``, ``u`` (..., H, W) mirrored left to right (``x -> -x``): the angle
    from ``+x`` reverses, so U changes sign."""
    return q[..., ::-1], -u[..., ::-1]


def flat_eb(q: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat-sky E and B modes of cutout-frame ``q``, ``u`` (..., H, W), in Fourier space.

    Returns the complex ``(..., H, W)`` arrays ``E_l``, ``B_l`` of ``numpy.fft.fft2`` modes;
    ``phi`` is the angle of each mode's wavevector from the ``x`` (column) axis toward ``y``
    (row). Apodise the maps first: the FFT's periodic edges mix E and B.
    """
    h, w = q.shape[-2:]
    ly = np.fft.fftfreq(h)[:, None]
    lx = np.fft.fftfreq(w)[None, :]
    phi = np.arctan2(ly, lx)
    cos2, sin2 = np.cos(2 * phi), np.sin(2 * phi)
    qf, uf = np.fft.fft2(q), np.fft.fft2(u)
    return qf * cos2 + uf * sin2, -qf * sin2 + uf * cos2
