"""Sky splits, cutout centres and rotations (paper, section 2 and appendix C).

Splits
------
``north_south`` (the paper's main split): train on the northern galactic hemisphere, test on
the southern one. A cutout must lie wholly in its hemisphere, so centres keep
``|b| >= half-diagonal`` (:func:`dustpred.cutouts.projection.half_diagonal_deg`, 17.65 deg for the
paper's 64 x 23.4' cutouts).

``east_west`` (appendix C): the hemispheres either side of the great circle through the
galactic poles and ``l = 0, 180 deg``, with a buffer of ``east_west_buffer_deg`` (36 deg)
between them: centres keep an angular distance of at least ``max(buffer / 2, half-diagonal)``
from that circle, i.e. ``198 < l < 342`` deg (east, training) and ``18 < l < 162`` deg (west,
test) on the equator, as the paper lists them.

Both regions are spherical caps (around ``b = +-90`` deg, or around ``l = 270`` / ``90`` deg on
the equator), so centres are drawn uniformly on the sphere inside the cap directly: the
density is proportional to ``cos b`` (the paper's "cos(DEC) distribution") with no geometric
rejection. The rotation ``psi`` is uniform in [0, 360) deg.

Determinism
-----------
Every cutout has a global slot number ``j`` (0..n-1 per subset). The candidates for slot ``j``
come from a counter-based stream: attempt ``a`` uses the four uniforms of the Philox block at
counter ``(j, a)`` under a key derived from ``(seed, subset)``. A slot takes its first candidate
whose masked fraction is at most ``max_masked_fraction``. A cutout therefore depends only on
the seed, the subset and its slot, not on how the slots are split into shards (K = 1 and
K = 4 give identical cutouts), and raising ``n_train`` appends cutouts without changing the
existing ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import healpy as hp
import numpy as np

from dustpred.cutouts import projection
from dustpred.errors import ConfigError, InputError

log = logging.getLogger(__name__)

SPLITS = ("north_south", "east_west")
#: The two regions of a split, named by the subset drawn there for the experiment's models.
SUBSETS = ("train", "test")
#: Every subset drawn: ``crossfit`` is the cross-fit models' training set, drawn in the test
#: region with the training set's count and rules (template cross-fitting).
DRAWN_SUBSETS = (*SUBSETS, "crossfit")
REGION_OF = {"train": "train", "test": "test", "crossfit": "test"}
#: Mixed into the seed so the streams of the subsets are independent.
_SUBSET_CODE = {"train": 1, "test": 2, "crossfit": 3}

# (cap axis as (l, b) in degrees) of the training and test regions of each split.
_AXES = {
    "north_south": {"train": (0.0, 90.0), "test": (0.0, -90.0)},
    "east_west": {"train": (270.0, 0.0), "test": (90.0, 0.0)},
}


@dataclass(frozen=True)
class Region:
    """Where a subset's cutout centres may lie: a spherical cap.

    Attributes
    ----------
    axis_lon, axis_lat
        Centre of the cap, degrees.
    min_separation_deg
        Minimum angular distance of a centre from the split's boundary great circle; the cap
        radius is ``90 - min_separation_deg``.
    """

    axis_lon: float
    axis_lat: float
    min_separation_deg: float

    def frame(self) -> np.ndarray:
        """``(3, 3)``: rows ``axis, e1, e2``, an orthonormal frame around the cap's axis."""
        axis = hp.ang2vec(self.axis_lon, self.axis_lat, lonlat=True)
        helper = np.array([0.0, 0.0, 1.0]) if abs(axis[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
        e1 = np.cross(helper, axis)
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(axis, e1)
        return np.stack([axis, e1, e2])


def split_region(
    split: str,
    subset: str,
    *,
    npix: int,
    reso_arcmin: float,
    east_west_buffer_deg: float = 36.0,
) -> Region:
    """The cap where ``subset`` (train, test or crossfit: the test region) centres of
    ``split`` lie (see module docstring)."""
    if split not in SPLITS:
        raise ConfigError(f"config key 'cutouts.split': found {split!r}; expected one of {SPLITS}")
    if subset not in DRAWN_SUBSETS:
        raise ConfigError(f"subset: found {subset!r}; expected one of {DRAWN_SUBSETS}")
    separation = projection.half_diagonal_deg(npix, reso_arcmin)
    if split == "east_west":
        separation = max(separation, 0.5 * float(east_west_buffer_deg))
    if separation >= 90.0:
        raise ConfigError(
            f"config keys 'cutouts.npix/reso_arcmin/east_west_buffer_deg': centres must keep "
            f"{separation:.2f} deg from the split boundary; expected less than 90 deg "
            "(cutouts smaller than a hemisphere)"
        )
    lon, lat = _AXES[split][REGION_OF[subset]]
    return Region(lon, lat, separation)


def candidate_uniforms(seed: int, subset: str, slots: np.ndarray, attempt: int) -> np.ndarray:
    """The four uniforms in [0, 1) of candidate ``attempt`` of each slot.

    Parameters
    ----------
    seed
        Master seed (config ``seed``).
    subset
        ``'train'`` or ``'test'``.
    slots
        ``(m,)`` global slot numbers (any order, repeats allowed).
    attempt
        Candidate number (0, 1, ...).

    Returns
    -------
    numpy.ndarray
        ``(m, 4)`` float64: the Philox block at counter ``(slot, attempt)``.
    """
    slots = np.asarray(slots, dtype=np.int64).reshape(-1)
    out = np.empty((slots.size, 4))
    if slots.size == 0:
        return out
    key = np.random.SeedSequence(int(seed), spawn_key=(_SUBSET_CODE[subset],)).generate_state(
        2, np.uint64
    )
    # Philox counter word 0 = slot, word 1 = attempt: one generator call covers a run of
    # consecutive slots (one 4 x 64-bit block each).
    lo, hi = int(slots.min()), int(slots.max())
    gen = np.random.Generator(np.random.Philox(key=key, counter=[lo, int(attempt), 0, 0]))
    block = gen.random(4 * (hi - lo + 1)).reshape(-1, 4)
    out[:] = block[slots - lo]
    return out


def centres_from_uniforms(u: np.ndarray, region: Region) -> tuple[np.ndarray, ...]:
    """Map candidate uniforms to centres uniform on the sphere inside ``region``.

    Parameters
    ----------
    u
        ``(m, 4)`` uniforms in [0, 1) (:func:`candidate_uniforms`; the 4th is unused).

    Returns
    -------
    lon, lat, psi
        ``(m,)`` degrees; ``lon`` in [0, 360), ``psi`` in [0, 360).
    """
    sin_min = np.sin(np.radians(region.min_separation_deg))
    # cos(angle to the cap axis) uniform in [sin_min, 1]: uniform in area inside the cap.
    cos_t = 1.0 - u[:, 0] * (1.0 - sin_min)
    sin_t = np.sqrt(np.clip(1.0 - cos_t * cos_t, 0.0, None))
    phi = 2.0 * np.pi * u[:, 1]
    axis, e1, e2 = region.frame()
    vec = (
        cos_t[:, None] * axis
        + (sin_t * np.cos(phi))[:, None] * e1
        + (sin_t * np.sin(phi))[:, None] * e2
    )
    lon = np.degrees(np.arctan2(vec[:, 1], vec[:, 0])) % 360.0
    lat = np.degrees(np.arcsin(np.clip(vec[:, 2], -1.0, 1.0)))
    psi = 360.0 * u[:, 2]
    return lon, lat, psi


@dataclass
class Draws:
    """Accepted cutouts of a run of slots.

    Attributes
    ----------
    slots
        ``(m,)`` int64 global slot numbers.
    lon, lat, psi
        ``(m,)`` float64 degrees.
    pixels
        ``(m, npix * npix)`` int64 RING pixel of each cutout pixel (nearest sampling).
    masked
        ``(m, npix * npix)`` bool, True where the nearest HEALPix pixel is masked.
    masked_fraction
        ``(m,)`` float64, mean of ``masked``.
    attempts
        ``(m,)`` int64 candidates drawn for each slot (1 = first accepted).
    """

    slots: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    psi: np.ndarray
    pixels: np.ndarray
    masked: np.ndarray
    masked_fraction: np.ndarray
    attempts: np.ndarray


def draw_cutouts(
    mask: np.ndarray,
    slots: np.ndarray,
    *,
    region: Region,
    seed: int,
    subset: str,
    npix: int = 64,
    reso_arcmin: float = 23.4,
    max_masked_fraction: float = 0.7,
    max_draws: int = 1000,
    plane: np.ndarray | None = None,
) -> Draws:
    """Draw the accepted cutout of each slot (see module docstring).

    Parameters
    ----------
    mask
        ``(12 Nside**2,)`` RING mask, nonzero = masked.
    slots
        ``(m,)`` distinct global slot numbers.
    region
        :func:`split_region` of the subset.
    max_masked_fraction
        A candidate is rejected when more than this fraction of its pixels is masked.
    max_draws
        Candidates per slot before giving up.

    Raises
    ------
    InputError
        When a slot finds no acceptable candidate in ``max_draws`` draws: the split (with this
        mask) cannot supply the requested cutouts.
    """
    mask = np.asarray(mask)
    nside = int(hp.npix2nside(mask.size))
    slots = np.asarray(slots, dtype=np.int64).reshape(-1)
    m, p = slots.size, npix * npix
    if plane is None:
        plane = projection.plane_vectors(npix, reso_arcmin)
    draws = Draws(
        slots=slots.copy(),
        lon=np.empty(m),
        lat=np.empty(m),
        psi=np.empty(m),
        pixels=np.empty((m, p), dtype=np.int64),
        masked=np.empty((m, p), dtype=bool),
        masked_fraction=np.empty(m),
        attempts=np.zeros(m, dtype=np.int64),
    )
    pending = np.arange(m)
    for attempt in range(int(max_draws)):
        if pending.size == 0:
            break
        u = candidate_uniforms(seed, subset, slots[pending], attempt)
        lon, lat, psi = centres_from_uniforms(u, region)
        pix = projection.cutout_pixels(
            nside, lon, lat, psi, npix=npix, reso_arcmin=reso_arcmin, plane=plane
        ).reshape(-1, p)
        masked = mask[pix] != 0
        fraction = masked.mean(axis=1)
        ok = fraction <= max_masked_fraction
        idx = pending[ok]
        draws.lon[idx], draws.lat[idx], draws.psi[idx] = lon[ok], lat[ok], psi[ok]
        draws.pixels[idx] = pix[ok]
        draws.masked[idx] = masked[ok]
        draws.masked_fraction[idx] = fraction[ok]
        draws.attempts[idx] = attempt + 1
        pending = pending[~ok]
    if pending.size:
        raise InputError(
            f"cutout sampling ({subset}, centres within {90 - region.min_separation_deg:.2f} deg "
            f"of (l, b) = ({region.axis_lon:g}, {region.axis_lat:g})): {pending.size} of {m} "
            f"cutouts found no candidate with masked fraction <= {max_masked_fraction} in "
            f"{max_draws} draws each; expected the split to supply them. The mask leaves too "
            "little of this region unmasked: lower n_train/n_test, raise "
            "cutouts.max_masked_fraction or cutouts.max_draws, or use another split"
        )
    return draws
