"""dustpred.evaluation.resampling: region labels, block bootstrap and jackknife errors, win
fractions.

References are closed forms: for the mean over R equally filled regions, the ideal block
bootstrap sd is ``sd_0(region means) / sqrt(R)`` (ddof 0) and the delete-one-region
jackknife error is ``sd_1(region means) / sqrt(R)`` (ddof 1). The Monte Carlo error of a
bootstrap sd from B resamples is ``1 / sqrt(2 B)`` relative.
"""

import math

import healpy as hp
import numpy as np
import pytest

from dustpred.errors import InputError
from dustpred.evaluation.resampling import (
    Estimate,
    block_bootstrap,
    block_jackknife,
    bootstrap_replicates,
    effective_n,
    effective_patches,
    estimate,
    naive_error,
    region_labels,
    win_fraction,
)


def clustered(rng, n_regions, per_region=10, within=0.1):
    """Values (R * m,) sharing a unit-variance effect per region, plus ``within`` noise;
    labels (R * m,) of their regions."""
    labels = np.repeat(np.arange(n_regions), per_region)
    values = np.repeat(rng.normal(size=n_regions), per_region)
    return values + within * rng.normal(size=labels.size), labels


def south_centres(rng, n):
    """n centres uniform on the sphere's cap b <= -17.65 deg (the paper's test region)."""
    z = rng.uniform(-1.0, -math.sin(math.radians(17.65)), n)
    return rng.uniform(0.0, 360.0, n), np.degrees(np.arcsin(z))


def smooth_sky(rng, lon, lat, n_waves=50, wavenumber=4.0):
    """A smooth random field on the sphere at (lon, lat): unit-variance sum of plane waves
    cos(kappa n.x + phase) (correlation length ~ 1 / kappa rad = 14 deg), mimicking the
    correlation of r between overlapping 25 deg cutouts."""
    x = hp.ang2vec(lon, lat, lonlat=True)
    normals = rng.normal(size=(n_waves, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    phase = rng.uniform(0, 2 * np.pi, n_waves)
    return np.sqrt(2.0 / n_waves) * np.cos(wavenumber * x @ normals.T + phase).sum(axis=1)


# --- regions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("nside", [2, 4])
def test_region_of_a_pixel_centre_is_that_pixel(nside):
    pix = np.arange(hp.nside2npix(nside))
    lon, lat = hp.pix2ang(nside, pix, lonlat=True)
    np.testing.assert_array_equal(region_labels(lon, lat, nside), pix)
    np.testing.assert_array_equal(region_labels(lon + 360.0, lat, nside), pix)


def test_bad_centres_or_nside_raise_input_error():
    with pytest.raises(InputError, match="nside"):
        region_labels(np.zeros(3), np.zeros(3), nside=3)
    with pytest.raises(InputError, match="shape"):
        region_labels(np.zeros(3), np.zeros(2))
    with pytest.raises(InputError, match="latitude"):
        region_labels(np.zeros(1), np.array([95.0]))


def test_effective_patches_counts_equal_regions_and_discounts_unequal_ones():
    assert effective_patches(np.repeat(np.arange(7), 13)) == pytest.approx(7.0, abs=1e-12)
    # 97 cutouts in one region and one in each of 3 others: 100^2 / (97^2 + 3) = 1.06
    labels = np.r_[np.zeros(97), 1, 2, 3]
    assert effective_patches(labels) == pytest.approx(1e4 / (97**2 + 3), rel=1e-12)


def test_the_papers_test_region_holds_about_18_effective_nside_2_patches():
    """The cap b <= -17.65 deg (14,400 deg^2) over Nside-2 pixels (859 deg^2): 20-23 regions
    touched, 18.4-19.1 effective patches for 1,000 uniform centres (5 seeds when written)."""
    lon, lat = south_centres(np.random.default_rng(0), 1000)
    labels = region_labels(lon, lat, nside=2)
    assert 20 <= np.unique(labels).size <= 23
    assert 17.0 < effective_patches(labels) < 20.0


# --- block bootstrap ----------------------------------------------------------------------------


def test_bootstrap_of_the_mean_matches_the_ideal_bootstrap_of_region_means():
    """B = 4000 resamples: Monte Carlo sd 1.1 %; tolerance 5 %."""
    values, labels = clustered(np.random.default_rng(1), 30)
    means = values.reshape(30, 10).mean(axis=1)
    ideal = means.std(ddof=0) / math.sqrt(30)
    assert block_bootstrap(values, labels, n_boot=4000, seed=2) == pytest.approx(ideal, rel=0.05)


def test_bootstrap_errors_shrink_as_one_over_sqrt_of_independent_patches():
    """R independent patches of 10 cutouts (unit patch effect): error ~ sqrt((R-1)/R) / sqrt(R).

    Averaged over 20 data sets, the error's relative sd is ~ 1 / sqrt(40 (R - 1)) (3-4 % at
    R = 16, 1 % at 256). Levels: within 12 %; log-log slope over R = 16..256: -0.5 within 0.06
    (4 sd of the slope's 0.014)."""
    rng = np.random.default_rng(3)
    sizes = np.array([16, 64, 256])
    mean_errors = []
    for n_regions in sizes:
        errors = [
            block_bootstrap(*clustered(rng, n_regions), n_boot=500, seed=i) for i in range(20)
        ]
        mean_errors.append(np.mean(errors) * math.sqrt(n_regions / (n_regions - 1)))
    mean_errors = np.array(mean_errors)
    np.testing.assert_allclose(mean_errors * np.sqrt(sizes), 1.0, rtol=0.12)
    slope = np.polyfit(np.log(sizes), np.log(mean_errors), 1)[0]
    assert slope == pytest.approx(-0.5, abs=0.06)


def test_clustered_cutouts_have_block_errors_sqrt_m_times_the_naive_ones():
    """Regions of m = 10 identical-but-for-0.1-noise cutouts: naive errors are too small by
    sqrt(10) = 3.16 (design effect); 40 data sets of 64 regions give 3.13-3.15 when written.
    Independent cutouts (same labels): ratio 1 (0.98-0.99). Tolerance 10 % on both."""
    rng = np.random.default_rng(4)
    ratios, ratios_independent = [], []
    for i in range(40):
        values, labels = clustered(rng, 64)
        ratios.append(block_bootstrap(values, labels, n_boot=500, seed=i) / naive_error(values))
        noise = rng.normal(size=labels.size)
        ratios_independent.append(
            block_bootstrap(noise, labels, n_boot=500, seed=i) / naive_error(noise)
        )
    assert np.mean(ratios) == pytest.approx(math.sqrt(10), rel=0.10)
    assert np.mean(ratios_independent) == pytest.approx(1.0, rel=0.10)


@pytest.mark.parametrize("nside", [2, 4])
def test_overlapping_cutouts_on_a_smooth_sky_have_block_errors_above_naive(nside):
    """1,000 centres in the paper's test region, r = smooth sky (14 deg correlation) + equal
    white noise: block / naive = 3.6-4.9 at Nside 2 (43-77 effective samples) and 2.1-2.8
    at Nside 4 (132-223; its smaller regions are correlated with their neighbours) over 5
    seeds when written; asserted > 1.8 and < 320 effective samples. With white noise only,
    the same labels give 0.75-1.1, asserted within 0.6-1.5."""
    rng = np.random.default_rng(5)
    lon, lat = south_centres(rng, 1000)
    labels = region_labels(lon, lat, nside)
    values = smooth_sky(rng, lon, lat) + rng.normal(size=lon.size)
    block = block_bootstrap(values, labels, seed=6)
    naive = naive_error(values)
    assert block / naive > 1.8
    assert effective_n(lon.size, naive, block) < 320.0  # of 1,000 cutouts
    noise = rng.normal(size=lon.size)
    assert 0.6 < block_bootstrap(noise, labels, seed=6) / naive_error(noise) < 1.5


def test_same_seed_gives_the_same_error_and_another_seed_a_close_one():
    values, labels = clustered(np.random.default_rng(7), 40)
    first = block_bootstrap(values, labels, n_boot=1000, seed=11)
    assert block_bootstrap(values, labels, n_boot=1000, seed=11) == first  # bit for bit
    other = block_bootstrap(values, labels, n_boot=1000, seed=12)
    assert other != first and other == pytest.approx(first, rel=0.10)  # MC sd 2.2 %


def test_columns_are_resampled_together_and_match_single_columns():
    rng = np.random.default_rng(8)
    values, labels = clustered(rng, 25)
    stacked = np.stack([values, 2.0 * values + 1.0, -values], axis=1)
    errors = block_bootstrap(stacked, labels, n_boot=300, seed=9)
    single = block_bootstrap(values, labels, n_boot=300, seed=9)
    assert errors.shape == (3,)
    np.testing.assert_allclose(errors, [single, 2.0 * single, single], rtol=1e-12)


def test_a_callable_statistic_sees_the_same_resamples_as_the_fast_mean():
    values, labels = clustered(np.random.default_rng(10), 12)
    fast = bootstrap_replicates(values, labels, n_boot=200, seed=3)
    slow = bootstrap_replicates(values, labels, n_boot=200, seed=3, statistic=np.mean)
    assert fast.shape == (200,)
    np.testing.assert_allclose(slow, fast, atol=1e-12)
    median = block_bootstrap(values, labels, n_boot=200, seed=3, statistic=np.median)
    assert 0 < median < 1.0


def test_one_region_or_mismatched_labels_raise_input_error():
    with pytest.raises(InputError, match="at least 2 regions"):
        block_bootstrap(np.arange(5.0), np.zeros(5))
    with pytest.raises(InputError, match="labels"):
        block_bootstrap(np.arange(5.0), np.arange(4))
    with pytest.raises(InputError, match="at least 2 regions"):
        block_jackknife(np.arange(5.0), np.ones(5))


# --- jackknife, naive, summaries ----------------------------------------------------------------


def test_jackknife_of_equal_regions_is_the_standard_error_of_region_means():
    values, labels = clustered(np.random.default_rng(12), 17, per_region=6)
    means = values.reshape(17, 6).mean(axis=1)
    expected = means.std(ddof=1) / math.sqrt(17)
    assert block_jackknife(values, labels) == pytest.approx(expected, rel=1e-12)
    stacked = np.stack([values, 3.0 * values], axis=1)
    np.testing.assert_allclose(block_jackknife(stacked, labels), [expected, 3 * expected])


def test_naive_error_is_sd_over_sqrt_n():
    values = np.array([1.0, 2.0, 4.0, 7.0])
    assert naive_error(values) == pytest.approx(np.std(values, ddof=1) / 2.0, rel=1e-15)


def test_estimate_bundles_mean_both_errors_and_patches_and_formats_them():
    values, labels = clustered(np.random.default_rng(13), 20)
    est = estimate(values, labels, n_boot=500, seed=1)
    assert est.value == pytest.approx(values.mean(), rel=1e-15)
    assert est.block_error == block_bootstrap(values, labels, n_boot=500, seed=1)
    assert est.naive_error == pytest.approx(naive_error(values), rel=1e-15)
    assert est.n_patches == pytest.approx(20.0)
    text = Estimate(0.5124, 0.0341, 0.0052, 17.23).format()
    assert text == "0.512 +- 0.034 (17.2 effective patches; naive +- 0.005)"


def test_win_fraction_of_regions_that_win_or_lose_together():
    """20 regions of 50 cutouts, each region winning entirely or not at all: the fraction
    f = wins / 1000; naive error sqrt(f (1 - f) / 1000) exactly; block error the ideal
    sqrt(f (1 - f) / 20) within 5 % (B = 4000, MC sd 1.1 %), sqrt(50) = 7 times naive."""
    rng = np.random.default_rng(14)
    labels = np.repeat(np.arange(20), 50)
    region_wins = rng.random(20) < 0.7
    reference = rng.normal(size=1000)
    model = reference + np.where(region_wins[labels], 0.1, -0.1)
    model[labels == labels[0]] = reference[labels == labels[0]]  # a tie is not a win
    wins = int(region_wins[1:].sum()) * 50
    result = win_fraction(model, reference, labels, n_boot=4000, seed=15)
    f = wins / 1000
    assert (result.wins, result.n, result.fraction) == (wins, 1000, f)
    assert result.naive_error == pytest.approx(math.sqrt(f * (1 - f) / 1000), rel=1e-12)
    assert result.block_error == pytest.approx(math.sqrt(f * (1 - f) / 20), rel=0.05)
    assert result.n_patches == pytest.approx(20.0)


def test_win_fraction_rejects_unequal_inputs():
    with pytest.raises(InputError, match="reference"):
        win_fraction(np.zeros(4), np.zeros(5), np.arange(4))
