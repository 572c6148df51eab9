"""dustpred.cutouts.sampling: split regions, uniform centres, rejection, determinism per slot."""

import healpy as hp
import numpy as np
import pytest

from dustpred.cutouts.projection import cutout_pixels, cutout_vectors, half_diagonal_deg
from dustpred.cutouts.sampling import (
    candidate_uniforms,
    centres_from_uniforms,
    draw_cutouts,
    split_region,
)
from dustpred.errors import ConfigError, InputError

HALF_DIAG = half_diagonal_deg(64, 23.4)


def region(split, subset, **kw):
    return split_region(split, subset, npix=64, reso_arcmin=23.4, **kw)


def centres(split, subset, n=20000, seed=3, **kw):
    u = candidate_uniforms(seed, subset, np.arange(n), 0)
    return centres_from_uniforms(u, region(split, subset, **kw))


def ks_uniform(x, lo, hi):
    """Kolmogorov-Smirnov distance of x from the uniform distribution on [lo, hi]."""
    x = np.sort((np.asarray(x) - lo) / (hi - lo))
    n = x.size
    return max(np.max(np.arange(1, n + 1) / n - x), np.max(x - np.arange(n) / n))


def test_north_south_keeps_the_half_diagonal_from_the_plane():
    assert region("north_south", "train").min_separation_deg == pytest.approx(17.65, abs=0.005)
    _, lat_train, _ = centres("north_south", "train")
    _, lat_test, _ = centres("north_south", "test")
    assert lat_train.min() >= HALF_DIAG - 1e-9
    assert lat_test.max() <= -HALF_DIAG + 1e-9


def test_north_south_cutouts_lie_wholly_in_their_hemisphere():
    lon, lat, psi = centres("north_south", "train", n=300)
    assert cutout_vectors(lon, lat, psi)[:, 2].min() > 0
    lon, lat, psi = centres("north_south", "test", n=300)
    assert cutout_vectors(lon, lat, psi)[:, 2].max() < 0


def test_centres_uniform_on_the_sphere_inside_the_region():
    # Uniform on the sphere <=> sin(b) uniform: density proportional to cos(b).
    # KS critical distance at alpha = 0.001 for n = 20000 is 1.95 / sqrt(n) = 0.0138.
    lon, lat, psi = centres("north_south", "train")
    crit = 1.95 / np.sqrt(lon.size)
    assert ks_uniform(np.sin(np.radians(lat)), np.sin(np.radians(HALF_DIAG)), 1.0) < crit
    assert ks_uniform(lon, 0.0, 360.0) < crit
    assert ks_uniform(psi, 0.0, 360.0) < crit


def test_east_west_ranges_on_the_equator_match_appendix_c():
    # Appendix C: with a 36 deg buffer, l in (198, 342) (east, train) and (18, 162) (west,
    # test) on the equator.
    assert region("east_west", "train").min_separation_deg == 18.0
    for subset, (lo, hi) in (("train", (198, 342)), ("test", (18, 162))):
        lon, lat, _ = centres("east_west", subset, n=200000)
        equator = np.abs(lat) < 0.5
        assert lon[equator].min() > lo - 0.01 and lon[equator].max() < hi + 0.01
        assert lon[equator].min() < lo + 1.0 and lon[equator].max() > hi - 1.0
        # Everywhere: at least 18 deg from the great circle through l = 0/180 and the poles.
        y = hp.ang2vec(lon, lat, lonlat=True)[:, 1]
        sign = -1 if subset == "train" else 1
        assert (sign * y).min() >= np.sin(np.radians(18.0)) - 1e-12


def test_east_west_without_buffer_still_keeps_the_half_diagonal():
    assert region("east_west", "test", east_west_buffer_deg=0).min_separation_deg == HALF_DIAG
    lon, lat, psi = centres("east_west", "test", n=200, east_west_buffer_deg=0)
    assert cutout_vectors(lon, lat, psi)[:, 1].min() > 0


def test_candidates_depend_only_on_seed_subset_slot_and_attempt():
    whole = candidate_uniforms(5, "train", np.arange(10, 30), 2)
    parts = np.concatenate(
        [candidate_uniforms(5, "train", np.arange(a, b), 2) for a, b in ((10, 13), (13, 30))]
    )
    np.testing.assert_array_equal(whole, parts)
    np.testing.assert_array_equal(candidate_uniforms(5, "train", [29, 10], 2), whole[[19, 0]])
    assert not np.isin(candidate_uniforms(5, "test", np.arange(10, 30), 2), whole).any()
    assert not np.isin(candidate_uniforms(6, "train", np.arange(10, 30), 2), whole).any()
    assert not np.isin(candidate_uniforms(5, "train", np.arange(10, 30), 3), whole).any()


def band_mask(nside, b_lo, b_hi):
    """1 = masked for galactic latitudes in [b_lo, b_hi]."""
    _, lat = hp.pix2ang(nside, np.arange(12 * nside**2), lonlat=True)
    return ((lat >= b_lo) & (lat <= b_hi)).astype(np.uint8)


def draw(mask, slots, **kw):
    args = dict(
        region=region("north_south", "train"), seed=11, subset="train", npix=16, reso_arcmin=90.0
    )
    args.update(kw)
    return draw_cutouts(mask, np.asarray(slots), **args)


def test_rejects_cutouts_above_the_masked_fraction():
    mask = band_mask(32, 20.0, 60.0)
    d = draw(mask, np.arange(60), max_masked_fraction=0.3)
    assert d.masked_fraction.max() <= 0.3
    assert d.attempts.max() > 1  # the band forces redraws
    # The reported mask and fraction are those of the accepted cutout's own pixels.
    pix = cutout_pixels(32, d.lon, d.lat, d.psi, npix=16, reso_arcmin=90.0).reshape(60, -1)
    np.testing.assert_array_equal(d.pixels, pix)
    np.testing.assert_array_equal(d.masked, mask[pix] == 1)
    np.testing.assert_allclose(d.masked_fraction, d.masked.mean(axis=1))


def test_draws_independent_of_how_slots_are_grouped():
    mask = band_mask(32, 20.0, 60.0)
    whole = draw(mask, np.arange(40), max_masked_fraction=0.3)
    a, b = (
        draw(mask, np.arange(17), max_masked_fraction=0.3),
        draw(mask, np.arange(17, 40), max_masked_fraction=0.3),
    )
    for name in ("lon", "lat", "psi", "pixels", "masked_fraction", "attempts"):
        np.testing.assert_array_equal(
            getattr(whole, name), np.concatenate([getattr(a, name), getattr(b, name)])
        )


def test_unsatisfiable_split_fails_clearly():
    mask = band_mask(16, 0.0, 90.0)  # the whole northern hemisphere masked
    with pytest.raises(InputError, match="max_masked_fraction"):
        draw(mask, np.arange(3), max_draws=5)


def test_unknown_split_is_a_config_error():
    with pytest.raises(ConfigError, match="cutouts.split"):
        region("left_right", "train")


def test_the_crossfit_subset_is_drawn_in_the_test_region_from_its_own_stream():
    from dustpred.cutouts.sampling import candidate_uniforms, split_region

    kwargs = {"npix": 64, "reso_arcmin": 23.4}
    for split in ("north_south", "east_west"):
        assert split_region(split, "crossfit", **kwargs) == split_region(split, "test", **kwargs)
    slots = np.arange(10)
    crossfit = candidate_uniforms(3, "crossfit", slots, 0)
    assert not np.array_equal(crossfit, candidate_uniforms(3, "test", slots, 0))
    assert not np.array_equal(crossfit, candidate_uniforms(3, "train", slots, 0))
