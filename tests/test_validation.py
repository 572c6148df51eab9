"""dustpred.training.validation: the validation hold-out, random or by whole sky regions."""

import healpy as hp
import numpy as np
import pytest

from dustpred.training.validation import split_by_regions, split_random, touched_regions

GEOMETRY = {"npix": 16, "reso_arcmin": 90.0}  # 24 deg cutouts, as the paper's 25


@pytest.fixture(scope="module")
def north():
    """400 cutouts centred in the northern cap b > 30 deg, random rotations."""
    rng = np.random.default_rng(4)
    lat = np.degrees(np.arcsin(rng.uniform(0.5, 1.0, 400)))
    return rng.uniform(0, 360, 400), lat, rng.uniform(0, 360, 400)


def test_random_split_is_a_seeded_share_of_the_cutouts():
    train, val = split_random(100, 0.1, seed=5)
    assert len(val) == 10 and not set(train) & set(val) and len(train) + len(val) == 100
    assert np.array_equal(val, split_random(100, 0.1, seed=5)[1])


def test_no_training_cutout_reads_a_held_out_region(north):
    lon, lat, psi = north
    train, val, held = split_by_regions(lon, lat, psi, fraction=0.1, nside=4, seed=1, **GEOMETRY)
    touched = touched_regions(lon, lat, psi, nside=4, **GEOMETRY)
    assert not np.isin(touched[train], held).any()
    # the two pixel sets are disjoint: the held-out regions' pixels and the training ones'
    assert not set(np.unique(touched[train])) & set(held)
    assert not set(train) & set(val)


def test_the_validation_cutouts_are_those_centred_in_held_out_regions(north):
    lon, lat, psi = north
    _, val, held = split_by_regions(lon, lat, psi, fraction=0.1, nside=4, seed=1, **GEOMETRY)
    centre = hp.ang2pix(4, lon, lat, lonlat=True)
    assert np.array_equal(val, np.flatnonzero(np.isin(centre, held)))
    assert len(val) >= 0.1 * len(lon)


def test_regions_cost_the_cutouts_that_touch_them_without_being_centred_in_them(north):
    lon, lat, psi = north
    train, val, _ = split_by_regions(lon, lat, psi, fraction=0.1, nside=4, seed=1, **GEOMETRY)
    assert len(train) + len(val) < len(lon)  # 24 deg cutouts straddle 15 deg regions


def test_the_held_out_regions_follow_the_seed(north):
    lon, lat, psi = north
    one = split_by_regions(lon, lat, psi, fraction=0.1, nside=4, seed=1, **GEOMETRY)[2]
    again = split_by_regions(lon, lat, psi, fraction=0.1, nside=4, seed=1, **GEOMETRY)[2]
    other = split_by_regions(lon, lat, psi, fraction=0.1, nside=4, seed=2, **GEOMETRY)[2]
    assert np.array_equal(one, again) and not np.array_equal(one, other)


def test_no_validation_share_holds_out_no_region(north):
    train, val, held = split_by_regions(*north, fraction=0.0, nside=4, seed=1, **GEOMETRY)
    assert len(train) == 400 and len(val) == 0 and len(held) == 0
