"""The polarisation models' predictions of the test cutouts, as E and B maps.

Every model is compared on the cutout's E and B maps (:func:`dustpred.polarisation.eb.eb_maps`):
the HI-orientation baselines through their fitted Q/U (:mod:`dustpred.polarisation.baselines`),
the oracle (synthetic sky) through the HI-traced Q/U, and the U-Net directly: it is two
networks of the experiment's recipe, one trained on the E maps and one on the B maps of the
training cutouts (rule ``train_unet_qu``), each with the paper's loss, so that its r^EE and
r^BB are the paper's r of E and of B.

Output (HDF5, written atomically), read by :mod:`dustpred.qu_evaluation.tables`: ``e``, ``b``
(N, H, W) float32, the target's maps; ``e_<model>``, ``b_<model>`` for each model (masked
pixels 0; the U-Net's in target units); ``mask`` (uint8, 1 = masked); ``lon``, ``lat``,
``psi`` (N,); attribute ``models``, a JSON list of the model names in order.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np
import torch

from dustpred.atomic import atomic_path
from dustpred.cutouts.shards import ShardSet
from dustpred.evaluation.predict import predict_unet, resolve_device
from dustpred.models.checkpoint import load_model
from dustpred.models.settings import UNetSettings
from dustpred.polarisation.baselines import baseline_eb_maps
from dustpred.polarisation.qu_cutouts import CHUNK, VECTORS, read_qu_cutouts

log = logging.getLogger(__name__)

UNET = "unet"
ORACLE = "oracle"
MODES = ("e", "b")


def unet_eb_maps(
    shard_paths: Sequence[str | os.PathLike],
    unets: Mapping[str, str | os.PathLike],
    *,
    unet_settings: Mapping[str, Any],
    threads: int = 1,
    device: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """The E and B maps ``(N, H, W)`` float32 that the two U-Nets (``unets``: mode ``e`` /
    ``b`` -> model file) predict for the cutouts of ``shard_paths``, with the weights of
    ``unet.keep``; the model files must match ``unet_settings``."""
    torch.set_num_threads(max(1, int(threads)))
    dev = resolve_device(device)
    shards = ShardSet(shard_paths, threads=threads)
    which = UNetSettings.from_config(unet_settings).keep
    nets = [load_model(unets[m], which=which, device=dev, expected=unet_settings) for m in MODES]
    out = [np.zeros((shards.n, *shards.shape), np.float32) for _ in MODES]
    for start, chunk in shards.iter_chunks(["inputs", "mask"], CHUNK):
        x = np.asarray(chunk["inputs"], np.float32)
        m = np.asarray(chunk["mask"]).astype(np.uint8)
        for k, (net, stats, _) in enumerate(nets):
            out[k][start : start + len(x)] = predict_unet(net, stats, x, m, device=dev)
    return out[0], out[1]


def predict_qu(
    test_shards: Sequence[str | os.PathLike],
    qu_path: str | os.PathLike,
    fractions_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    unets: Mapping[str, str | os.PathLike] | None = None,
    unet_settings: Mapping[str, Any] | None = None,
    threads: int = 1,
    device: str = "auto",
) -> list[str]:
    """Write the E/B maps of every model on the test cutouts (see module docstring); returns
    the model names. ``unets``: the E- and B-map U-Nets (none: baselines and oracle only)."""
    qu = read_qu_cutouts(qu_path)
    predictions = baseline_eb_maps(test_shards, fractions_path, qu["mask"], threads=threads)
    if "e_oracle" in qu:
        predictions[ORACLE] = (qu["e_oracle"], qu["b_oracle"])
    if unets:
        predictions[UNET] = unet_eb_maps(
            test_shards, unets, unet_settings=unet_settings or {}, threads=threads, device=device
        )
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as f:
        for name, maps in predictions.items():
            for mode, values in zip(MODES, maps, strict=True):
                f.create_dataset(f"{mode}_{name}", data=np.asarray(values, np.float32))
        for k in (*MODES, *VECTORS):
            f.create_dataset(k, data=qu[k])
        f.create_dataset("mask", data=qu["mask"].astype(np.uint8))
        f.attrs["models"] = json.dumps(list(predictions))
    log.info("wrote the E/B maps of %s for %d cutouts", list(predictions), len(qu["e"]))
    return list(predictions)


def read_qu_predictions(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """The target maps, mask and centres (``e``, ``b``, ``mask``, ``lon``, ``lat``, ``psi``)
    and ``{model: (E, B)}`` of a predictions file."""
    with h5py.File(path, "r") as f:
        models = json.loads(f.attrs["models"])
        data = {k: f[k][()] for k in (*MODES, "mask", *VECTORS)}
        predictions = {m: tuple(f[f"{mode}_{m}"][()] for mode in MODES) for m in models}
    data["mask"] = data["mask"].astype(bool)
    return data, predictions
