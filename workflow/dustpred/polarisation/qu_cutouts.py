"""Q/U cutouts beside the intensity shards, and the filtered Q/U maps they come from.

**The maps** (:func:`filtered_qu`): a polarised dust table read in the COSMO convention
(:mod:`dustpred.inputs.stokes_maps`) and low-pass filtered and resampled like the intensity
dust (:func:`dustpred.sky.harmonic.lowpass_to_nside` with ``spin=2``: the Butterworth
response on E and B), saved as ``(2, npix)`` float32 ``.npy`` (Q, U; RING).

**The cutouts** (:func:`write_qu_cutouts`): for every cutout of an intensity shard set (its
centres, rotations and masks), the nearest-pixel gnomonic Q/U rotated into the cutout frame
(as :func:`dustpred.polarisation.spin2.cutout_qu`), masked pixels 0. One HDF5 file per subset:

==================================  ===============  =====================================
dataset                             shape, dtype     meaning
==================================  ===============  =====================================
``q``, ``u``                        (N, H, W) f4     target Q, U in the cutout frame
``e``, ``b``                        (N, H, W) f4     their E and B maps (:func:`eb_maps`)
``q_oracle``, ``u_oracle``          (N, H, W) f4     the HI-traced part (synthetic sky only)
``e_oracle``, ``b_oracle``          (N, H, W) f4     its E and B maps
``mask``                            (N, H, W) u1     the intensity shards' mask
``lon``, ``lat``, ``psi``           (N,) f8          centres and rotations, degrees
==================================  ===============  =====================================

Attributes: ``units``, ``convention = 'COSMO'``, ``frame = 'cutout'``, ``nside``,
``reso_arcmin``, ``npix``. Cutout ``i`` is cutout ``i`` of the shard set, so the HI inputs
of the shards line up with it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import h5py
import numpy as np

from dustpred.atomic import atomic_path
from dustpred.cutouts.projection import cutout_pixels
from dustpred.cutouts.shards import ShardSet
from dustpred.errors import InputError
from dustpred.inputs.stokes_maps import read_qu_maps
from dustpred.polarisation.eb import eb_maps
from dustpred.polarisation.spin2 import frame_angles, to_cutout_frame
from dustpred.sky import harmonic
from dustpred.sky.stack import save_npy_atomic

QU_FIELDS = ("q", "u", "e", "b")
VECTORS = ("lon", "lat", "psi")
CHUNK = 256


def filtered_qu(
    path: str | os.PathLike,
    *,
    q_column: str,
    u_column: str,
    nside: int,
    ell_cutoff: float,
    butterworth_order: int,
    map2alm_iters: int = 3,
    convention_if_missing: str | None = None,
    dust_unit_if_missing: str | None = None,
    coordsys_if_missing: str | None = None,
    nthreads: int = 1,
) -> tuple[np.ndarray, str]:
    """Q, U of ``path`` (COSMO) filtered like the intensity dust: ``(2, 12 nside**2)``
    float32, and their unit."""
    qu, unit, _, _ = read_qu_maps(
        path,
        q_column,
        u_column,
        convention_if_missing=convention_if_missing,
        unit_if_missing=dust_unit_if_missing,
        coordsys_if_missing=coordsys_if_missing,
    )
    out = harmonic.lowpass_to_nside(
        qu, nside, ell_cutoff, butterworth_order, iters=map2alm_iters, spin=2, nthreads=nthreads
    )
    return out.astype(np.float32), unit


def write_filtered_qu(path_out: str | os.PathLike, path_in: str | os.PathLike, **kwargs) -> str:
    """:func:`filtered_qu` saved as ``.npy`` (atomically); returns the unit."""
    qu, unit = filtered_qu(path_in, **kwargs)
    save_npy_atomic(path_out, qu)
    return unit


def _load_qu(path: str | os.PathLike, nside: int) -> np.ndarray:
    qu = np.load(path, mmap_mode="r")
    if qu.shape != (2, 12 * nside**2):
        raise InputError(
            f"{path}: Q/U maps of shape {qu.shape}; expected (2, {12 * nside**2}), the Nside "
            f"{nside} of the cutout shards (preprocess.nside)"
        )
    return qu


def write_qu_cutouts(
    shard_paths: Sequence[str | os.PathLike],
    qu_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    oracle_path: str | os.PathLike | None = None,
    unit: str = "",
) -> int:
    """Write the Q/U cutouts of every cutout of ``shard_paths`` (see module docstring).

    Returns the number of cutouts.
    """
    shards = ShardSet(shard_paths)
    if shards.attrs.get("interpolation", "nearest") != "nearest":
        raise InputError(
            f"{shard_paths[0]}: cutouts made with interpolation "
            f"{shards.attrs.get('interpolation')!r}; the Q/U cutouts are nearest-pixel, as "
            "cutouts.interpolation: nearest makes the intensity ones"
        )
    nside, npix, reso = int(shards.attrs["nside"]), shards.npix, float(shards.reso_arcmin)
    maps = {"": _load_qu(qu_path, nside)}
    if oracle_path:
        maps["_oracle"] = _load_qu(oracle_path, nside)
    shape = (shards.n, npix, npix)
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as f:
        for suffix in maps:
            for name in QU_FIELDS:
                f.create_dataset(name + suffix, shape, dtype="f4", chunks=(1, npix, npix))
        f.create_dataset("mask", shape, dtype="u1", chunks=(1, npix, npix))
        for k in VECTORS:
            f.create_dataset(k, (shards.n,), dtype="f8")
        for start, chunk in shards.iter_chunks(["mask", *VECTORS], CHUNK):
            stop = start + len(chunk["mask"])
            centres = [np.asarray(chunk[k], np.float64) for k in VECTORS]
            masked = chunk["mask"].astype(bool)
            # One geometry for the target and the oracle.
            pix = cutout_pixels(nside, *centres, npix=npix, reso_arcmin=reso)
            alpha = frame_angles(*centres, npix=npix, reso_arcmin=reso)
            for suffix, qu in maps.items():
                q, u = to_cutout_frame(qu[0][pix], qu[1][pix], alpha)
                q, u = np.where(masked, 0.0, q), np.where(masked, 0.0, u)
                e, b = eb_maps(q, u, masked)
                for name, values in zip(QU_FIELDS, (q, u, e, b), strict=True):
                    f[f"{name}{suffix}"][start:stop] = values
            f["mask"][start:stop] = chunk["mask"]
            for k, values in zip(VECTORS, centres, strict=True):
                f[k][start:stop] = values
        f.attrs.update(
            units=unit,
            convention="COSMO",
            frame="cutout",
            nside=nside,
            reso_arcmin=reso,
            npix=npix,
        )
    return shards.n


def read_qu_cutouts(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every dataset of a Q/U cutout file, in memory (``mask`` as bool)."""
    with h5py.File(path, "r") as f:
        missing = [k for k in (*QU_FIELDS, "mask", *VECTORS) if k not in f]
        if missing:
            raise InputError(
                f"{path}: Q/U cutouts lack datasets {missing}; expected those of "
                "dustpred.polarisation.qu_cutouts"
            )
        out = {k: f[k][()] for k in f}
    out["mask"] = out["mask"].astype(bool)
    return out
