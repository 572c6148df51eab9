r"""HI-orientation baselines for dust Q/U on cutouts: the structure of the HI traces the field.

Thin HI structures run along the plane-of-sky magnetic field (Clark, Peek & Putman 2014), and
dust emission is polarised perpendicular to the field, so across the structures: along the
HI's intensity gradient. The baselines read the orientation of each cutout's HI structure
from its **structure tensor** and polarise an HI intensity along it:

- the images are smoothed by a Gaussian of FWHM ``fwhm_pix`` (the noise would dominate the
  gradient), differentiated by central differences, and the tensor
  :math:`J = G_\sigma * (\nabla I\, \nabla I^T)` smoothed by the same Gaussian, with the
  masked pixels (and their neighbours, where the differences reach into the mask) given no
  weight (normalised convolution);
- with :math:`A = J_{xx} - J_{yy}`, :math:`B = 2 J_{xy}`, the gradient's angle :math:`\chi`
  from ``+x`` toward ``+y`` has :math:`\cos 2\chi = A / \lambda`, :math:`\sin 2\chi = B /
  \lambda`, :math:`\lambda = \sqrt{A^2 + B^2}`, and the template is
  :math:`Q + iU = f\, I\, e^{2i\chi}` in the cutout frame (:mod:`dustpred.polarisation.spin2`).

Two versions:

- :func:`integrated_template` (the Hessian/structure-tensor analogue of the HI-orientation
  templates of Clark & Hensley 2019 with one map): the orientation and the intensity of the
  velocity-integrated HI;
- :func:`channel_template` (Clark & Hensley 2019's per-channel construction, with the
  structure tensor in place of the rolling Hough transform): each velocity channel's
  orientation, weighted by that channel's intensity, summed over channels, so components at
  different velocities keep their own orientations.

The fraction ``f`` is one number per baseline, fitted by least squares on the training
cutouts (:func:`fit_fraction`). These operators work on the pixel grid of the cutouts; the
synthetic truth (:mod:`dustpred.polarisation.sky`) takes its orientations from the harmonic
gradient of each component's own Gaussian field, not from these maps.

Arrays are ``(..., H, W)`` images in the cutout frame: row ``i`` is ``+y``, column ``j`` is ``+x``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# Relative floor of the tensor's anisotropy below which a pixel's orientation is undefined
# (a flat or masked patch): its template is 0 there.
_FLOOR = 1e-12


@lru_cache(maxsize=8)
def _gaussian_matrix(n: int, sigma: float) -> np.ndarray:
    """``(n, n)`` matrix of a Gaussian convolution of ``n`` samples, zero outside them
    (rows normalised by the whole kernel's sum, truncated at 4 sigma)."""
    offset = np.arange(n)[:, None] - np.arange(n)[None, :]
    kernel = np.exp(-0.5 * (offset / sigma) ** 2) * (np.abs(offset) <= 4 * sigma)
    reach = np.arange(-int(4 * sigma), int(4 * sigma) + 1)
    matrix = kernel / np.exp(-0.5 * (reach / sigma) ** 2).sum()
    matrix.setflags(write=False)
    return matrix


def _smooth(images: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing over the last two axes only (zero outside the image)."""
    rows = _gaussian_matrix(images.shape[-2], float(sigma))
    cols = _gaussian_matrix(images.shape[-1], float(sigma))
    return rows @ images @ cols.T


def _derivative(images: np.ndarray, axis: int) -> np.ndarray:
    """Fourth-order central difference along ``axis`` (-2: rows, -1: columns); the two
    pixels at each end are 0. Its response ``(8 sin k - sin 2k) / 6k`` stays within 0.5 % of
    1 up to a wavelength of 9 pixels, the same along both axes, so it bends no angle there
    (central differences would by 4 %)."""
    x = np.moveaxis(images, axis, -1)
    out = np.zeros_like(x)
    out[..., 2:-2] = (8 * (x[..., 3:-1] - x[..., 1:-3]) - (x[..., 4:] - x[..., :-4])) / 12.0
    return np.moveaxis(out, -1, axis)


def _eroded(keep: np.ndarray, reach: int) -> np.ndarray:
    """Pixels whose neighbours up to ``reach`` along both axes are kept and inside."""
    out = keep.copy()
    out[..., :reach, :] = out[..., -reach:, :] = False
    out[..., :, :reach] = out[..., :, -reach:] = False
    for shift in range(1, reach + 1):
        for axis in (-2, -1):
            out &= np.roll(keep, shift, axis=axis) & np.roll(keep, -shift, axis=axis)
    return out


def orientation(
    images: np.ndarray, mask: np.ndarray, fwhm_pix: float
) -> tuple[np.ndarray, np.ndarray]:
    """``cos 2 chi``, ``sin 2 chi`` of the structure tensor's gradient angle.

    Parameters
    ----------
    images
        ``(..., H, W)`` maps (masked pixels any value).
    mask
        ``(H, W)`` or broadcastable to ``images``: True where masked.
    fwhm_pix
        FWHM of the Gaussian smoothing of the images and of the tensor, pixels.

    Returns
    -------
    tuple of numpy.ndarray
        Two ``(..., H, W)`` float64 arrays; 0 where the orientation is undefined (masked,
        or no structure within the smoothing scale).
    """
    sigma = float(fwhm_pix) / np.sqrt(8.0 * np.log(2.0))
    # The mask's own shape: what depends only on it is done once for all images it covers.
    keep = ~np.asarray(mask, bool)
    shape = np.broadcast_shapes(np.shape(images), keep.shape)
    x = np.where(keep, np.asarray(images, np.float64), 0.0)
    norm = np.broadcast_to(_smooth(keep.astype(np.float64), sigma), shape)
    smooth = np.divide(_smooth(x, sigma), norm, out=np.zeros(shape), where=norm > 1e-3)
    gy, gx = _derivative(smooth, -2), _derivative(smooth, -1)
    # A difference that reaches a masked pixel or the border reads zeros: drop those pixels.
    w = _eroded(keep, 2).astype(np.float64)
    a = _smooth(w * (gx**2 - gy**2), sigma)
    b = _smooth(w * 2.0 * gx * gy, sigma)
    lam = np.hypot(a, b)
    floor = _FLOOR * lam.max(axis=(-2, -1), keepdims=True) + np.finfo(float).tiny
    ok = np.broadcast_to(keep, shape) & (lam > floor)
    cos2 = np.divide(a, lam, out=np.zeros_like(a), where=ok)
    sin2 = np.divide(b, lam, out=np.zeros_like(b), where=ok)
    return cos2, sin2


def integrated_template(
    inputs: np.ndarray, mask: np.ndarray, fwhm_pix: float
) -> tuple[np.ndarray, np.ndarray]:
    """Q, U (fraction 1) from the integrated HI: ``I (cos 2chi, sin 2chi)`` of
    :func:`orientation` of ``I = sum_v inputs``.

    ``inputs`` ``(N, C, H, W)`` channel maps, ``mask`` ``(N, H, W)``; returns two
    ``(N, H, W)`` float64 arrays, 0 at masked pixels.
    """
    intensity = np.asarray(inputs, np.float64).sum(axis=1)
    cos2, sin2 = orientation(intensity, mask, fwhm_pix)
    return intensity * cos2, intensity * sin2


def channel_template(
    inputs: np.ndarray, mask: np.ndarray, fwhm_pix: float
) -> tuple[np.ndarray, np.ndarray]:
    """Q, U (fraction 1) summed over channels: ``sum_v I_v (cos 2chi_v, sin 2chi_v)``,
    each channel with its own :func:`orientation`.

    ``inputs`` ``(N, C, H, W)``, ``mask`` ``(N, H, W)``; returns two ``(N, H, W)`` float64
    arrays. One cutout at a time, to bound the memory at ``C`` maps.
    """
    inputs = np.asarray(inputs)
    q = np.zeros((inputs.shape[0], *inputs.shape[2:]))
    u = np.zeros_like(q)
    for n in range(inputs.shape[0]):
        channels = inputs[n].astype(np.float64)
        cos2, sin2 = orientation(channels, mask[n], fwhm_pix)
        q[n] = (channels * cos2).sum(axis=0)
        u[n] = (channels * sin2).sum(axis=0)
    return q, u


def fit_fraction(
    target_q: np.ndarray,
    target_u: np.ndarray,
    q: np.ndarray,
    u: np.ndarray,
    mask: np.ndarray,
) -> float:
    """Least-squares ``f`` of ``target ~ f (q, u)`` over the unmasked pixels of all cutouts:
    ``sum Re(T conj(P)) / sum |P|^2`` with ``T = Q_t + i U_t``, ``P = q + i u``."""
    keep = ~np.asarray(mask, bool)
    t = np.asarray(target_q, np.float64)[keep] + 1j * np.asarray(target_u, np.float64)[keep]
    p = np.asarray(q, np.float64)[keep] + 1j * np.asarray(u, np.float64)[keep]
    power = float((np.abs(p) ** 2).sum())
    return float((t * p.conj()).real.sum() / power) if power > 0 else 0.0
