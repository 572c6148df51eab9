"""The preprocessed stack on disk: its reader and the atomic writers of its files.

Rule ``preprocess`` (:mod:`dustpred.sky.preprocess`) writes ``stack.npy``, ``mask.npy`` and
``meta.json`` through :func:`save_npy_atomic` and :func:`write_json_atomic` (layout in the
preprocess module's docstring); the cutout, template and figure stages open them with
:func:`load_preprocessed`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import healpy as hp
import numpy as np

from dustpred.atomic import atomic_path, atomic_write
from dustpred.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class Preprocessed:
    """The preprocessed inputs of the cutout stage (see :mod:`dustpred.sky.preprocess`)."""

    stack: np.ndarray  # (npix_healpix, nchan + 1) float32, memory-mapped; dust last
    mask: np.ndarray  # (npix_healpix,) uint8, 1 = masked
    meta: dict[str, Any]
    oracle: np.ndarray | None  # (npix_healpix,) float32 or None
    nside: int

    @property
    def nchan(self) -> int:
        return self.stack.shape[1] - 1


def load_preprocessed(
    stack_path: str | os.PathLike,
    mask_path: str | os.PathLike,
    meta_path: str | os.PathLike,
    oracle_path: str | os.PathLike | None = None,
) -> Preprocessed:
    """Open ``stack.npy`` (memory-mapped), ``mask.npy``, ``meta.json`` and ``oracle.npy``.

    Raises InputError naming the file when shapes, dtypes or Nside disagree.
    """
    stack_path, mask_path, meta_path = map(os.fspath, (stack_path, mask_path, meta_path))
    try:
        stack = np.load(stack_path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise InputError(
            f"{stack_path}: cannot read as .npy ({err}); expected np.save output"
        ) from err
    if stack.ndim != 2 or stack.shape[1] < 2 or stack.dtype.kind != "f":
        raise InputError(
            f"{stack_path}: found {stack.dtype} array of shape {stack.shape}; expected a "
            "float (npix, nchan + 1) pixel-major stack (HI channels, then dust)"
        )
    try:
        nside = int(hp.npix2nside(stack.shape[0]))
    except ValueError:
        raise InputError(
            f"{stack_path}: {stack.shape[0]} rows; expected 12 * Nside**2 HEALPix pixels"
        ) from None
    with open(meta_path) as fh:
        meta = json.load(fh)
    if int(meta.get("nside", -1)) != nside:
        raise InputError(
            f"{meta_path}: nside {meta.get('nside')!r}; expected {nside} (from {stack_path})"
        )
    velocities = meta.get("velocities_kms")
    if velocities is None or len(velocities) != stack.shape[1] - 1:
        raise InputError(
            f"{meta_path}: velocities_kms has {None if velocities is None else len(velocities)} "
            f"entries; expected {stack.shape[1] - 1} (HI columns of {stack_path})"
        )
    mask = np.load(mask_path)
    if mask.shape != (stack.shape[0],):
        raise InputError(
            f"{mask_path}: shape {mask.shape}; expected ({stack.shape[0]},) like {stack_path}"
        )
    oracle = None
    if oracle_path:
        oracle = np.load(os.fspath(oracle_path), mmap_mode="r")
        if oracle.shape != (stack.shape[0],):
            raise InputError(
                f"{oracle_path}: shape {oracle.shape}; expected ({stack.shape[0]},) like "
                f"{stack_path}"
            )
    return Preprocessed(stack=stack, mask=mask, meta=meta, oracle=oracle, nside=nside)


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """``np.save`` to a temporary file next to ``path``, then rename it into place."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def write_json_atomic(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))
