"""Full-sky dust template: overlapping gnomonic tiles, cross-fitting folds, reassembly on HEALPix.

The template step cuts the whole sky into overlapping tiles, lets each model predict every
tile, and puts the predictions back on a HEALPix grid:

1. :func:`tile_grid` -- tile centres are the pixel centres of a coarse HEALPix grid, the
   coarsest whose pixels are small enough that every point of the sphere lies within
   ``coverage`` times the tile's half-width of a centre (so each point lies in several tiles).
   Each tile has a fixed rotation ``psi`` drawn from the seed.
2. :func:`tile_cutouts` -- the tiles are cut from the pixel-major stack by
   :func:`dustpred.cutouts.projection.gnomonic_cutouts` (the training geometry contract, nearest or
   bilinear sampling) and masked exactly as the training shards are: a tile pixel is masked
   when its nearest HEALPix pixel is masked, and masked pixels are 0 in every channel.
3. :func:`fold_map` -- with cross-fitting, model ``k`` is the model trained on region ``k``
   of the split (0: the ``train`` region of :mod:`dustpred.cutouts.sampling`, north or east; 1: the
   ``test`` region, south or west). Each HEALPix pixel gets the FOLD of a model that did not
   train on it: pixels of region 0 come from model 1 and vice versa. Pixels that training
   cutouts actually touched (``seen``, from :func:`seen_pixels` of the shards' centres) are
   assigned from that record, so the guarantee holds even where a nearest-pixel lookup near
   the boundary reaches a pixel whose centre lies across it.
4. :func:`reassemble` -- every output pixel inside a tile is projected into the tile's plane
   with the inverse of the cutout geometry (``plane = R @ vec``, ``x = -v1/v0``,
   ``y = v2/v0``), the tile prediction is interpolated bilinearly there (from the unmasked
   tile pixels only), weighted by a Tukey/Hann window that falls to 0 at the outermost pixel
   centres, and accumulated into ``sum w p / sum w`` with the weighted tile-to-tile spread.
   Each pixel accumulates only the predictions of the model of its fold.
5. :mod:`dustpred.template.fitsfile` -- least-squares scale and offset against the target, and
   the Planck-layout FITS table; :mod:`dustpred.template.sphere` -- r_ell on the sphere.

Pixels no unmasked tile pixel reaches (inside the mask) get weight 0 and value 0 (not UNSEEN,
so the project's reader, which refuses UNSEEN, reads the file back).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import healpy as hp
import numpy as np

from dustpred.cutouts import projection, sampling
from dustpred.errors import InputError

log = logging.getLogger(__name__)

#: Mixed into the seed so tile rotations are independent of the train/test streams (1, 2).
_TILE_STREAM = 3


@dataclass(frozen=True)
class Tiles:
    """Centres and rotations of the template tiles.

    Attributes
    ----------
    lon, lat, psi
        ``(N,)`` float64 degrees (healpy's ``rot=(lon, lat, psi)``).
    npix, reso_arcmin
        Tile side in pixels and pixel size (the cutout geometry of training).
    nside_tiles
        Nside of the coarse grid whose pixel centres are the tile centres (RING order).
    """

    lon: np.ndarray
    lat: np.ndarray
    psi: np.ndarray
    npix: int
    reso_arcmin: float
    nside_tiles: int

    def __len__(self) -> int:
        return int(self.lon.size)

    @property
    def half_width_rad(self) -> float:
        """Plane half-width to the outermost pixel centres, ``(npix - 1) / 2 * reso`` (rad)."""
        return 0.5 * (self.npix - 1) * self.reso_arcmin / 60.0 * projection.DTOR


def tile_grid(
    npix: int = 64,
    reso_arcmin: float = 23.4,
    *,
    seed: int,
    coverage: float = 0.75,
    nside_tiles: int | None = None,
) -> Tiles:
    """Tile centres covering the sphere with overlap, and a fixed rotation per tile.

    Parameters
    ----------
    npix, reso_arcmin
        Tile geometry (config ``cutouts.npix``, ``cutouts.reso_arcmin``).
    seed
        Master seed; ``psi`` is uniform in [0, 360) deg from its own stream.
    coverage
        Largest distance from any sky point to its nearest centre, as a fraction of the tile's
        plane half-width (``healpy.max_pixrad`` of the coarse grid bounds that distance).
        0.75 with the paper's 64 x 23.4' tiles gives Nside 8: 768 tiles 7.3 deg apart, each
        point inside ~10 of them.
    nside_tiles
        Use this coarse Nside instead of deriving it from ``coverage``.

    Returns
    -------
    Tiles
    """
    if npix < 2 or reso_arcmin <= 0 or not 0 < coverage <= 1:
        raise InputError(
            f"tile_grid: found npix={npix}, reso_arcmin={reso_arcmin}, coverage={coverage}; "
            "expected npix >= 2, reso_arcmin > 0, 0 < coverage <= 1"
        )
    half_width = np.arctan(0.5 * (npix - 1) * reso_arcmin / 60.0 * projection.DTOR)
    if nside_tiles is None:
        nside_tiles = 1
        while hp.max_pixrad(nside_tiles) > coverage * half_width:
            nside_tiles *= 2
    elif not hp.isnsideok(int(nside_tiles)):
        raise InputError(f"tile_grid: nside_tiles={nside_tiles}; expected a power of 2")
    lon, lat = hp.pix2ang(int(nside_tiles), np.arange(12 * int(nside_tiles) ** 2), lonlat=True)
    stream = np.random.SeedSequence(int(seed), spawn_key=(_TILE_STREAM,))
    psi = 360.0 * np.random.default_rng(stream).random(lon.size)
    log.info("%d tiles (centres: Nside %d), %d x %g'", lon.size, nside_tiles, npix, reso_arcmin)
    return Tiles(lon, lat, psi, int(npix), float(reso_arcmin), int(nside_tiles))


def tile_cutouts(
    stack: np.ndarray,
    mask: np.ndarray,
    tiles: Tiles,
    *,
    interpolation: projection.Interpolation = "nearest",
    chunk: int = projection.DEFAULT_CHUNK,
    threads: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut every tile from a pixel-major stack, masked as the training shards are.

    Parameters
    ----------
    stack
        ``(12 Nside**2, C)`` RING stack (e.g. ``stack.npy``: HI channels then dust), or one map.
    mask
        ``(12 Nside**2,)`` RING, nonzero = masked.
    tiles
        :func:`tile_grid`.
    interpolation
        Sampling of the stack (config ``cutouts.interpolation``); the mask is always sampled
        at the nearest pixel, as in :func:`dustpred.cutouts.sampling.draw_cutouts`.

    Returns
    -------
    cutouts, masked
        ``(N, C, H, W)`` (``(N, H, W)`` for one map) float32 with masked pixels 0, and
        ``(N, H, W)`` uint8, 1 = masked.
    """
    stack = np.asarray(stack)
    mask = np.asarray(mask)
    if mask.shape != (stack.shape[0],):
        raise InputError(
            f"tile_cutouts: mask has shape {mask.shape}; expected ({stack.shape[0]},) like the "
            "stack"
        )
    geometry = {"npix": tiles.npix, "reso_arcmin": tiles.reso_arcmin}
    cutouts = projection.gnomonic_cutouts(
        stack,
        tiles.lon,
        tiles.lat,
        tiles.psi,
        **geometry,
        interpolation=interpolation,
        chunk=chunk,
        threads=threads,
    )
    pix = projection.cutout_pixels(
        int(hp.npix2nside(mask.size)), tiles.lon, tiles.lat, tiles.psi, **geometry
    )
    masked = (mask[pix] != 0).astype(np.uint8)
    keep = masked == 0
    cutouts *= keep if cutouts.ndim == 3 else keep[:, None]
    return cutouts, masked


# --------------------------------------------------------------------------------------
# Cross-fitting folds
# --------------------------------------------------------------------------------------


def region_map(nside: int, split: str, subset: str) -> np.ndarray:
    """``(12 nside**2,)`` bool: RING pixels whose centre lies in ``subset``'s hemisphere.

    The hemispheres of :mod:`dustpred.cutouts.sampling` (``train``: b > 0 or the east side around
    l = 270 deg; ``test``: the other side); pixel centres on the boundary belong to neither.
    """
    if subset not in sampling.SUBSETS:
        raise InputError(f"region_map: subset {subset!r}; expected one of {sampling.SUBSETS}")
    # Both hemispheres from the 'train' axis (rounded: healpy's cos(90 deg) is 6e-17), so a
    # pixel centre on the boundary great circle is in neither, not in both.
    region = sampling.split_region(split, "train", npix=2, reso_arcmin=1.0)
    axis = np.round(region.frame()[0], 12)
    vec = np.asarray(hp.pix2vec(int(nside), np.arange(12 * int(nside) ** 2)))
    side = axis @ vec
    return side > 1e-12 if subset == "train" else side < -1e-12


def seen_pixels(
    nside: int,
    lon: np.ndarray,
    lat: np.ndarray,
    psi: np.ndarray,
    *,
    npix: int = 64,
    reso_arcmin: float = 23.4,
    interpolation: projection.Interpolation = "nearest",
) -> np.ndarray:
    """``(12 nside**2,)`` bool: the HEALPix pixels any of these training cutouts read.

    ``lon, lat, psi``: ``(N,)`` degrees, e.g. the ``lon``/``lat``/``psi`` of a model's training
    shards. Bilinear sampling reads the 4 neighbours of every cutout pixel.
    """
    seen = np.zeros(12 * int(nside) ** 2, dtype=bool)
    plane = projection.plane_vectors(npix, reso_arcmin)
    lon, lat, psi = (np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in (lon, lat, psi))
    geometry = {"npix": npix, "reso_arcmin": reso_arcmin, "plane": plane}
    for lo in range(0, lon.size, projection.DEFAULT_CHUNK):
        sl = slice(lo, lo + projection.DEFAULT_CHUNK)
        if interpolation == "nearest":
            pix = projection.cutout_pixels(nside, lon[sl], lat[sl], psi[sl], **geometry)
        else:
            pix, _ = projection.bilinear_weights(nside, lon[sl], lat[sl], psi[sl], **geometry)
        seen[pix.ravel()] = True
    return seen


def fold_map(
    nside: int,
    split: str,
    *,
    cross_fit: bool = True,
    seen: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Which model provides each pixel of the template.

    Parameters
    ----------
    nside
        Output Nside.
    split
        ``'north_south'`` or ``'east_west'`` (config ``cutouts.split``).
    cross_fit
        False: one model (fold 0) everywhere.
    seen
        Optional ``(seen_0, seen_1)``, ``(12 nside**2,)`` bool each: pixels the training
        cutouts of model 0 / model 1 read (:func:`seen_pixels`). They override the region rule.

    Returns
    -------
    numpy.ndarray
        ``(12 nside**2,)`` int8: 1 on region 0 (north / east: model 1, trained on the other
        side, provides it), 0 elsewhere, then 1 wherever model 0 saw the pixel and 0 wherever
        model 1 did.

    Raises
    ------
    InputError
        When a pixel was seen by both models (the two training sets overlap).
    """
    if not cross_fit:
        return np.zeros(12 * int(nside) ** 2, dtype=np.int8)
    fold = region_map(nside, split, "train").astype(np.int8)
    if seen is not None:
        seen_0, seen_1 = (np.asarray(s, dtype=bool) for s in seen)
        if seen_0.shape != fold.shape or seen_1.shape != fold.shape:
            raise InputError(
                f"fold_map: seen maps have shapes {seen_0.shape}, {seen_1.shape}; expected "
                f"{fold.shape} (Nside {nside})"
            )
        both = seen_0 & seen_1
        if both.any():
            raise InputError(
                f"fold_map ({split}): {int(both.sum())} pixels were read by the training "
                "cutouts of both models; expected disjoint training regions (cross-fitting "
                "needs a model that never saw each pixel)"
            )
        fold[seen_0] = 1
        fold[seen_1] = 0
    return fold


# --------------------------------------------------------------------------------------
# Reassembly (inverse projection)
# --------------------------------------------------------------------------------------
