"""Reassembly of tile predictions on HEALPix (step 4 of :mod:`dustpred.template.tiling`).

Every output pixel inside a tile is projected into the tile's plane with the inverse of the
cutout geometry (``plane = R @ vec``, ``x = -v1/v0``, ``y = v2/v0``), the tile prediction is
interpolated bilinearly there (from the unmasked tile pixels only), weighted by a Tukey/Hann
window that falls to 0 at the outermost pixel centres, and accumulated into
``sum w p / sum w`` with the weighted tile-to-tile spread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import healpy as hp
import numpy as np

from dustpred.cutouts import projection
from dustpred.errors import InputError
from dustpred.template.tiling import Tiles

log = logging.getLogger(__name__)


def tile_window(u: np.ndarray, taper: float = 1.0) -> np.ndarray:
    """1-D apodisation: a Tukey window on ``u`` in [0, 1], 0 at both ends and outside.

    ``taper`` is the fraction of the width in the two cosine ramps (1: a Hann window
    ``sin(pi u)**2``, smooth with a zero slope at the edges; smaller keeps a flat top).
    """
    if not 0 < taper <= 1:
        raise InputError(f"tile window taper: found {taper!r}; expected 0 < taper <= 1")
    u = np.asarray(u, dtype=np.float64)
    edge = np.minimum(u, 1.0 - u) / (0.5 * taper)  # 0 at the edge, 1 where the ramp ends
    w = np.sin(0.5 * np.pi * np.clip(edge, 0.0, 1.0)) ** 2
    return np.where((u > 0) & (u < 1), w, 0.0)


@dataclass
class TilePixels:
    """The output pixels a tile reaches and how to interpolate the tile there.

    Attributes
    ----------
    pix
        ``(m,)`` int64 RING pixels (distinct) with a nonzero window.
    corners
        ``(4, m)`` int64 flat indices ``i * npix + j`` of the bilinear corners in the tile.
    bilinear
        ``(4, m)`` float64 bilinear weights (sum 1).
    window
        ``(m,)`` float64 apodisation weight in (0, 1].
    """

    pix: np.ndarray
    corners: np.ndarray
    bilinear: np.ndarray
    window: np.ndarray


def plane_coordinates(vec: np.ndarray, rotation: np.ndarray, npix: int, reso_arcmin: float):
    """Fractional tile coordinates ``(i, j)`` (row = plane y, column = plane x) of directions.

    The inverse of :func:`dustpred.cutouts.projection.cutout_vectors`: ``vec = R.T @ plane`` there,
    so ``plane = R @ vec``, and plane pixel ``(i, j)`` has ``x = -v1/v0 = (j - c) dx``,
    ``y = v2/v0 = (i - c) dx`` with ``c = (npix - 1) / 2``. ``vec``: ``(3, m)`` unit vectors;
    ``rotation``: ``(3, 3)`` from :func:`dustpred.cutouts.projection.rotation_matrices`. Directions
    with ``v0 <= 0`` (behind the plane) get NaN.
    """
    plane = rotation @ vec
    dx = reso_arcmin / 60.0 * projection.DTOR
    centre = 0.5 * (npix - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        front = plane[0] > 0
        fi = np.where(front, plane[2] / plane[0] / dx + centre, np.nan)
        fj = np.where(front, -plane[1] / plane[0] / dx + centre, np.nan)
    return fi, fj


def tile_pixels(
    tiles: Tiles, t: int, nside: int, *, rotation=None, taper=1.0, vectors=None
) -> TilePixels:
    """:class:`TilePixels` of tile ``t`` at output ``nside``.

    The window is ``tile_window(i / (npix - 1)) * tile_window(j / (npix - 1))``: 0 at the
    outermost pixel centres, so bilinear interpolation never extrapolates. ``vectors``:
    optional ``(3, 12 nside**2)`` ``healpy.pix2vec`` of all pixels, to reuse over tiles.
    """
    n = tiles.npix
    if rotation is None:
        rotation = projection.rotation_matrices(
            tiles.lon[t : t + 1], tiles.lat[t : t + 1], tiles.psi[t : t + 1]
        )[0]
    centre = hp.ang2vec(tiles.lon[t], tiles.lat[t], lonlat=True)
    # The window's support is the square of plane half-width h: radius arctan(sqrt(2) h).
    radius = np.arctan(np.sqrt(2.0) * tiles.half_width_rad) + hp.max_pixrad(nside)
    pix = hp.query_disc(int(nside), centre, radius)
    vec = np.asarray(hp.pix2vec(int(nside), pix)) if vectors is None else vectors[:, pix]
    fi, fj = plane_coordinates(vec, rotation, n, tiles.reso_arcmin)
    with np.errstate(invalid="ignore"):
        inside = (fi > 0) & (fi < n - 1) & (fj > 0) & (fj < n - 1)
    pix, fi, fj = pix[inside], fi[inside], fj[inside]
    window = tile_window(fi / (n - 1), taper) * tile_window(fj / (n - 1), taper)
    i0 = np.minimum(fi.astype(np.int64), n - 2)
    j0 = np.minimum(fj.astype(np.int64), n - 2)
    ti, tj = fi - i0, fj - j0
    base = i0 * n + j0
    corners = np.stack([base, base + 1, base + n, base + n + 1])
    bilinear = np.stack([(1 - ti) * (1 - tj), (1 - ti) * tj, ti * (1 - tj), ti * tj])
    keep = window > 0
    return TilePixels(pix[keep], corners[:, keep], bilinear[:, keep], window[keep])


@dataclass
class Reassembled:
    """A reassembled map and its accumulators, all ``(12 nside**2,)`` float64 RING.

    Attributes
    ----------
    value
        ``sum w p / sum w`` over the tiles reaching each pixel (0 where ``weight`` is 0).
    weight
        ``sum w``: window times the unmasked bilinear fraction, summed over tiles (coverage).
    tile_std
        Weighted standard deviation of the tiles' predictions about ``value``
        (``sqrt(sum w (p - value)**2 / sum w)``; 0 where a single tile reaches the pixel).
    """

    value: np.ndarray
    weight: np.ndarray
    tile_std: np.ndarray


def reassemble(
    predictions: np.ndarray,
    tiles: Tiles,
    nside: int,
    *,
    masked: np.ndarray | None = None,
    fold: np.ndarray | None = None,
    taper: float = 1.0,
) -> Reassembled:
    """Put tile predictions back on HEALPix: windowed, bilinear, per-pixel fold selection.

    Parameters
    ----------
    predictions
        ``(N, H, W)`` one model's prediction of every tile, or ``(K, N, H, W)`` K models'
        (e.g. K = 2 cross-fitted models), any float type, ``H = W = tiles.npix``.
    tiles
        The :func:`tile_grid` the predictions were made on.
    nside
        Output Nside.
    masked
        Optional ``(N, H, W)`` tile mask (nonzero = masked, :func:`tile_cutouts`): masked tile
        pixels contribute nothing (the bilinear weights are renormalised over the unmasked
        corners, and the tile's weight there scales by their bilinear share).
    fold
        Optional ``(12 nside**2,)`` int in ``[0, K)`` (:func:`fold_map`): each pixel
        accumulates only model ``fold[p]``'s predictions. Default: model 0 everywhere.
    taper
        :func:`tile_window` taper.

    Returns
    -------
    Reassembled
        Accumulated with a weighted Welford update per tile (one pass, no cancellation).
    """
    pred = np.asarray(predictions)
    pred = pred[None] if pred.ndim == 3 else pred
    k, n, h, w = pred.shape if pred.ndim == 4 else (0, 0, 0, 0)
    if pred.ndim != 4 or n != len(tiles) or h != tiles.npix or w != tiles.npix:
        raise InputError(
            f"reassemble: predictions have shape {np.shape(predictions)}; expected "
            f"(N, H, W) or (K, N, H, W) with N = {len(tiles)} tiles, H = W = {tiles.npix}"
        )
    npix_out = 12 * int(nside) ** 2
    if fold is None:
        fold = np.zeros(npix_out, dtype=np.int64)
    fold = np.asarray(fold, dtype=np.int64)
    if fold.shape != (npix_out,) or fold.min() < 0 or fold.max() >= k:
        raise InputError(
            f"reassemble: fold has shape {fold.shape}, values in [{fold.min()}, {fold.max()}]; "
            f"expected ({npix_out},) values in [0, {k}) (one per model)"
        )
    keep = None if masked is None else (np.asarray(masked) == 0).reshape(n, h * w)
    flat = pred.reshape(-1)
    rotations = projection.rotation_matrices(tiles.lon, tiles.lat, tiles.psi)
    # Pixel directions once (tiles overlap ~10x): 24 bytes per output pixel.
    vectors = np.asarray(hp.pix2vec(int(nside), np.arange(npix_out)))
    total = np.zeros(npix_out)
    mean = np.zeros(npix_out)
    m2 = np.zeros(npix_out)
    for t in range(n):
        tp = tile_pixels(tiles, t, nside, rotation=rotations[t], taper=taper, vectors=vectors)
        values = flat[(fold[tp.pix] * n + t) * (h * w) + tp.corners]  # (4, m)
        b = tp.bilinear if keep is None else tp.bilinear * keep[t][tp.corners]
        share = b[0] + b[1] + b[2] + b[3]  # explicit: faster than a reduction over 4 rows
        use = share > 0
        pix = tp.pix[use]
        bv = b[:, use] * values[:, use]
        p = (bv[0] + bv[1] + bv[2] + bv[3]) / share[use]
        wt = tp.window[use] * share[use]
        # Weighted Welford update: each pixel appears once per tile, so fancy indexing is exact.
        new_total = total[pix] + wt
        delta = p - mean[pix]
        new_mean = mean[pix] + delta * (wt / new_total)
        m2[pix] += wt * delta * (p - new_mean)
        total[pix], mean[pix] = new_total, new_mean
    covered = total > 0
    std = np.zeros(npix_out)
    std[covered] = np.sqrt(np.maximum(m2[covered], 0.0) / total[covered])
    return Reassembled(value=mean, weight=total, tile_std=std)
