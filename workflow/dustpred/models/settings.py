"""Typed settings of the U-Net and its training: the ``unet`` config section, checked once.

:meth:`UNetSettings.from_config` fills the keys a section leaves out from the config schema
(``workflow/schemas/config.schema.yaml``, key ``unet``; the only place the defaults are
written), checks every value and converts it to its type. The section as given, with the
defaults filled in, is kept as :attr:`UNetSettings.config`: the model file stores it and the
resume fingerprint hashes it, so both stay exactly what the config said (an ``int`` stays
an ``int``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dustpred.config import schema_defaults
from dustpred.errors import ConfigError

VARIANTS = ("paper", "halving", "residual")  # as dustpred.models.unet.VARIANTS
INPUT_KINDS = ("cube", "moments", "integrated")
DEVICES = ("auto", "cpu", "cuda")
CUDA_GRAPHS = ("auto", "true", "false")
KEEPS = ("best", "last")
VALIDATIONS = ("random", "regions")
PRECISIONS = ("bf16", "fp32")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
TARGET_SCALES = ("mean_abs", "none")


@dataclass(frozen=True)
class UNetSettings:
    """The ``unet`` config section (see config/README.md, section ``unet``).

    Attributes
    ----------
    variant : {"paper", "halving", "residual"}
    input_kind : {"cube", "moments", "integrated"}
    widths : tuple of int
        Feature widths of the levels, top to bottom.
    bottleneck : int or None
        Bottleneck width (None: the last of ``widths``).
    dropout : float
    loss_lambda : float
        Weight of the correlation term of the loss.
    target_scale : {"mean_abs", "none"} or float
        What the target is divided by before the loss (and the prediction multiplied by):
        ``"mean_abs"``, its mean |T| over unmasked training pixels (the L1 term is then O(1)
        whatever the units); ``"none"``, nothing (the L1 term is in the target's units, as in
        the authors' code); a number > 0, that number (in the target's units).
    epochs, batch_size : int
        Epochs; global batch (split across processes).
    lr, lr_decay_every, lr_decay_factor : float, int, float
        Learning rate, times ``lr_decay_factor`` every ``lr_decay_every`` epochs.
    validation_fraction : float
        Share of the training cutouts held out, in [0, 1).
    validation : {"random", "regions"}
        How they are held out (:mod:`dustpred.training.validation`).
    validation_region_nside : int
        Nside of the held-out regions of ``regions``.
    grad_clip : float
        Gradient-norm clipping threshold (0 = off).
    augment, sync_batchnorm : bool
    keep : {"best", "last"}
        The weights predict and the template use.
    adam_reset : bool
        Fresh Adam moments and step count at the start of every epoch (the authors' code).
    precision : {"bf16", "fp32"}
        Autocast of the training step on CUDA (the CPU trains in fp32).
    device : {"auto", "cpu", "cuda"}
    cuda_graphs : {"auto", "true", "false"}
    compile : bool or str
        False, True (default mode) or a ``torch.compile`` mode.
    config : dict
        The section as given with the schema's defaults filled in (schema key order, values
        untouched): what the model file stores. Build settings with :meth:`from_config` only.
    """

    variant: str
    input_kind: str
    widths: tuple[int, ...]
    bottleneck: int | None
    dropout: float
    loss_lambda: float
    target_scale: str | float
    epochs: int
    batch_size: int
    lr: float
    lr_decay_every: int
    lr_decay_factor: float
    validation_fraction: float
    validation: str
    validation_region_nside: int
    grad_clip: float
    augment: bool
    sync_batchnorm: bool
    keep: str
    adam_reset: bool
    precision: str
    device: str
    cuda_graphs: str
    compile: bool | str
    config: dict[str, Any] = field(compare=False, repr=False)

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> UNetSettings:
        """Settings from the ``unet`` config section (missing keys: the schema's defaults).

        Raises
        ------
        ConfigError
            On an unknown key or a value out of range, naming the key, the value found and
            what was expected.
        """
        section = dict(section or {})
        defaults = schema_defaults("unet")
        unknown = sorted(set(section) - set(defaults))
        if unknown:
            raise ConfigError(
                f"config section 'unet': unknown key(s) {unknown}; expected keys among "
                f"{list(defaults)}"
            )
        # Default keys first, in schema order, then the section's values over them.
        config = {**defaults, **section}
        _check(config)
        compile_mode = config["compile"]
        return cls(
            variant=config["variant"],
            input_kind=config["input_kind"],
            widths=tuple(int(w) for w in config["widths"]),
            bottleneck=None if config["bottleneck"] is None else int(config["bottleneck"]),
            dropout=float(config["dropout"]),
            loss_lambda=float(config["loss_lambda"]),
            target_scale=_target_scale(config["target_scale"]),
            epochs=int(config["epochs"]),
            batch_size=int(config["batch_size"]),
            lr=float(config["lr"]),
            lr_decay_every=int(config["lr_decay_every"]),
            lr_decay_factor=float(config["lr_decay_factor"]),
            validation_fraction=float(config["validation_fraction"]),
            validation=config["validation"],
            validation_region_nside=int(config["validation_region_nside"]),
            grad_clip=float(config["grad_clip"]),
            augment=bool(config["augment"]),
            sync_batchnorm=bool(config["sync_batchnorm"]),
            keep=config["keep"],
            adam_reset=bool(config["adam_reset"]),
            precision=config["precision"],
            device=config["device"],
            cuda_graphs=str(config["cuda_graphs"]).lower(),
            compile=compile_mode if isinstance(compile_mode, str) else bool(compile_mode),
            config=config,
        )


def _check(config: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` on the first value of ``config`` outside the schema's range."""
    checks = [
        ("variant", lambda v: v in VARIANTS, f"one of {list(VARIANTS)}"),
        ("input_kind", lambda v: v in INPUT_KINDS, f"one of {list(INPUT_KINDS)}"),
        (
            "widths",
            lambda v: isinstance(v, list | tuple) and len(v) > 0 and all(w >= 1 for w in v),
            "a non-empty list of integers >= 1",
        ),
        ("bottleneck", lambda v: v is None or v >= 1, "null or an integer >= 1"),
        ("dropout", lambda v: 0 <= v <= 0.95, "0 <= value <= 0.95"),
        ("loss_lambda", lambda v: v >= 0, "a number >= 0"),
        (
            "target_scale",
            lambda v: (
                v in TARGET_SCALES
                if isinstance(v, str)
                else not isinstance(v, bool) and 0 < v < float("inf")
            ),
            "mean_abs, none or a number > 0",
        ),
        ("epochs", lambda v: int(v) >= 1, "an integer >= 1"),
        ("batch_size", lambda v: int(v) >= 1, "an integer >= 1"),
        ("lr", lambda v: v > 0, "a number > 0"),
        ("lr_decay_every", lambda v: int(v) >= 1, "an integer >= 1"),
        ("lr_decay_factor", lambda v: 0 < v <= 1, "0 < value <= 1"),
        ("validation_fraction", lambda v: 0 <= float(v) < 1, "0 <= value < 1"),
        ("validation", lambda v: v in VALIDATIONS, "random|regions"),
        ("validation_region_nside", lambda v: int(v) in (1, 2, 4, 8, 16), "1, 2, 4, 8 or 16"),
        ("grad_clip", lambda v: v >= 0, "a number >= 0 (0 = off)"),
        ("augment", lambda v: isinstance(v, bool), "true or false"),
        ("sync_batchnorm", lambda v: isinstance(v, bool), "true or false"),
        ("keep", lambda v: v in KEEPS, "best|last"),
        ("adam_reset", lambda v: isinstance(v, bool), "true or false"),
        ("precision", lambda v: v in PRECISIONS, "bf16|fp32"),
        ("device", lambda v: v in DEVICES, "auto|cpu|cuda"),
        ("cuda_graphs", lambda v: str(v).lower() in CUDA_GRAPHS, "auto|true|false"),
        (
            "compile",
            lambda v: isinstance(v, bool) or v in COMPILE_MODES,
            f"true, false or one of {list(COMPILE_MODES)}",
        ),
    ]
    for key, ok, expected in checks:
        try:
            good = bool(ok(config[key]))
        except (TypeError, ValueError):  # e.g. a string where a number belongs
            good = False
        if not good:
            raise ConfigError(
                f"config key 'unet.{key}': found {config[key]!r}; expected {expected}"
            )


def _target_scale(value: str | float) -> str | float:
    """A checked ``target_scale``: one of :data:`TARGET_SCALES`, else the number as a float."""
    return value if isinstance(value, str) else float(value)
