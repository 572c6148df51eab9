"""The U-Net model file: what a training run leaves for prediction and evaluation.

One ``torch.save`` dict (format :data:`FORMAT`, version :data:`FORMAT_VERSION`): the
network's build arguments (``model_config``), the ``unet`` config slice with its defaults
(``params``), the input normalisation (``stats``), the seed, the weights of the last epoch
(``state_dict``) and of the epoch with the lowest validation loss (``best_state_dict``,
``best_epoch``, ``best_val_loss``), the number of epochs, the software :func:`versions` and
the run's metadata (``npix``, ``side_deg``, ``world_size``, ``train_shards``).

Files are written atomically and through a file handle (:func:`save_torch`), and the weights'
keys are interned, so the same run gives the same bytes, resumed or not.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import dustpred
from dustpred.atomic import atomic_path
from dustpred.errors import InputError
from dustpred.models.inputs import InputStats
from dustpred.models.settings import UNetSettings
from dustpred.models.unet import UNet

FORMAT = "dustpred-unet"
FORMAT_VERSION = 1


@dataclass
class TrainResult:
    """History (one dict per epoch, keys :data:`dustpred.training.loop.HISTORY_COLUMNS`) and the
    best epoch's number, score and weights (CPU tensors)."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    best_state: dict | None = None


def versions() -> dict[str, str]:
    """Software versions stored with a model."""
    # Plain str: torch.__version__ is a TorchVersion, which weights_only loading refuses.
    return {
        "dustpred": str(dustpred.__version__),
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "python": platform.python_version(),
        "cuda": str(torch.version.cuda),
    }


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` atomically, through a file handle: saved to a path, torch names the
    archive inside after the (temporary) file, which would make the bytes differ per run."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


def load_torch(path: str | os.PathLike, what: str) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain containers only, so a file
    cannot run code when it is read. A missing, truncated, foreign or hostile file gives one
    InputError naming it and ``what`` was expected."""
    try:
        return torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{path}: not found; expected a {what}") from None
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise InputError(
            f"{path}: cannot be read as a {what} ({type(exc).__name__}: {reason}); delete it "
            "and rerun the job that writes it"
        ) from None


def save_model(
    path: str | os.PathLike,
    net: UNet,
    result: TrainResult,
    *,
    settings: UNetSettings,
    stats: InputStats,
    seed: int,
    meta: dict[str, Any],
) -> None:
    """Write the final model file atomically (see the module docstring for its keys).

    ``result`` gives the history and the best weights; ``settings.config`` is stored as
    ``params``; ``meta`` is merged into the top level.
    """
    model = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": {
            "in_channels": net.in_channels,
            "widths": list(net.widths),
            "bottleneck": settings.bottleneck,
            "dropout": settings.dropout,
            "variant": net.variant,
        },
        "params": settings.config,
        "stats": stats.to_dict(),
        "seed": int(seed),
        "state_dict": _canonical({k: v.detach().cpu() for k, v in net.state_dict().items()}),
        "best_state_dict": _canonical(result.best_state),
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "epochs": len(result.history),
        "versions": versions(),
        **meta,
    }
    save_torch(model, path)


def _canonical(state: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    """``state`` with interned keys. pickle writes a string object once and then refers to
    it, so which key objects two dicts share shows in the bytes. Without this, a top-level key
    (the residual's ``scale``) is shared between the weights and the best weights of an
    uninterrupted run but not of a resumed one, whose best weights come from the resume file;
    interned, the keys of both dicts are shared however they were made."""
    if state is None:
        return None
    return {sys.intern(k): v for k, v in state.items()}


def check_settings(path: str | os.PathLike, found: Mapping[str, Any], want: Mapping[str, Any]):
    """InputError when the settings ``found`` in model file ``path`` differ from ``want``."""
    differ = sorted(k for k in set(found) | set(want) if found.get(k) != want.get(k))
    if differ:
        pairs = ", ".join(f"{k}: {found.get(k)!r} (config {want.get(k)!r})" for k in differ)
        raise InputError(
            f"{path}: trained with other unet settings than this experiment's ({pairs}); "
            "expected this experiment's model: rerun its train_unet job"
        )


def load_model(
    path: str | os.PathLike,
    *,
    which: str = "best",
    device: str | torch.device = "cpu",
    expected: Mapping[str, Any] | None = None,
) -> tuple[UNet, InputStats, dict]:
    """Load a model file: the network (eval mode) with the ``best`` (lowest validation loss)
    or ``last`` weights, its input normalisation, and the whole file's metadata.

    ``expected``: the ``unet`` config slice the model must have been trained with (the
    experiment's); a file trained with other settings (e.g. another experiment's ``unet.pt``
    copied over this one) is refused, naming the keys that differ.
    """
    blob = load_torch(path, "U-Net model file (unet.pt of a train_unet job)")
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise InputError(f"{path}: not a dustpred U-Net model file; expected format '{FORMAT}'")
    if expected is not None:
        check_settings(path, blob.get("params", {}), UNetSettings.from_config(expected).config)
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    cfg = blob["model_config"]
    net = UNet(cfg["in_channels"], cfg["widths"], cfg["bottleneck"], cfg["dropout"], cfg["variant"])
    state = blob["best_state_dict"] if which == "best" else blob["state_dict"]
    net.load_state_dict(state)
    net.to(device).eval()
    return net, InputStats.from_dict(blob["stats"]), blob
