"""Cutout images gathered from the preprocessed stack by pixel index (cutouts.store: indices).

An indices shard (:mod:`dustpred.cutouts.shards`, whose reader calls this module) stores
the RING pixel of the preprocessed stack under each cutout pixel. :func:`gather` rebuilds
``inputs``, ``target`` and ``oracle`` as the cutout stage writes them into an images shard:
the same row gather of the stack, masked pixels 0, the inputs in the storage dtype
(tests/test_shards.py: equal element for element).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from dustpred.errors import InputError

# What an indices shard stores instead of the gathered images (``mask`` stays stored).
PIXEL_FIELDS = ("pixels", "target_pixels")
GATHERED = ("inputs", "target", "oracle")


def check_range(lo: float, hi: float, dtype: type, path: str) -> None:
    """Refuse values in [lo, hi] that the storage dtype float16 cannot hold (NaN included)."""
    limit = float(np.finfo(np.float16).max)
    if dtype == np.float16 and not (-limit <= lo and hi <= limit):
        raise InputError(
            f"{path}: values in [{lo:g}, {hi:g}] do not fit float16 (|x| <= {limit:g}, finite); "
            "expected config 'cutouts.dtype: float32' for data of this range"
        )


def open_stack(path: str, attrs: dict[str, Any], channels: int) -> tuple[np.ndarray, Any]:
    """The stack and oracle (or None) an indices shard gathers from, memory-mapped."""
    arrays = []
    for key, columns in (("stack_path", channels + 1), ("oracle_path", None)):
        source = attrs.get(key) or ""
        if key == "oracle_path" and not source:
            arrays.append(None)
            continue
        try:
            array = np.load(source, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise InputError(
                f"{path}: cannot read its {key} {source!r} ({exc}); an indices shard "
                "(cutouts.store: indices) gathers its images from the preprocessed stack it "
                "was cut from: expected that file, unchanged"
            ) from exc
        shape = (12 * int(attrs["nside"]) ** 2, *(() if columns is None else (columns,)))
        if array.shape != shape or array.dtype != np.float32:
            raise InputError(
                f"{path}: its {key} {source} holds {array.dtype} {array.shape}; expected "
                f"float32 {shape} (Nside {attrs['nside']}, {channels} HI channels + dust)"
            )
        arrays.append(array)
    return arrays[0], arrays[1]


def gather(
    stored: dict[str, np.ndarray],
    names: Sequence[str],
    sources: tuple[np.ndarray, Any],
    *,
    dtype: type,
    path: str,
    threads: int = 1,
) -> dict[str, np.ndarray]:
    """The fields ``names`` of the cutouts whose stored fields (``pixels``, ``mask``,
    optionally ``target_pixels``, vectors) are ``stored``, as the images store holds them:
    the same gather of stack rows, masked pixels 0, inputs in the storage ``dtype``;
    ``threads`` share the cutouts (each value is copied, so the result does not depend on
    them)."""
    stack, oracle = sources
    m, h, w = stored["pixels"].shape
    p, c = h * w, stack.shape[1] - 1
    pix = stored["pixels"].reshape(m, p)
    zero = stored["mask"].reshape(m, p) != 0
    moved = stored["target_pixels"].reshape(m, p) if "target_pixels" in stored else None
    out = {k: v for k, v in stored.items() if k in names}
    # The inputs are cast to the storage dtype as they are gathered, on the threads: the
    # float16 cast costs more than the gather. The range _stored checks, per block.
    inputs = np.empty((m, c, p), dtype) if "inputs" in names else None
    target = np.empty((m, p), np.float32)
    ranges: list[tuple[float, float]] = []

    def work(block: range) -> None:
        rows = np.empty((p, c + 1), dtype=stack.dtype)
        lo, hi = np.inf, -np.inf
        for k in block:
            # Whole rows, as the cutout stage gathers them (dustpred.cutouts.projection).
            if inputs is not None or moved is None:
                np.take(stack, pix[k], axis=0, out=rows, mode="clip")
                rows[zero[k]] = 0
                if inputs is not None:
                    values = rows[:, :c]
                    lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
                    with np.errstate(over="ignore"):  # refused below, naming the shard
                        inputs[k] = values.T
                target[k] = rows[:, c]
            if moved is not None:  # shuffled pairing: the dust from elsewhere
                np.take(stack, moved[k], axis=0, out=rows, mode="clip")
                rows[zero[k]] = 0
                target[k] = rows[:, c]
        ranges.append((lo, hi))

    if inputs is not None or "target" in names:
        n_blocks = max(1, min(int(threads), m))
        blocks = [range(i * m // n_blocks, (i + 1) * m // n_blocks) for i in range(n_blocks)]
        if n_blocks == 1:
            work(blocks[0])
        else:  # numpy's take and copies release the GIL
            with ThreadPoolExecutor(max_workers=n_blocks) as pool:
                list(pool.map(work, blocks))
    if inputs is not None:
        if m and dtype != np.float32:
            check_range(min(r[0] for r in ranges), max(r[1] for r in ranges), dtype, path)
        out["inputs"] = inputs.reshape(m, c, h, w)
    if "target" in names:
        out["target"] = target.reshape(m, h, w)
    if "oracle" in names:
        values = np.take(oracle, pix if moved is None else moved, mode="clip")
        values[zero] = 0
        out["oracle"] = values.astype(np.float32).reshape(m, h, w)
    return out
