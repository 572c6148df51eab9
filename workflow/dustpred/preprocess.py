"""Raw FITS inputs -> the pixel-major HEALPix stack that cutouts are cut from.

Steps (paper, section 2):

1. select the HI channels whose centre lies in ``velocity_kms`` (inclusive; default
   -64.5..17 km/s -> 64 HI4PI channels);
2. bring each channel and the dust map to the working Nside and apply the Butterworth
   low-pass in one harmonic step (:func:`dustpred.harmonic.lowpass_to_nside`);
3. take the mask field (``LR72``) by name, bring it to the working Nside
   (:func:`dustpred.harmonic.mask_to_nside`) and store it with 1 = MASKED.

Outputs (all RING, working Nside):

- ``stack.npy``: ``(npix, nchan + 1)`` float32 in ``np.save`` format (open with
  ``np.load(path, mmap_mode='r')``): columns are the HI channels in increasing velocity
  (K) and the dust last (µK_RJ). Pixel-major, so a cutout reads whole rows.
- ``mask.npy``: ``(npix,)`` uint8, 1 = masked.
- ``meta.json``: Nside, channel velocities, units, column names, filter settings, masked
  fraction and source files.

Memory: the selected channels are read once at the input Nside, ``(npix_in, nchan)``
float32, then filtered one channel at a time into a memory-mapped output, so the peak is
about the input selection plus the output (~2x the output when Nside in = out).
Every output is written to a temporary file in its directory and renamed when complete.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import healpy as hp
import numpy as np

from dustpred import harmonic
from dustpred.atomic import atomic_path, atomic_write
from dustpred.errors import InputError
from dustpred.healpix_maps import DUST_UNITS, read_healpix_map
from dustpred.hi_cube import HI_COLUMN, HICube, open_hi_cube

log = logging.getLogger(__name__)


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """``np.save`` to a temporary file next to ``path``, then rename it into place."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def write_json_atomic(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def filtered_map(
    path: str | os.PathLike,
    column: str,
    *,
    nside: int,
    ell_cutoff: float,
    butterworth_order: int,
    map2alm_iters: int = 3,
    units: dict[str, float] | None = DUST_UNITS,
    coordsys_if_missing: str | None = None,
    nthreads: int = 1,
) -> np.ndarray:
    """Read a HEALPix map column and low-pass/resample it like the stack's dust.

    Returns
    -------
    numpy.ndarray
        ``(12 nside**2,)`` float32 RING map in the canonical unit (µK_RJ for dust).
    """
    values = read_healpix_map(path, column, units=units, coordsys_if_missing=coordsys_if_missing)
    out = harmonic.lowpass_to_nside(
        values, nside, ell_cutoff, butterworth_order, iters=map2alm_iters, nthreads=nthreads
    )
    return out.astype(np.float32)


def write_filtered_map(path_out: str | os.PathLike, *args, **kwargs) -> None:
    """:func:`filtered_map` saved as ``(npix,)`` float32 ``.npy`` (atomically)."""
    save_npy_atomic(path_out, filtered_map(*args, **kwargs))


def preprocess(
    hi_path: str | os.PathLike,
    dust_path: str | os.PathLike,
    mask_path: str | os.PathLike,
    stack_path: str | os.PathLike,
    mask_out_path: str | os.PathLike,
    meta_path: str | os.PathLike,
    *,
    velocity_kms: tuple[float, float],
    nside: int,
    ell_cutoff: float,
    butterworth_order: int,
    mask_field: str = "LR72",
    dust_column: str = "I_ML_FULL",
    hi_column: str = HI_COLUMN,
    mask_threshold: float = 0.5,
    map2alm_iters: int = 3,
    coordsys_if_missing: str | None = None,
    nthreads: int = 1,
) -> dict[str, Any]:
    """Build ``stack.npy``, ``mask.npy`` and ``meta.json`` (see module docstring).

    Parameters
    ----------
    hi_path, dust_path, mask_path
        Raw inputs: HI cube (file or directory), dust map table, mask table.
    stack_path, mask_out_path, meta_path
        Outputs.
    velocity_kms
        ``(vmin, vmax)`` km/s; channels with centres inside (inclusive) are kept.
    nside
        Working Nside.
    ell_cutoff, butterworth_order
        Butterworth low-pass settings.
    mask_field
        Mask column (1 = keep in the file).
    mask_threshold
        Kept fraction of a working pixel's area needed to keep it.
    nthreads
        Threads of each harmonic transform (the job's threads).

    Returns
    -------
    dict
        The metadata written to ``meta_path``.
    """
    t0 = time.monotonic()
    vmin, vmax = (float(v) for v in velocity_kms)
    cube = open_hi_cube(hi_path, column=hi_column, coordsys_if_missing=coordsys_if_missing)
    channels = cube.channels_in_range(vmin, vmax)
    velocities = cube.velocities[channels]
    log.info(
        "HI cube %s: Nside %d, %d channels; selecting %d channels %.3f..%.3f km/s",
        hi_path,
        cube.nside,
        cube.nchan,
        channels.size,
        velocities[0],
        velocities[-1],
    )
    # Read everything needed before writing anything, so bad inputs fail fast.
    dust = read_healpix_map(
        dust_path, dust_column, units=DUST_UNITS, coordsys_if_missing=coordsys_if_missing
    )
    masked, mask_nside = _masked_at_nside(
        mask_path, mask_field, nside, mask_threshold, coordsys_if_missing
    )

    def lowpass(values: np.ndarray) -> np.ndarray:
        return harmonic.lowpass_to_nside(
            values, nside, ell_cutoff, butterworth_order, iters=map2alm_iters, nthreads=nthreads
        )

    _write_stack(stack_path, cube, channels, dust, nside, lowpass, t0)
    save_npy_atomic(mask_out_path, masked)

    meta = _stack_meta(
        nside=nside,
        velocities=velocities,
        velocity_range=(vmin, vmax),
        channels=channels,
        ell_cutoff=ell_cutoff,
        butterworth_order=butterworth_order,
        map2alm_iters=map2alm_iters,
        nside_in={"hi": cube.nside, "dust": hp.npix2nside(dust.size), "mask": mask_nside},
        mask_field=mask_field,
        mask_threshold=mask_threshold,
        masked=masked,
        sources={"hi": hi_path, "dust": dust_path, "mask": mask_path},
    )
    write_json_atomic(meta_path, meta)
    log.info(
        "wrote %s, %s, %s in %.1f s", stack_path, mask_out_path, meta_path, time.monotonic() - t0
    )
    return meta


def _write_stack(
    stack_path: str | os.PathLike,
    cube: HICube,
    channels: np.ndarray,
    dust: np.ndarray,
    nside: int,
    lowpass: Callable[[np.ndarray], np.ndarray],
    t0: float,
) -> None:
    """Read the selected channels, then write ``stack.npy``: filtered channels, dust last.

    The ``(npix_in, nchan)`` channel selection is freed before the dust is filtered; the
    stack is a memory map under a temporary name until complete.
    """
    hi = cube.read_channels(channels)
    log.info(
        "read %d HI channels (%.1f MB) in %.1f s",
        channels.size,
        hi.nbytes / 2**20,
        time.monotonic() - t0,
    )
    nchan = channels.size
    with atomic_path(stack_path) as tmp:
        stack = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.float32, shape=(12 * nside**2, nchan + 1)
        )
        _filter_channels(stack, hi, cube.velocities[channels], lowpass, t0)
        del hi
        stack[:, nchan] = lowpass(dust)
        log.info(
            "dust filtered (Nside %d -> %d), %.1f s",
            hp.npix2nside(dust.size),
            nside,
            time.monotonic() - t0,
        )
        stack.flush()
        del stack


def _masked_at_nside(
    mask_path: str | os.PathLike,
    mask_field: str,
    nside: int,
    threshold: float,
    coordsys_if_missing: str | None,
) -> tuple[np.ndarray, int]:
    """The keep-mask field as a ``(12 nside**2,)`` uint8 mask (1 = masked), and its input Nside."""
    keep = read_healpix_map(mask_path, mask_field, coordsys_if_missing=coordsys_if_missing)
    if keep.min() < 0.0 or keep.max() > 1.0:
        raise InputError(
            f"{mask_path}: field {mask_field!r} has values in [{keep.min()}, {keep.max()}]; "
            "expected a keep-mask with values in [0, 1] (1 = keep)"
        )
    mask_nside = hp.npix2nside(keep.size)
    masked = harmonic.mask_to_nside(keep, nside, threshold=threshold)
    log.info(
        "mask %s[%s]: Nside %d -> %d, masked fraction %.4f",
        mask_path,
        mask_field,
        mask_nside,
        nside,
        masked.mean(),
    )
    return masked, mask_nside


def _filter_channels(
    stack: np.ndarray,
    hi: np.ndarray,
    velocities: np.ndarray,
    lowpass: Callable[[np.ndarray], np.ndarray],
    t0: float,
) -> None:
    """Low-pass each ``(npix_in,)`` column of ``hi`` (``(npix_in, nchan)``, K) into the same
    column of ``stack`` (``(npix, nchan + 1)``), logging progress against start time ``t0``."""
    nchan = hi.shape[1]
    for j in range(nchan):
        stack[:, j] = lowpass(hi[:, j])
        if j % 8 == 0 or j == nchan - 1:
            log.info(
                "channel %d/%d (%.3f km/s) filtered, %.1f s",
                j + 1,
                nchan,
                velocities[j],
                time.monotonic() - t0,
            )


def _stack_meta(
    *,
    nside: int,
    velocities: np.ndarray,
    velocity_range: tuple[float, float],
    channels: np.ndarray,
    ell_cutoff: float,
    butterworth_order: int,
    map2alm_iters: int,
    nside_in: dict[str, int],
    mask_field: str,
    mask_threshold: float,
    masked: np.ndarray,
    sources: dict[str, str | os.PathLike],
) -> dict[str, Any]:
    """The ``meta.json`` of a stack (see module docstring); key order is part of the bytes."""
    return {
        "layout": "pixel-major (npix, nchan + 1) float32, np.save format",
        "nside": int(nside),
        "npix": int(12 * nside**2),
        "order": "RING",
        "coordsys": "G",
        "nchan": int(channels.size),
        "velocities_kms": [float(v) for v in velocities],
        "velocity_range_kms": list(velocity_range),
        "channel_indices": [int(c) for c in channels],
        "columns": [f"hi_{v:+.3f}kms" for v in velocities] + ["dust"],
        "units": {"hi": "K", "dust": "uK_RJ"},
        "ell_cutoff": float(ell_cutoff),
        "butterworth_order": int(butterworth_order),
        "map2alm_iters": int(map2alm_iters),
        "lmax": {
            "hi": harmonic.filter_lmax(nside_in["hi"], nside, ell_cutoff, butterworth_order),
            "dust": harmonic.filter_lmax(nside_in["dust"], nside, ell_cutoff, butterworth_order),
        },
        "mask": {
            "field": mask_field,
            "convention": "1 = masked",
            "threshold": float(mask_threshold),
            "masked_fraction": float(masked.mean()),
        },
        "nside_in": {k: int(v) for k, v in nside_in.items()},
        "sources": {k: os.fspath(p) for k, p in sources.items()},
    }
