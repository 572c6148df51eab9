"""The paper's loss (eq. 2.3): ``lambda [(1 - r50) + (1 - r150)] + mean |T - P|``.

r50 and r150 follow the r(ell) contract of :mod:`dustpred.metrics` exactly (same modes, same
bands, same amplitude floor), computed with a real FFT (half the modes; mode k and -k carry
the same r_k, so the half-plane is weighted to reproduce the full-plane mean). Masked pixels
of the prediction are zeroed before the FFT, as the target's already are.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dustpred.metrics import (
    DEFAULT_SIDE_DEG,
    _weights,
    mode_correlation_torch,
    rfft_multiplicity,
)


def rfft_band_weights(npix: int, side_deg: float = DEFAULT_SIDE_DEG) -> np.ndarray:
    """Weights (npix * (npix // 2 + 1), 2) averaging r_k over the r50 and r150 bands on the
    half-plane of ``torch.fft.rfft2``; equal to the full-plane averages of the metric."""
    _, bands, _ = _weights((npix, npix), float(side_deg))
    full = np.asarray(bands).reshape(npix, npix, 2)
    half = full[:, : npix // 2 + 1] * rfft_multiplicity(npix)[..., None]
    return half.reshape(-1, 2)


def band_correlations(target: torch.Tensor, prediction: torch.Tensor, weights: torch.Tensor):
    """r50 and r150 (B, 2) of maps (B, n, n), given :func:`rfft_band_weights` as a tensor.

    Computed in float32 (float64 if ``weights`` is float64); differentiable; finite where a
    mode's amplitude is ~0 (the amplitude floor of :mod:`dustpred.metrics`).
    """
    dtype = weights.dtype
    rk = mode_correlation_torch(
        torch.fft.rfft2(target.to(dtype)), torch.fft.rfft2(prediction.to(dtype))
    )
    return rk.flatten(-2) @ weights


class PaperLoss(nn.Module):
    """``lam * mean_batch[(1 - r50) + (1 - r150)] + mean |T - P|`` for maps (B, n, n).

    The L1 term is the mean over every pixel of the batch (masked pixels count as 0), in the
    units of the target as given (see ``unet.target_scale`` in :mod:`dustpred.models.inputs`).

    Parameters
    ----------
    npix : int
        Cutout side in pixels.
    side_deg : float
        Cutout side in degrees (sets ell_F, hence which modes are in r50/r150).
    lam : float
        Weight of the correlation term (``unet.loss_lambda``; paper: 30).

    Returns (from ``forward(prediction, target, mask)``)
    -------
    loss : scalar tensor
    r : tensor (B, 2), detached: r50 and r150 per cutout (for monitoring).
    """

    def __init__(self, npix: int, side_deg: float = DEFAULT_SIDE_DEG, *, lam: float) -> None:
        super().__init__()
        self.lam = float(lam)
        w = torch.tensor(rfft_band_weights(npix, side_deg), dtype=torch.float32)
        self.register_buffer("weights", w, persistent=False)

    def terms(self, prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor):
        """The loss's two terms: ``l1 = mean |T - P|`` and ``corr = lam * mean_batch[(1 - r50)
        + (1 - r150)]`` (scalar tensors, differentiable; ``corr + l1`` is the loss), and r
        (B, 2), detached."""
        prediction = prediction.float() * (mask == 0)
        target = target.float()
        r = band_correlations(target, prediction, self.weights)
        corr = self.lam * (2.0 - r.sum(dim=1)).mean()
        l1 = (target - prediction).abs().mean()
        return l1, corr, r.detach()

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor):
        l1, corr, r = self.terms(prediction, target, mask)
        return corr + l1, r
