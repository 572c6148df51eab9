"""Apply the models to cutout shards and write one prediction file per subset.

Output (HDF5, written atomically), read by :mod:`dustpred.evaluation.evaluate`:

- datasets ``target``, ``mask`` (uint8, 1 = masked), ``integrated``, ``linear`` (the
  scale-independent linear model), ``unet`` (N, H, W) float32 with masked pixels zero;
  ``linear_sd`` (the scale-dependent linear model) when its weights are given (the workflow
  always gives them); ``oracle`` (N, H, W) when the shards have it;
  ``lon``, ``lat``, ``psi``, ``masked_fraction`` (N,) in degrees / fraction;
- attrs ``reso_arcmin``, ``npix``, ``unet_weights`` (config ``unet.keep``: ``"best"``, the
  U-Net weights of the epoch with the lowest validation loss, or ``"last"``),
  ``unet_best_epoch``, ``seed``.

The U-Net's prediction is mapped back to the target's units (times the training target
scale), so its pixel values are comparable to the target's; the integrated and linear maps
are in the units of the HI maps (r is invariant to the scale).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np
import torch

from dustpred.atomic import atomic_path
from dustpred.cutouts.shards import ShardSet
from dustpred.errors import InputError
from dustpred.models.checkpoint import load_model
from dustpred.models.inputs import prepare_inputs
from dustpred.models.integrated import integrated_intensity
from dustpred.models.linear import predict_linear, read_weights
from dustpred.models.settings import UNetSettings
from dustpred.ordered_pool import map_in_order

log = logging.getLogger(__name__)

MAPS = ("target", "integrated", "linear", "unet")
PER_CUTOUT = ("lon", "lat", "psi", "masked_fraction")


@torch.no_grad()
def predict_unet(
    net, stats, inputs: np.ndarray, mask: np.ndarray, *, batch: int = 64, device="cpu"
) -> np.ndarray:
    """U-Net prediction (n, H, W) float32 in target units, masked pixels zero.

    On the CPU the convolutions run without oneDNN: its kernels sum in an order that depends
    on the number of threads (a 1-ulp difference between 1 and 3 threads was seen on an AMD
    EPYC with AVX-512), ATen's own do not, so a prediction does not depend on the job's
    threads. They are about 1.3x slower (2.9 vs 2.2 ms per 64 x 64 x 64 cutout on 2 threads).
    """
    out = np.empty((len(inputs),) + inputs.shape[-2:], dtype=np.float32)
    # The flag itself, not torch.backends.mkldnn.flags(), which also sets (and warns about) TF32.
    onednn = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = onednn and torch.device(device).type != "cpu"
    try:
        for lo in range(0, len(inputs), batch):
            # Normalise on the network's device (asinh of every channel is slow on a CPU).
            raw = torch.from_numpy(np.ascontiguousarray(inputs[lo : lo + batch])).to(device)
            x = prepare_inputs(raw, torch.from_numpy(mask[lo : lo + batch]).to(device), stats)
            pred = net(x).float().cpu().numpy() * stats.target_scale
            out[lo : lo + batch] = pred * (mask[lo : lo + batch] == 0)
    finally:
        torch.backends.mkldnn.enabled = onednn
    return out


def resolve_device(device: str = "auto") -> torch.device:
    """``'auto'``: the GPU when one is available, else the CPU; ``'cuda'``: the GPU (an
    InputError without one: never a silent CPU run); ``'cpu'``: the CPU."""
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError(
            f"device 'cuda' requested but PyTorch sees no CUDA device (torch {torch.__version__}"
            f", CUDA build {torch.version.cuda}); expected a GPU, or device 'cpu' or 'auto'"
        )
    use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    return torch.device("cuda" if use_cuda else "cpu")


def predict_models(
    x: np.ndarray,
    mask: np.ndarray,
    weights,
    net,
    stats,
    *,
    side_deg: float,
    batch: int = 64,
    device="cpu",
) -> dict[str, np.ndarray]:
    """The three models' maps of cutouts ``x``: ``{'integrated', 'linear', 'unet'}``.

    Parameters
    ----------
    x
        ``(n, C, H, W)`` float32 HI channels (masked pixels 0).
    mask
        ``(n, H, W)`` uint8, 1 = masked.
    weights
        Linear weights (:func:`dustpred.models.linear.read_weights`).
    net, stats
        U-Net and its input normalisation (:func:`dustpred.models.checkpoint.load_model`).
    side_deg
        Cutout side (degrees), for the scale-dependent linear weights.
    batch, device
        U-Net batch size and device.

    Returns
    -------
    dict
        ``(n, H, W)`` float32 each, masked pixels 0; U-Net in target units, the integrated
        and linear maps in the HI maps' units.
    """
    return {
        **cutout_models(x, mask, weights, side_deg=side_deg),
        "unet": predict_unet(net, stats, x, mask, batch=batch, device=device),
    }


def cutout_models(
    x: np.ndarray, mask: np.ndarray, weights, *, side_deg: float, weights_sd=None
) -> dict[str, np.ndarray]:
    """The CPU models' maps of cutouts ``x`` (``(n, C, H, W)``, mask ``(n, H, W)``, 1 =
    masked): ``{'integrated', 'linear'}``, and ``'linear_sd'`` with ``weights_sd``; each
    ``(n, H, W)`` float32 in the HI maps' units, masked pixels 0."""
    keep = mask == 0
    out = {
        "integrated": integrated_intensity(x) * keep,
        "linear": predict_linear(x, weights, side_deg=side_deg) * keep,
    }
    if weights_sd is not None:
        out["linear_sd"] = predict_linear(x, weights_sd, side_deg=side_deg) * keep
    return out


def predict_shards(
    shard_paths: Sequence[str | os.PathLike],
    linear_csv: str | os.PathLike,
    unet_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    threads: int = 1,
    device: str = "auto",
    chunk: int = 256,
    linear_sd_csv: str | os.PathLike | None = None,
    unet_settings: Mapping[str, Any] | None = None,
) -> None:
    """Predict every cutout of ``shard_paths`` with the integrated, linear (weights
    ``linear_csv``; also ``linear_sd_csv`` if given, written as ``linear_sd``) and U-Net
    models (the U-Net's weights of ``unet.keep``: best on validation, or the last epoch) and
    write ``out_path`` (see module docstring). ``unet_settings``: the experiment's ``unet``
    slice, which the model file must match."""
    torch.set_num_threads(max(1, int(threads)))
    dev = resolve_device(device)
    shards = ShardSet(shard_paths, threads=threads)
    weights = read_weights(linear_csv)
    weights_sd = read_weights(linear_sd_csv) if linear_sd_csv is not None else None
    extra = (("linear_sd",) if weights_sd is not None else ()) + (
        ("oracle",) if shards.has_oracle else ()
    )
    weights_of = UNetSettings.from_config(unet_settings).keep  # "best" or "last"
    net, stats, meta = load_model(unet_path, which=weights_of, device=dev, expected=unet_settings)
    n, (h, w) = shards.n, shards.shape
    log.info(
        "predicting %d cutouts with integrated, linear and U-Net (%s of %s) on %s",
        n,
        f"best epoch {meta['best_epoch']}" if weights_of == "best" else "last epoch",
        unet_path,
        dev,
    )
    names = ["inputs", "target", "mask", "lon", "lat", "psi", "masked_fraction"]
    if shards.has_oracle:
        names.append("oracle")
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as f:
        maps = {
            k: f.create_dataset(k, (n, h, w), dtype="f4", chunks=(min(n, 64), h, w))
            for k in MAPS + extra
        }
        mask_ds = f.create_dataset("mask", (n, h, w), dtype="u1", chunks=(min(n, 64), h, w))
        per = {k: f.create_dataset(k, (n,), dtype="f8") for k in PER_CUTOUT}

        def with_cpu_models(chunk_of: tuple[int, dict]):
            start, d = chunk_of
            m = np.asarray(d["mask"]).astype(np.uint8)
            x = np.asarray(d.pop("inputs"), dtype=np.float32)  # held once, by this chunk
            cpu = cutout_models(x, m, weights, side_deg=shards.side_deg, weights_sd=weights_sd)
            return start, d, m, x, cpu

        # The CPU models (FFTs of every channel for the scale-dependent weights) of `threads`
        # chunks run in a pool while this thread runs the U-Net; chunks are written in order.
        for start, d, m, x, cpu in map_in_order(
            with_cpu_models, shards.iter_chunks(names, chunk), threads
        ):
            stop = start + len(d["target"])
            keep = m == 0
            maps["target"][start:stop] = np.asarray(d["target"], np.float32) * keep
            cpu["unet"] = predict_unet(net, stats, x, m, device=dev)
            for name, values in cpu.items():
                maps[name][start:stop] = values
            if shards.has_oracle:
                maps["oracle"][start:stop] = np.asarray(d["oracle"], np.float32) * keep
            mask_ds[start:stop] = m
            for k in PER_CUTOUT:
                per[k][start:stop] = d[k]
            log.info("predicted cutouts %d..%d of %d", start + 1, stop, n)
        f.attrs["reso_arcmin"] = shards.reso_arcmin
        f.attrs["npix"] = shards.npix
        f.attrs["unet_weights"] = weights_of
        f.attrs["unet_best_epoch"] = int(meta["best_epoch"])
        f.attrs["seed"] = int(meta["seed"])
    log.info("wrote %s", out_path)
