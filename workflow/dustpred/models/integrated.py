"""Integrated-intensity model (paper section 2.1): the prediction is the sum of the channels."""

from __future__ import annotations

import numpy as np


def integrated_intensity(inputs: np.ndarray) -> np.ndarray:
    """Sum of the HI channel maps.

    Parameters
    ----------
    inputs : ndarray, shape (..., C, H, W)
        HI channel maps (e.g. K km/s per channel), masked pixels zero.

    Returns
    -------
    ndarray, shape (..., H, W), float32
        ``sum_i I_i`` (summed in float64), in the units of the inputs; masked pixels stay zero.
    """
    return np.asarray(inputs).sum(axis=-3, dtype=np.float64).astype(np.float32)
