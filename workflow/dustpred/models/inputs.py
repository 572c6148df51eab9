"""The U-Net's input normalisation, fitted on shards read by
:class:`dustpred.cutouts.shards.ShardSet`.

Normalisation (statistics from the training set, stored with the model):

- ``input_kind = "cube"``: every channel ``I_v`` becomes ``asinh(I_v / a)`` with one
  softening ``a`` (the mean |I| over unmasked pixels and channels), then is standardised per
  channel. asinh is linear for faint channels (noise) and logarithmic for bright ones, so
  channels of very different brightness end up on comparable scales.
- ``input_kind = "moments"``: three maps, ``asinh(M0 / a)``, ``M1 / M0`` and
  ``sqrt(M2 / M0 - (M1 / M0)^2)`` with ``Mm = sum_v v^m I_v`` (v in km/s): integrated
  intensity, intensity-weighted mean velocity and velocity dispersion; each standardised.
- ``input_kind = "integrated"``: one map, ``asinh(M0 / a)``, standardised.
- The target is divided by ``target_scale`` (setting ``unet.target_scale``): ``mean_abs``
  (the default) divides it by its mean |T| over unmasked training pixels, so the L1 term of
  the loss is O(1) whatever the map units; ``none`` leaves it in its units (µK_RJ for the
  dust maps), as the authors' code does; a number divides it by that number. The prediction
  is multiplied by the same scale.
- ``variant = "residual"`` appends the integrated map ``M0 / s`` as a last, linearly scaled
  channel: the network adds it to its output. ``s`` makes its mean |.| that of the scaled
  target (with ``mean_abs``: 1, so ``s`` is the mean |M0|), so that the network starts near
  the integrated-intensity baseline in any target units.

Masked pixels are zero in every prepared channel (the standardised mean).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from dustpred.cutouts.shards import ShardSet
from dustpred.errors import ConfigError, InputError

INPUT_KINDS = ("cube", "moments", "integrated")


@dataclass
class InputStats:
    """Normalisation of the U-Net's inputs and target, fitted on the training set.

    Attributes
    ----------
    input_kind, variant : str
        See the module docstring.
    velocities_kms : list of float
        Channel centre velocities (C,), km/s.
    softening : float
        asinh softening ``a`` (units of the input maps).
    mean, std : list of float
        Per-feature standardisation (F,) of the asinh/moment features.
    base_scale : float
        Divides the integrated map of the residual variant (units of M0 per target unit).
    target_scale : float
        Divides the target (target units; see the module docstring).
    """

    input_kind: str
    variant: str
    velocities_kms: list[float]
    softening: float
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    base_scale: float = 1.0
    target_scale: float = 1.0

    @property
    def n_features(self) -> int:
        return {"cube": len(self.velocities_kms), "moments": 3, "integrated": 1}[self.input_kind]

    @property
    def in_channels(self) -> int:
        """Number of U-Net input channels (features, plus the integrated map if residual)."""
        return self.n_features + (self.variant == "residual")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> InputStats:
        return cls(**d)


def _features(inputs: torch.Tensor, velocities: torch.Tensor, kind: str, softening: float):
    """Unstandardised features (n, F, H, W) of raw channel maps (n, C, H, W) (float32)."""
    m0 = inputs.sum(dim=1, keepdim=True)
    if kind == "cube":
        return torch.asinh(inputs / softening)
    if kind == "integrated":
        return torch.asinh(m0 / softening)
    v = velocities.view(1, -1, 1, 1)
    # Mean velocity and dispersion are undefined where there is ~no emission (masked pixels).
    ok = m0 > 1e-3 * softening
    safe = torch.where(ok, m0, torch.ones_like(m0))
    m1 = (inputs * v).sum(dim=1, keepdim=True) / safe
    m2 = (inputs * v * v).sum(dim=1, keepdim=True) / safe
    sigma = torch.sqrt(torch.clamp(m2 - m1 * m1, min=0.0))
    zero = torch.zeros_like(m0)
    return torch.cat(
        [torch.asinh(m0 / softening), torch.where(ok, m1, zero), torch.where(ok, sigma, zero)], 1
    )


def fit_input_stats(
    shards: ShardSet,
    indices: np.ndarray,
    *,
    input_kind: str,
    variant: str,
    max_cutouts: int = 1024,
    seed: int = 0,
    chunk: int = 128,
    target_scale: str | float = "mean_abs",
) -> InputStats:
    """Fit :class:`InputStats` on (a seeded subsample of at most ``max_cutouts`` of) the
    training cutouts ``indices`` of ``shards``. Sums are accumulated in float64.

    ``target_scale`` is ``unet.target_scale``: ``"mean_abs"``, ``"none"`` or a number > 0
    (see the module docstring).
    """
    if input_kind not in INPUT_KINDS:
        raise InputError(
            f"config key 'unet.input_kind': got {input_kind!r}, expected one of {INPUT_KINDS}"
        )
    indices = np.asarray(indices)
    if len(indices) > max_cutouts:
        rng = np.random.default_rng([seed, 7])
        indices = np.sort(rng.choice(indices, size=max_cutouts, replace=False))
    velocities = torch.as_tensor(shards.velocities_kms, dtype=torch.float32)
    # Pass 1: softening, base and target scales.
    abs_sum = m0_sum = t_sum = 0.0
    n_pix = 0
    for lo in range(0, len(indices), chunk):
        d = shards.read(["inputs", "target", "mask"], indices[lo : lo + chunk])
        good = d["mask"] == 0
        x = d["inputs"].astype(np.float64)
        abs_sum += float(np.abs(x).sum(axis=1)[good].sum())
        m0_sum += float(np.abs(x.sum(axis=1))[good].sum())
        t_sum += float(np.abs(d["target"].astype(np.float64))[good].sum())
        n_pix += int(good.sum())
    if n_pix == 0:
        raise InputError(f"{shards.paths}: every training pixel is masked; expected some unmasked")
    softening = abs_sum / (n_pix * shards.channels)
    if input_kind != "cube":
        softening = m0_sum / n_pix
    stats = InputStats(
        input_kind=input_kind,
        variant=variant,
        velocities_kms=[float(v) for v in shards.velocities_kms],
        softening=max(softening, np.finfo(np.float32).tiny),
        **_output_scales(m0_sum / n_pix, t_sum / n_pix, target_scale),
    )
    # Pass 2: per-feature mean and standard deviation over unmasked pixels.
    s1 = s2 = 0.0
    for lo in range(0, len(indices), chunk):
        d = shards.read(["inputs", "mask"], indices[lo : lo + chunk])
        f = _features(
            torch.from_numpy(d["inputs"].astype(np.float32)),
            velocities,
            input_kind,
            stats.softening,
        ).double()
        good = torch.from_numpy(d["mask"] == 0).unsqueeze(1)
        f = f * good
        s1 = s1 + f.sum(dim=(0, 2, 3))
        s2 = s2 + (f * f).sum(dim=(0, 2, 3))
    mean = s1 / n_pix
    var = torch.clamp(s2 / n_pix - mean * mean, min=0.0)
    std = torch.sqrt(var)
    std = torch.where(std > 1e-12 * (1 + mean.abs()), std, torch.ones_like(std))
    stats.mean = [float(v) for v in mean]
    stats.std = [float(v) for v in std]
    return stats


def _output_scales(m0_mean: float, t_mean: float, target_scale: str | float) -> dict:
    """``base_scale`` and ``target_scale`` of :class:`InputStats` from the mean |M0| and the
    mean |T| over unmasked training pixels, for the setting ``target_scale``."""
    tiny = np.finfo(np.float32).tiny
    if target_scale == "mean_abs":  # both channels O(1); kept in this form for identical bytes
        return {"base_scale": max(m0_mean, tiny), "target_scale": max(t_mean, tiny)}
    if target_scale == "none":
        scale = 1.0
    elif isinstance(target_scale, int | float) and not isinstance(target_scale, bool):
        scale = float(target_scale)
    else:
        scale = math.nan
    if not 0 < scale < math.inf:
        raise ConfigError(
            f"config key 'unet.target_scale': found {target_scale!r}; expected mean_abs, "
            "none or a number > 0"
        )
    # The integrated map, divided by base_scale, has the mean |.| of the target divided by scale.
    return {"base_scale": max(m0_mean * scale / max(t_mean, tiny), tiny), "target_scale": scale}


def prepare_features(
    inputs: torch.Tensor, good: torch.Tensor, stats: InputStats, *, inplace: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Standardised features (n, F, H, W) and, for the residual variant, the scaled
    integrated map (n, H, W) (else None), from float32 channel maps (n, C, H, W).

    ``good`` (n, H, W) is True where unmasked. With ``inplace`` the cube features overwrite
    ``inputs`` (saves memory passes when preparing a whole training set).
    """
    if inputs.shape[1] != len(stats.velocities_kms):
        raise InputError(
            f"U-Net inputs: got {inputs.shape[1]} channels; the model was trained on "
            f"{len(stats.velocities_kms)}"
        )
    dev = inputs.device
    base = None
    if stats.variant == "residual":
        base = inputs.sum(dim=1) * (good / stats.base_scale)
    mean = torch.tensor(stats.mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    std = torch.tensor(stats.std, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    if stats.input_kind == "cube" and inplace:
        f = inputs.div_(stats.softening).asinh_()
    else:
        velocities = torch.tensor(stats.velocities_kms, dtype=torch.float32, device=dev)
        f = _features(inputs, velocities, stats.input_kind, stats.softening)
    f.sub_(mean).div_(std).mul_(good.unsqueeze(1))
    return f, base


def prepare_inputs(inputs, mask, stats: InputStats) -> torch.Tensor:
    """Network inputs (n, stats.in_channels, H, W) float32 from raw channel maps.

    Parameters
    ----------
    inputs : array or tensor, shape (n, C, H, W)
        Raw HI channel maps (any float dtype), masked pixels zero.
    mask : array or tensor, shape (n, H, W)
        1 (or True) where masked.
    """
    x = torch.as_tensor(np.asarray(inputs) if not torch.is_tensor(inputs) else inputs).float()
    good = torch.as_tensor(np.asarray(mask) if not torch.is_tensor(mask) else mask) == 0
    f, base = prepare_features(x, good.to(x.device), stats)
    return f if base is None else torch.cat([f, base.unsqueeze(1)], dim=1)
