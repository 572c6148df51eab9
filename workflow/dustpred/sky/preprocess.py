"""Raw FITS inputs -> the pixel-major HEALPix stack that cutouts are cut from.

Steps (paper, section 2):

1. select the HI channels whose centre lies in ``velocity_kms`` (inclusive; default
   -64.5..17 km/s -> 64 HI4PI channels);
2. bring each channel and the dust map to the working Nside and apply the Butterworth
   low-pass in one harmonic step (:func:`dustpred.sky.harmonic.lowpass_to_nside`);
3. take the mask field (``LR72``) by name, bring it to the working Nside
   (:func:`dustpred.sky.harmonic.mask_to_nside`) and store it with 1 = MASKED.

With ``hi_kind='column_density'`` the HI input is one N_HI map (cm^-2 or 1e20 cm^-2, e.g.
HI4PI's ``NHI_HPX.fits``) instead of a cube: step 1 is skipped and the stack has one HI
column, N_HI in 1e20 cm^-2, at the pseudo-velocity 0 km/s (``meta['hi_kind']`` says so).
With ``mask_from_dust`` (``{'keep_fraction': f, 'fwhm_deg': s}``) no mask file is read:
as for Planck's LR masks, the dust map is smoothed with a Gaussian of FWHM ``s`` degrees
and the brightest ``1 - f`` of the sky (working pixels above the f-quantile) is masked.

Outputs (all RING, working Nside):

- ``stack.npy``: ``(npix, nchan + 1)`` float32 in ``np.save`` format (open with
  ``np.load(path, mmap_mode='r')``): columns are the HI channels in increasing velocity
  (K, or N_HI in 1e20 cm^-2) and the dust last (unit of its family, as read: uK_RJ,
  uK_CMB, MJy/sr or mag; never converted across families). Pixel-major, so a cutout
  reads whole rows.
- ``mask.npy``: ``(npix,)`` uint8, 1 = masked.
- ``meta.json``: Nside, channel velocities, units, column names, filter settings, masked
  fraction and source files.

Memory: the selected channels are read once at the input Nside, ``(npix_in, nchan)``
float32, then filtered one channel at a time into a memory-mapped output, so the peak is
about the input selection plus the output (~2x the output when Nside in = out).
Every output is written to a temporary file in its directory and renamed when complete.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import healpy as hp
import numpy as np

from dustpred.atomic import atomic_path
from dustpred.errors import InputError
from dustpred.inputs.healpix_maps import (
    DUST_UNITS,
    NHI_UNIT,
    read_column_density_map,
    read_dust_map,
    read_healpix_map,
)
from dustpred.inputs.hi_cube import HI_COLUMN, open_hi_cube
from dustpred.sky import harmonic
from dustpred.sky.stack import save_npy_atomic, write_json_atomic

log = logging.getLogger(__name__)

# Threads of each channel's transforms; the job's threads run nthreads // 4 channels at once
# (one Nside-1024 transform scales poorly past a few threads).
THREADS_PER_MAP = 4


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
    mask_path: str | os.PathLike | None,
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
    hi_kind: str = "cube",
    hi_unit_if_missing: str | None = None,
    dust_unit_if_missing: str | None = None,
    mask_from_dust: dict[str, float] | None = None,
    nthreads: int = 1,
) -> dict[str, Any]:
    """Build ``stack.npy``, ``mask.npy`` and ``meta.json`` (see module docstring).

    Parameters
    ----------
    hi_path, dust_path, mask_path
        Raw inputs: HI cube (file or directory) or N_HI map, dust map table, mask table
        (None with ``mask_from_dust``).
    stack_path, mask_out_path, meta_path
        Outputs.
    velocity_kms
        ``(vmin, vmax)`` km/s; channels with centres inside (inclusive) are kept (cube only).
    nside
        Working Nside.
    ell_cutoff, butterworth_order
        Butterworth low-pass settings.
    mask_field
        Mask column (1 = keep in the file).
    mask_threshold
        Kept fraction of a working pixel's area needed to keep it.
    hi_kind
        ``'cube'`` (brightness temperature spectra, K) or ``'column_density'`` (N_HI map).
    hi_unit_if_missing, dust_unit_if_missing
        Units assumed for an N_HI or dust column without ``TUNIT``; None refuses.
    mask_from_dust
        ``{'keep_fraction', 'fwhm_deg'}``: mask the brightest smoothed dust instead of
        reading ``mask_path``.
    nthreads
        Threads of each harmonic transform (the job's threads).

    Returns
    -------
    dict
        The metadata written to ``meta_path``.
    """
    t0 = time.monotonic()
    vmin, vmax = (float(v) for v in velocity_kms)
    hi = _open_hi(
        hi_path, hi_kind, hi_column, (vmin, vmax), hi_unit_if_missing, coordsys_if_missing
    )
    # Read everything needed before writing anything, so bad inputs fail fast.
    dust, dust_unit, dust_header = read_dust_map(
        dust_path,
        dust_column,
        unit_if_missing=dust_unit_if_missing,
        coordsys_if_missing=coordsys_if_missing,
    )
    log.info("dust %s[%s]: unit %s (%s)", dust_path, dust_column, dust_unit, dust_header)
    if mask_from_dust:
        masked, mask_meta = _masked_from_dust(dust, nside, mask_from_dust, map2alm_iters)
        mask_meta["unit"] = dust_unit
        mask_nside = hp.npix2nside(dust.size)
    else:
        masked, mask_nside = _masked_at_nside(
            mask_path, mask_field, nside, mask_threshold, coordsys_if_missing
        )
        mask_meta = {
            "field": mask_field,
            "convention": "1 = masked",
            "threshold": float(mask_threshold),
        }

    def lowpass(values: np.ndarray, threads: int) -> np.ndarray:
        return harmonic.lowpass_to_nside(
            values, nside, ell_cutoff, butterworth_order, iters=map2alm_iters, nthreads=threads
        )

    sources = {"hi": hi_path, "dust": f"{dust_path}[{dust_column}]"}
    _write_stack(stack_path, hi, dust, nside, lowpass, t0, nthreads, masked, sources)
    save_npy_atomic(mask_out_path, masked)

    meta = _stack_meta(
        nside=nside,
        velocities=hi.velocities,
        velocity_range=(vmin, vmax),
        channels=hi.channels,
        ell_cutoff=ell_cutoff,
        butterworth_order=butterworth_order,
        map2alm_iters=map2alm_iters,
        nside_in={"hi": hi.nside, "dust": hp.npix2nside(dust.size), "mask": mask_nside},
        mask=mask_meta,
        masked=masked,
        sources={"hi": hi_path, "dust": dust_path, "mask": mask_path or "dust threshold"},
        units={"hi": hi.unit, "dust": dust_unit},
        hi_kind=hi_kind,
    )
    meta["dust_header"] = dust_header
    write_json_atomic(meta_path, meta)
    log.info(
        "wrote %s, %s, %s in %.1f s", stack_path, mask_out_path, meta_path, time.monotonic() - t0
    )
    return meta


@dataclass(frozen=True)
class _HISource:
    """The HI input, opened: what to read (``read() -> (npix_in, nchan)``) and its axis."""

    read: Callable[[], np.ndarray]
    velocities: np.ndarray
    channels: np.ndarray
    nside: int
    unit: str


def _open_hi(
    path: str | os.PathLike,
    kind: str,
    column: str,
    velocity_kms: tuple[float, float],
    unit_if_missing: str | None,
    coordsys_if_missing: str | None,
) -> _HISource:
    """Validate the HI input of kind ``kind`` (cube | column_density); reading is deferred."""
    if kind == "column_density":
        nhi = read_column_density_map(
            path, column, unit_if_missing=unit_if_missing, coordsys_if_missing=coordsys_if_missing
        )
        log.info("N_HI map %s[%s]: Nside %d", path, column, hp.npix2nside(nhi.size))
        return _HISource(
            lambda: nhi[:, None], np.zeros(1), np.zeros(1, int), hp.npix2nside(nhi.size), NHI_UNIT
        )
    if kind != "cube":
        raise InputError(f"data.hi_kind is {kind!r}; expected 'cube' or 'column_density'")
    cube = open_hi_cube(path, column=column, coordsys_if_missing=coordsys_if_missing)
    channels = cube.channels_in_range(*velocity_kms)
    velocities = cube.velocities[channels]
    log.info(
        "HI cube %s: Nside %d, %d channels; selecting %d channels %.3f..%.3f km/s",
        path,
        cube.nside,
        cube.nchan,
        channels.size,
        velocities[0],
        velocities[-1],
    )
    return _HISource(lambda: cube.read_channels(channels), velocities, channels, cube.nside, "K")


def _write_stack(
    stack_path: str | os.PathLike,
    hi_source: _HISource,
    dust: np.ndarray,
    nside: int,
    lowpass: Callable[[np.ndarray, int], np.ndarray],
    t0: float,
    nthreads: int,
    masked: np.ndarray,
    sources: dict[str, str],
) -> None:
    """Read the selected channels, then write ``stack.npy``: filtered channels, dust last.

    ``lowpass(map, threads)`` filters one map. The channels are filtered
    ``nthreads // THREADS_PER_MAP`` at a time (a transform of one Nside-1024 map does not
    keep 16 threads busy); the dust, alone, gets all ``nthreads``. The ``(npix_in, nchan)``
    channel selection is freed before the dust is filtered; the stack is a memory map under
    a temporary name until complete.
    """
    hi = hi_source.read()
    nchan = hi.shape[1]
    check_not_constant(
        hi.sum(axis=1, dtype=np.float64), f"{sources['hi']} (sum of the selected channels)"
    )
    check_not_constant(dust, sources["dust"])
    log.info(
        "read %d HI channels (%.1f MB) in %.1f s",
        nchan,
        hi.nbytes / 2**20,
        time.monotonic() - t0,
    )
    with atomic_path(stack_path) as tmp:
        stack = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.float32, shape=(12 * nside**2, nchan + 1)
        )
        filter_channels(stack, hi, hi_source.velocities, lowpass, t0, nthreads)
        del hi
        stack[:, nchan] = lowpass(dust, nthreads)
        log.info(
            "dust filtered (Nside %d -> %d), %.1f s",
            hp.npix2nside(dust.size),
            nside,
            time.monotonic() - t0,
        )
        stack.flush()
        check_stack(stack, masked, sources)
        del stack


def check_not_constant(values: np.ndarray, what: str) -> None:
    """InputError naming ``what`` when the raw input map ``values`` is the same everywhere."""
    if np.ptp(values) == 0:
        raise InputError(
            f"{what}: every pixel is {float(values.flat[0])!r}; expected a map with structure "
            "(an all-zero or constant input carries no signal)"
        )


def check_stack(stack: np.ndarray, masked: np.ndarray, sources: dict[str, str]) -> None:
    """InputError when the stack cannot carry a signal: a non-finite value (an input that
    overflows float32, or NaNs the filter spread), or a dust map or HI total without variance
    on the unmasked sky (a constant or all-zero input, which would give r = 0 everywhere;
    spread below 1e-6 of its level). Constant inputs are refused before filtering
    (:func:`check_not_constant`); this catches what only the unmasked sky shows.

    ``stack``: ``(npix, nchan + 1)``; ``masked``: ``(npix,)``, 1 = masked; ``sources``: the
    ``hi`` and ``dust`` inputs, named in the message.
    """
    keep = masked == 0
    finite = np.ones(stack.shape[1], dtype=bool)
    hi_total = np.empty(stack.shape[0])
    for lo in range(0, stack.shape[0], 1 << 16):  # rows in blocks: the stack is pixel-major
        block = np.asarray(stack[lo : lo + (1 << 16)])
        finite &= np.isfinite(block).all(axis=0)
        hi_total[lo : lo + block.shape[0]] = block[:, :-1].sum(axis=1, dtype=np.float64)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        what = [
            f"dust ({sources['dust']})" if j == stack.shape[1] - 1 else f"HI channel {j}"
            for j in bad[:5]
        ]
        raise InputError(
            f"{sources['hi']}, {sources['dust']}: the filtered stack has non-finite values in "
            f"{', '.join(what)}; expected finite maps within float32 range (check the input's "
            "units and blank values)"
        )
    for name, values in (("dust", stack[:, -1]), ("hi", hi_total)):
        kept = np.asarray(values, dtype=np.float64)[keep]
        # Spread at the level of float32 round-off is no structure either.
        if not kept.size or np.ptp(kept) <= 1e-6 * np.abs(kept).max():
            label = "the dust map" if name == "dust" else "the HI (sum of the selected channels)"
            raise InputError(
                f"{sources[name]}: {label} is constant on the unmasked sky (after filtering); "
                "expected a map with structure (an all-zero or constant input carries no signal)"
            )


def _masked_from_dust(
    dust: np.ndarray, nside: int, settings: dict[str, float], iters: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Mask (1 = masked, ``(12 nside**2,)`` uint8) of the brightest smoothed dust.

    Like Planck's LR masks: the dust map is smoothed with a Gaussian of FWHM
    ``settings['fwhm_deg']``, brought to ``nside``, and pixels above its
    ``settings['keep_fraction']`` quantile are masked. Returns the mask and its meta entry
    (the threshold is in the dust map's unit).
    """
    keep_fraction = float(settings["keep_fraction"])
    fwhm = np.radians(float(settings["fwhm_deg"]))
    smooth = hp.smoothing(dust, fwhm=fwhm, iter=iters)
    smooth = hp.ud_grade(smooth, nside) if hp.npix2nside(smooth.size) != nside else smooth
    threshold = float(np.quantile(smooth, keep_fraction))
    masked = (smooth > threshold).astype(np.uint8)
    log.info(
        "mask from dust: FWHM %.2f deg, keep fraction %.3f -> threshold %.4g, masked %.4f",
        settings["fwhm_deg"],
        keep_fraction,
        threshold,
        masked.mean(),
    )
    meta = {
        "field": "smoothed dust above threshold",
        "convention": "1 = masked",
        "keep_fraction": keep_fraction,
        "fwhm_deg": float(settings["fwhm_deg"]),
        "dust_threshold": threshold,
    }
    return masked, meta


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


def filter_channels(
    stack: np.ndarray,
    hi: np.ndarray,
    velocities: np.ndarray,
    lowpass: Callable[[np.ndarray, int], np.ndarray],
    t0: float,
    nthreads: int,
) -> None:
    """Low-pass each ``(npix_in,)`` column of ``hi`` (``(npix_in, nchan)``, K) into the same
    column of ``stack`` (``(npix, nchan + 1)``), several columns at once (ducc0 releases the
    GIL), logging progress against start time ``t0``. Each column's result does not depend
    on the threads, so neither does the stack."""
    nchan = hi.shape[1]
    workers = max(1, min(nchan, int(nthreads) // THREADS_PER_MAP))
    per_map = max(1, int(nthreads) // workers)

    def filter_column(j: int) -> int:
        stack[:, j] = lowpass(hi[:, j], per_map)
        return j

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, j in enumerate(pool.map(filter_column, range(nchan)), start=1):
            if done % 8 == 1 or done == nchan:
                log.info(
                    "channel %d/%d (%.3f km/s) filtered (%d at a time, %d threads each), %.1f s",
                    j + 1,
                    nchan,
                    velocities[j],
                    workers,
                    per_map,
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
    mask: dict[str, Any],
    masked: np.ndarray,
    sources: dict[str, str | os.PathLike],
    units: dict[str, str],
    hi_kind: str,
) -> dict[str, Any]:
    """The ``meta.json`` of a stack (see module docstring); key order is part of the bytes."""
    return {
        "layout": "pixel-major (npix, nchan + 1) float32, np.save format",
        "hi_kind": hi_kind,
        "nside": int(nside),
        "npix": int(12 * nside**2),
        "order": "RING",
        "coordsys": "G",
        "nchan": int(channels.size),
        "velocities_kms": [float(v) for v in velocities],
        "velocity_range_kms": list(velocity_range),
        "channel_indices": [int(c) for c in channels],
        "columns": [f"hi_{v:+.3f}kms" for v in velocities] + ["dust"],
        "units": dict(units),
        "ell_cutoff": float(ell_cutoff),
        "butterworth_order": int(butterworth_order),
        "map2alm_iters": int(map2alm_iters),
        "lmax": {
            "hi": harmonic.filter_lmax(nside_in["hi"], nside, ell_cutoff, butterworth_order),
            "dust": harmonic.filter_lmax(nside_in["dust"], nside, ell_cutoff, butterworth_order),
        },
        "mask": {
            **mask,
            "masked_fraction": float(masked.mean()),
        },
        "nside_in": {k: int(v) for k, v in nside_in.items()},
        "sources": {k: os.fspath(p) for k, p in sources.items()},
    }
