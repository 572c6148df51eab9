"""dustpred.figures.spectrum (Fig. 1): sums over random unmasked pointings of a tiny HI cube."""

import healpy as hp
import numpy as np
import pandas as pd
import pytest

from dustpred.errors import InputError
from dustpred.figures.spectrum import COLUMNS, plot_velocity_spectrum, unmasked_pointings
from dustpred.inputs.healpix_maps import write_healpix_maps
from dustpred.inputs.hi_cube import write_hi_cube

NSIDE = 8
VELOCITIES = np.arange(-100.0, 60.1, 10.0)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("raw")
    npix = 12 * NSIDE**2
    _, lat = hp.pix2ang(NSIDE, np.arange(npix), lonlat=True)
    keep = (np.abs(lat) > 30).astype(np.float32)  # 1 = keep, as in the Planck mask file
    # Spectrum of pixel p: p + channel index where unmasked, 1e6 + channel where masked, so a
    # masked pointing would show in the sums.
    base = np.where(keep > 0, np.arange(npix), 1e6)
    cube = (base[:, None] + np.arange(VELOCITIES.size)[None, :]).astype(np.float32)
    write_hi_cube(d / "hi.fits", NSIDE, VELOCITIES, [cube])
    write_healpix_maps(d / "mask.fits", {"LR72": keep}, nested=False)
    return d, cube, keep


def test_pointings_are_distinct_and_unmasked():
    keep = np.zeros(12 * 4**2)
    keep[::3] = 1
    rng = np.random.default_rng(0)
    pix = unmasked_pointings(keep, 4, 20, rng)
    assert pix.size == 20 and np.unique(pix).size == 20
    assert (keep[pix] == 1).all()
    # At a finer Nside the mask is looked up at each pointing's centre.
    fine = unmasked_pointings(keep, 8, 50, rng)
    theta, phi = hp.pix2ang(8, fine)
    assert (keep[hp.ang2pix(4, theta, phi)] == 1).all()


def test_too_few_unmasked_pixels_is_an_input_error():
    keep = np.zeros(12 * 4**2)
    keep[:5] = 1
    with pytest.raises(InputError, match="spectrum_pointings"):
        unmasked_pointings(keep, 4, 6, np.random.default_rng(0))


def test_spectrum_table_and_figures(inputs, tmp_path):
    d, cube, keep = inputs
    out = {k: tmp_path / f"fig1.{k}" for k in ("png", "pdf", "csv")}
    table = plot_velocity_spectrum(
        d / "hi.fits",
        d / "mask.fits",
        out["png"],
        out["pdf"],
        out["csv"],
        n_pointings=100,
        seed=1,
        velocity_kms=(-64.5, 17.0),
    )
    assert all(out[k].stat().st_size > 0 for k in out)
    on_disk = pd.read_csv(out["csv"])
    assert list(on_disk.columns) == COLUMNS
    np.testing.assert_allclose(on_disk["velocity_kms"], VELOCITIES)
    # The same pointings in every channel: total(c) = sum(p) + 100 c. No masked pointing:
    # the channel-0 total is a sum of 100 distinct unmasked pixel numbers.
    np.testing.assert_allclose(np.diff(table["total_K"]), 100.0)
    base = table["total_K"][0]
    unmasked = np.flatnonzero(keep >= 0.5)
    assert np.sort(unmasked)[:100].sum() <= base <= np.sort(unmasked)[-100:].sum()
    np.testing.assert_allclose(table["mean_K"], table["total_K"] / 100)
    expected = (VELOCITIES >= -64.5) & (VELOCITIES <= 17.0)
    np.testing.assert_array_equal(table["in_range"], expected)
