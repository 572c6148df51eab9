"""dustpred.template.uncertainty: the template's error calibrated on the other fold's residuals.

The sky is Nside 64 with a log-normal "prediction" ``I`` and a residual of known size: a unit
Gaussian times ``sigma(I) = 0.1 + 0.2 I``, so a calibrated 1-sigma error is ``sigma(I)`` and
covers 68.27 % of the pixels. The folds are the two hemispheres (``FOLD = 1`` in the north,
as the template's cross-fitting has it), with a masked band around the plane.
"""

from __future__ import annotations

import healpy as hp
import numpy as np
import pytest

from dustpred.template import uncertainty as unc
from dustpred.template.tiling import fold_map

NSIDE = 64
NPIX = 12 * NSIDE**2


def true_sigma(prediction):
    return 0.1 + 0.2 * prediction


@pytest.fixture(scope="module")
def sky():
    rng = np.random.default_rng(0)
    field = hp.smoothing(rng.normal(size=NPIX), fwhm=np.radians(3.0))
    prediction = np.exp(field / field.std())
    target = prediction + true_sigma(prediction) * rng.normal(size=NPIX)
    fold = fold_map(NSIDE, "north_south")
    theta, _ = hp.pix2ang(NSIDE, np.arange(NPIX))
    usable = np.abs(np.degrees(theta) - 90.0) > 10.0
    return prediction, target, fold, usable


def test_calibration_and_evaluation_pixels_of_a_fold_are_disjoint(sky):
    _, _, fold, usable = sky
    for k in (0, 1):
        calibration = unc.calibration_pixels(fold, usable, k)
        evaluation = unc.evaluation_pixels(fold, usable, k)
        assert calibration.any() and evaluation.any()
        assert not (calibration & evaluation).any()
        assert not (evaluation & (fold != k)).any()


@pytest.mark.parametrize("fwhm_deg", [None, 5.0])
def test_error_of_a_fold_does_not_depend_on_the_targets_of_its_own_pixels(sky, fwhm_deg):
    prediction, target, fold, usable = sky
    before = unc.cross_calibrated_error(
        prediction, target, fold, usable, bins=10, fwhm_deg=fwhm_deg
    )
    changed = np.where(
        fold == 0, target + 50.0 * np.random.default_rng(1).normal(size=NPIX), target
    )
    after = unc.cross_calibrated_error(
        prediction, changed, fold, usable, bins=10, fwhm_deg=fwhm_deg
    )
    own = fold == 0
    assert np.isfinite(before[own & usable]).mean() > 0.5
    np.testing.assert_array_equal(after[own], before[own])
    assert not np.allclose(after[fold == 1], before[fold == 1], equal_nan=True)


def test_error_model_recovers_a_residual_size_that_grows_with_the_prediction(sky):
    prediction, target, fold, usable = sky
    error = unc.cross_calibrated_error(prediction, target, fold, usable, bins=20)
    inner = usable & (prediction > np.quantile(prediction, 0.05))
    inner &= prediction < np.quantile(prediction, 0.95)
    # 20 bins of ~1,000 pixels: the 68 % quantile of each to ~4 %, and the interpolation.
    np.testing.assert_allclose(error[inner], true_sigma(prediction[inner]), rtol=0.1)


def test_gaussian_residuals_of_the_calibrated_size_give_the_nominal_coverage(sky):
    prediction, target, fold, usable = sky
    errors = {
        "pixel": unc.cross_calibrated_error(prediction, target, fold, usable, bins=20),
        "smoothed": unc.cross_calibrated_error(
            prediction, target, fold, usable, bins=20, fwhm_deg=5.0
        ),
    }
    table = unc.coverage_table(
        prediction, target, errors, fold, usable, split="north_south", fwhm_deg=5.0
    )
    whole = table[table["region"] == -1]
    assert set(whole["hemisphere"]) == {"north", "south"}
    assert set(whole["scale"]) == {"pixel", "smoothed"}
    pixel = whole[whole["scale"] == "pixel"]
    # ~20,000 independent pixels per hemisphere: binomial scatter 0.3 %, calibration ~1 %.
    np.testing.assert_allclose(pixel["coverage"], pixel["level"], atol=0.03)
    # Smoothed by 5 deg the residual keeps ~200 independent patches per hemisphere (~3 %).
    one_sigma = whole[(whole["scale"] == "smoothed") & np.isclose(whole["level"], unc.ONE_SIGMA)]
    np.testing.assert_allclose(one_sigma["coverage"], unc.ONE_SIGMA, atol=0.1)


def test_an_error_too_small_by_half_fails_the_coverage_check(sky):
    prediction, target, fold, usable = sky
    half = 0.5 * unc.cross_calibrated_error(prediction, target, fold, usable, bins=20)
    table = unc.coverage_table(
        prediction,
        target,
        {"pixel": half, "smoothed": half},
        fold,
        usable,
        split="north_south",
        fwhm_deg=5.0,
    )
    rows = table[
        (table["scale"] == "pixel")
        & (table["region"] == -1)
        & np.isclose(table["level"], unc.ONE_SIGMA)
    ]
    # P(|x| <= 0.5) = 0.38 for a unit Gaussian: far outside 68 % +- 5 %.
    assert (np.abs(rows["coverage"] - unc.ONE_SIGMA) > 0.05).all()
    np.testing.assert_allclose(rows["coverage"], 0.383, atol=0.03)


def test_regions_with_too_few_pixels_are_left_out_of_the_coverage_table(sky):
    prediction, target, fold, usable = sky
    error = unc.cross_calibrated_error(prediction, target, fold, usable, bins=20)
    table = unc.coverage_table(
        prediction,
        target,
        {"pixel": error, "smoothed": error},
        fold,
        usable,
        split="north_south",
        fwhm_deg=5.0,
        min_region_pixels=1000,
    )
    regions = table[table["region"] >= 0]
    assert len(regions) and (regions["n_pixels"] >= 1000).all()
    # An Nside-2 region holds 1,024 pixels at Nside 64: only regions wholly usable remain.
    assert regions["region"].nunique() < 48


def test_smoothing_within_a_set_ignores_every_value_outside_it(sky):
    prediction, _, fold, usable = sky
    within = usable & (fold == 0)
    a, valid = unc.smooth_within(prediction, within, 5.0)
    b, valid_b = unc.smooth_within(np.where(within, prediction, 1e6), within, 5.0)
    np.testing.assert_array_equal(valid, valid_b)
    np.testing.assert_allclose(a[valid], b[valid], rtol=1e-9)
    assert valid.any() and not (valid & ~within).any()


def test_too_few_calibration_pixels_are_refused():
    with pytest.raises(unc.InputError, match="at least 10"):
        unc.fit_error_model(np.ones(5), np.ones(5), bins=3)
