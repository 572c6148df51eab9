"""Which training cutouts validate: a random share, or whole sky regions held out.

``unet.validation: random`` (the default) holds out a seeded random share
``validation_fraction`` of the training cutouts (:func:`split_random`): the validation
cutouts then lie on the same sky as the training ones, and overlap them. ``regions``
(:func:`split_by_regions`) holds out whole HEALPix regions of Nside
``validation_region_nside`` instead: regions are taken in a seeded random order until the
cutouts centred in them reach the share; those cutouts validate, and every cutout whose
footprint (any of its pixel centres, hence any HEALPix pixel it reads by nearest sampling)
touches a held-out region is left out of training. So no training cutout reads a pixel of
the held-out sky. The price is training sky: the cutouts that touch a held-out region
without being centred in one are used for neither (the log says how many).
"""

from __future__ import annotations

import logging

import healpy as hp
import numpy as np

from dustpred.cutouts import projection
from dustpred.training.resident import derived_seed

log = logging.getLogger(__name__)


def split_random(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``n`` cutouts into sorted (train, validation) index arrays."""
    n_val = int(round(fraction * n)) if fraction > 0 else 0
    n_val = min(max(n_val, 1 if fraction > 0 else 0), n - 1)
    perm = np.random.default_rng(derived_seed(seed, 11)).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def touched_regions(
    lon: np.ndarray, lat: np.ndarray, psi: np.ndarray, *, nside: int, npix: int, reso_arcmin: float
) -> np.ndarray:
    """``(N, npix * npix)`` Nside-``nside`` RING region of every pixel centre of each cutout."""
    plane = projection.plane_vectors(npix, reso_arcmin)
    out = []
    for lo in range(0, len(lon), projection.DEFAULT_CHUNK):
        sl = slice(lo, lo + projection.DEFAULT_CHUNK)
        pix = projection.cutout_pixels(
            nside, lon[sl], lat[sl], psi[sl], npix=npix, reso_arcmin=reso_arcmin, plane=plane
        )
        out.append(pix.reshape(len(pix), -1))
    return np.concatenate(out) if out else np.zeros((0, npix * npix), np.int64)


def split_by_regions(
    lon: np.ndarray,
    lat: np.ndarray,
    psi: np.ndarray,
    *,
    fraction: float,
    nside: int,
    seed: int,
    npix: int,
    reso_arcmin: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train, validation, held-out regions)`` (module docstring).

    Parameters
    ----------
    lon, lat, psi
        ``(N,)`` cutout centres and rotations, degrees (the training shards').
    fraction
        Share of the cutouts to validate on (at least one region is held out).
    nside
        HEALPix Nside of the regions (``unet.validation_region_nside``).
    seed
        Training seed: the order in which regions are held out.
    npix, reso_arcmin
        Cutout geometry.

    Returns
    -------
    train, validation : ndarray
        Sorted indices into the N cutouts; disjoint, and no train cutout touches a held-out
        region.
    regions : ndarray
        Sorted Nside-``nside`` RING indices of the held-out regions.
    """
    lon, lat, psi = (np.asarray(a, dtype=np.float64) for a in (lon, lat, psi))
    if fraction <= 0:
        return np.arange(len(lon)), np.zeros(0, np.int64), np.zeros(0, np.int64)
    centre = hp.ang2pix(nside, lon, lat, lonlat=True)
    candidates, counts = np.unique(centre, return_counts=True)
    order = np.random.default_rng(derived_seed(seed, 12)).permutation(len(candidates))
    target = max(1, int(round(fraction * len(lon))))
    taken = np.cumsum(counts[order]) >= target
    last = int(np.argmax(taken)) if taken.any() else len(order) - 1
    held = np.sort(candidates[order[: last + 1]])
    if len(held) == len(candidates):
        held = held[:-1]  # leave some sky to train on
    # Chunk by chunk: all cutouts' regions at once are N x npix^2 integers (1.6 GB at 50,000).
    touches = np.concatenate(
        [
            np.isin(
                touched_regions(
                    lon[sl], lat[sl], psi[sl], nside=nside, npix=npix, reso_arcmin=reso_arcmin
                ),
                held,
            ).any(axis=1)
            for sl in (
                slice(lo, lo + projection.DEFAULT_CHUNK)
                for lo in range(0, len(lon), projection.DEFAULT_CHUNK)
            )
        ]
    )
    validation = np.flatnonzero(np.isin(centre, held))
    train = np.flatnonzero(~touches)
    log.info(
        "validation on %d held-out Nside-%d regions: %d cutouts validate, %d train, %d touch "
        "a held-out region and are used for neither",
        *(len(held), nside, len(validation), len(train), len(lon) - len(train) - len(validation)),
    )
    return train, validation, held
