"""The paper's loss: its r50/r150 equal the metric's, it vanishes for a perfect prediction,
and it stays finite (with finite gradients) where modes have ~zero amplitude."""

import numpy as np
import pytest
import torch

from dustpred.metrics import r50_r150
from dustpred.training.losses import PaperLoss, band_correlations, rfft_band_weights

SIDE = 24.96
LAM = 30.0  # the paper's lambda


@pytest.mark.parametrize("npix", [16, 32, 64])
def test_band_correlations_equal_the_metric(npix):
    rng = np.random.default_rng(npix)
    t = rng.normal(size=(4, npix, npix))
    p = 0.7 * t + rng.normal(size=(4, npix, npix))
    ref = np.stack(r50_r150(t, p, side_deg=SIDE), axis=-1)
    w = torch.tensor(rfft_band_weights(npix, SIDE), dtype=torch.float64)
    got = band_correlations(torch.tensor(t), torch.tensor(p), w).numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_float32_loss_correlations_match_the_metric_to_float32_precision():
    rng = np.random.default_rng(1)
    t = rng.lognormal(size=(3, 32, 32)) * 100.0  # K km/s-like amplitudes
    p = t + 30.0 * rng.normal(size=t.shape)
    mask = np.zeros(t.shape, dtype=np.uint8)
    _, r = PaperLoss(32, SIDE, lam=LAM)(
        torch.tensor(p, dtype=torch.float32),
        torch.tensor(t, dtype=torch.float32),
        torch.tensor(mask),
    )
    ref = np.stack(r50_r150(t, p, side_deg=SIDE), axis=-1)
    np.testing.assert_allclose(r.numpy(), ref, atol=1e-5)


def test_perfect_prediction_has_zero_correlation_term_and_zero_loss():
    t = torch.randn(5, 32, 32)
    mask = torch.zeros(5, 32, 32, dtype=torch.uint8)
    loss, r = PaperLoss(32, SIDE, lam=LAM)(t.clone(), t, mask)
    assert torch.allclose(r, torch.ones_like(r), atol=1e-6)
    assert abs(loss.item()) < 1e-4


def test_rescaled_prediction_leaves_only_the_l1_term():
    t = torch.randn(5, 32, 32)
    mask = torch.zeros(5, 32, 32, dtype=torch.uint8)
    loss, r = PaperLoss(32, SIDE, lam=LAM)(3.0 * t, t, mask)
    assert torch.allclose(r, torch.ones_like(r), atol=1e-6)
    np.testing.assert_allclose(loss.item(), (2.0 * t).abs().mean().item(), rtol=1e-4)


def test_the_terms_are_the_l1_and_the_weighted_correlation_and_add_up_to_the_loss():
    rng = np.random.default_rng(2)
    t = rng.lognormal(size=(4, 32, 32)) * 100.0
    p = t + 40.0 * rng.normal(size=t.shape)
    mask = np.zeros(t.shape, dtype=np.uint8)
    mask[::2, :8, :8] = 1
    t *= mask == 0
    args = [torch.tensor(v, dtype=torch.float32) for v in (p, t)] + [torch.tensor(mask)]
    loss_fn = PaperLoss(32, SIDE, lam=LAM)
    l1, corr, r = loss_fn.terms(*args)
    loss, _ = loss_fn(*args)
    assert loss.item() == (corr + l1).item()  # the same float32 sum, bitwise
    np.testing.assert_allclose(l1.item(), np.abs(t - p * (mask == 0)).mean(), rtol=1e-5)
    r50, r150 = r50_r150(t, p * (mask == 0), side_deg=SIDE)
    np.testing.assert_allclose(corr.item(), LAM * np.mean(2 - r50 - r150), rtol=1e-4)


def test_masked_pixels_of_the_prediction_do_not_matter():
    t = torch.randn(2, 16, 16)
    mask = torch.zeros(2, 16, 16, dtype=torch.uint8)
    mask[:, :4, :4] = 1
    t = t * (mask == 0)
    p = torch.randn(2, 16, 16)
    garbage = p.clone()
    garbage[mask.bool()] = 1e3
    fn = PaperLoss(16, SIDE, lam=LAM)
    a, _ = fn(p * (mask == 0), t, mask)
    b, _ = fn(garbage, t, mask)
    assert torch.equal(a, b)


@pytest.mark.parametrize("kind", ["zeros", "constant"])
def test_loss_and_gradient_are_finite_for_predictions_with_empty_modes(kind):
    t = torch.randn(2, 16, 16)
    p = torch.zeros(2, 16, 16) if kind == "zeros" else torch.full((2, 16, 16), 2.0)
    p.requires_grad_(True)
    loss, _ = PaperLoss(16, SIDE, lam=LAM)(p, t, torch.zeros(2, 16, 16, dtype=torch.uint8))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(p.grad).all()
