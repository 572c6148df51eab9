"""Scale and offset of a reassembled template against the target dust (least squares)."""

from __future__ import annotations

import logging

import numpy as np

from dustpred.errors import InputError

log = logging.getLogger(__name__)


def fit_amplitude(
    template: np.ndarray, target: np.ndarray, select: np.ndarray
) -> tuple[float, float]:
    """Least-squares ``(scale, offset)`` minimising ``sum (target - scale * template - offset)**2``.

    Parameters
    ----------
    template, target
        ``(12 Nside**2,)`` maps (target in its unit; the scale carries the unit conversion).
    select
        ``(12 Nside**2,)`` bool: the pixels to fit on, e.g. ``region_map(..., 'train') &
        (mask == 0) & (weight > 0)`` (the training region, unmasked, covered).
    """
    select = np.asarray(select, dtype=bool)
    x = np.asarray(template, dtype=np.float64)[select]
    y = np.asarray(target, dtype=np.float64)[select]
    if x.size < 2 or not np.ptp(x) > 0:
        raise InputError(
            f"fit_amplitude: {x.size} selected pixels, template range {np.ptp(x) if x.size else 0}"
            "; expected at least 2 pixels where the template varies"
        )
    xc = x - x.mean()
    scale = float(xc @ (y - y.mean()) / (xc @ xc))
    return scale, float(y.mean() - scale * x.mean())
