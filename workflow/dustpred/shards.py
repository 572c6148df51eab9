"""HDF5 cutout shards: writing them from the preprocessed stack, reading them, indexing them.

Layout of one shard file (**contract**, see ARCHITECTURE.md), ``N`` cutouts of ``H = W = npix``:

============================  ===================  =============================================
dataset                       shape, dtype         meaning
============================  ===================  =============================================
``inputs``                    (N, C, H, W) f4/f2   HI channels (K), increasing velocity
``target``                    (N, H, W) f4/f2      dust (unit in ``attrs['units']``)
``mask``                      (N, H, W) uint8      1 = masked (nearest HEALPix pixel masked)
``oracle`` (synthetic sky)    (N, H, W) f4/f2      HI-traced part of the dust (best any HI model)
``lon``, ``lat``, ``psi``     (N,) float64         centre and rotation, degrees
``masked_fraction``           (N,) float64         mean of ``mask``
``slot``                      (N,) int64           global cutout number within the subset
============================  ===================  =============================================

Masked pixels are 0 in ``inputs``, ``target`` and ``oracle``. Attributes: ``units`` (JSON
object: inputs, target, oracle), ``velocities_kms``, ``nside``, ``reso_arcmin``, ``npix``,
``seed``, ``split``, ``subset``, ``interpolation``, ``shard_index``, ``n_shards``,
``n_total`` (cutouts of the subset over all shards), ``max_masked_fraction``,
``min_separation_deg``, ``dtype``, ``format_version``. :func:`read_shard` returns them
decoded. The arrays are chunked one cutout per chunk, uncompressed, so sequential reads stream.

Shard ``i`` of ``K`` holds the subset's slots ``[i*n//K, (i+1)*n//K)``; each slot's cutout
depends only on the seed, subset and slot (:mod:`dustpred.sampling`), so the concatenated
shards are identical for every K.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from functools import partial
from typing import Any

import h5py
import healpy as hp
import numpy as np

from dustpred import projection, sampling
from dustpred.atomic import atomic_path, atomic_write
from dustpred.download import sha256_of
from dustpred.errors import ConfigError, InputError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
VECTOR_FIELDS = ("lon", "lat", "psi", "masked_fraction", "slot")
DTYPES = {"float32": np.float32, "float16": np.float16}
_JSON_ATTRS = ("units",)
_SCATTERITEM = re.compile(r"^(\d+)-of-(\d+)$")


@dataclass(frozen=True)
class CutoutSettings:
    """The ``cutouts`` config keys the shard jobs use (see config/README.md)."""

    npix: int = 64
    reso_arcmin: float = 23.4
    split: str = "north_south"
    n_train: int = 3000
    n_test: int = 300
    max_masked_fraction: float = 0.7
    shards: int = 2
    dtype: str = "float32"
    interpolation: str = "nearest"
    east_west_buffer_deg: float = 36.0
    max_draws: int = 1000
    chunk: int = 32

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> CutoutSettings:
        """Build from the config ``cutouts`` section (unknown keys, e.g. Fig. 1's, ignored)."""
        names = {f.name for f in fields(cls)}
        settings = cls(**{k: v for k, v in section.items() if k in names})
        settings.validate()
        return settings

    def validate(self) -> None:
        checks = [
            ("npix", self.npix >= 2, "an integer >= 2"),
            ("reso_arcmin", self.reso_arcmin > 0, "a positive number"),
            ("split", self.split in sampling.SPLITS, f"one of {list(sampling.SPLITS)}"),
            ("n_train", self.n_train >= 1, "an integer >= 1"),
            ("n_test", self.n_test >= 1, "an integer >= 1"),
            ("max_masked_fraction", 0 <= self.max_masked_fraction <= 1, "in [0, 1]"),
            ("shards", self.shards >= 1, "an integer >= 1"),
            ("dtype", self.dtype in DTYPES, f"one of {list(DTYPES)}"),
            (
                "interpolation",
                self.interpolation in projection.INTERPOLATIONS,
                f"one of {list(projection.INTERPOLATIONS)}",
            ),
            ("east_west_buffer_deg", 0 <= self.east_west_buffer_deg < 180, "in [0, 180)"),
            ("max_draws", self.max_draws >= 1, "an integer >= 1"),
            ("chunk", self.chunk >= 1, "an integer >= 1"),
        ]
        for key, ok, expected in checks:
            if not ok:
                raise ConfigError(
                    f"config key 'cutouts.{key}': found {getattr(self, key)!r}; expected {expected}"
                )

    def count(self, subset: str) -> int:
        return {"train": self.n_train, "test": self.n_test}[subset]


@dataclass
class Preprocessed:
    """The preprocessed inputs of the cutout stage (see :mod:`dustpred.preprocess`)."""

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


def parse_scatteritem(item: str) -> tuple[int, int]:
    """``'3-of-4'`` (Snakemake's scatteritem) -> ``(2, 4)``: 0-based shard index and K."""
    found = _SCATTERITEM.match(str(item))
    if not found or not 1 <= int(found[1]) <= int(found[2]):
        raise InputError(f"scatteritem: found {item!r}; expected 'i-of-K' with 1 <= i <= K")
    return int(found[1]) - 1, int(found[2])


def shard_slots(n_total: int, index: int, n_shards: int) -> np.ndarray:
    """Global slots of shard ``index`` (0-based) of ``n_shards``: a contiguous, balanced run."""
    if not 0 <= index < n_shards:
        raise InputError(f"shard index {index}: expected 0 <= index < {n_shards}")
    return np.arange(index * n_total // n_shards, (index + 1) * n_total // n_shards)


def write_shard(
    path: str | os.PathLike,
    pre: Preprocessed,
    slots: np.ndarray,
    *,
    subset: str,
    settings: CutoutSettings,
    seed: int,
    shard_index: int = 0,
    n_shards: int = 1,
) -> dict[str, Any]:
    """Draw, project and write the cutouts of ``slots`` to one HDF5 shard (atomically).

    Cutouts are processed ``settings.chunk`` at a time and streamed to the file, so memory
    beyond the memory-mapped stack stays ~ chunk * (C + 4) * npix**2 * 8 bytes.

    Returns
    -------
    dict
        Summary: path, subset, count, mean attempts per cutout, seconds.
    """
    t0 = time.monotonic()
    path = os.fspath(path)
    slots = np.asarray(slots, dtype=np.int64)
    n, hw, c = slots.size, settings.npix, pre.nchan
    p = hw * hw
    dtype = DTYPES[settings.dtype]
    region = sampling.split_region(
        settings.split,
        subset,
        npix=settings.npix,
        reso_arcmin=settings.reso_arcmin,
        east_west_buffer_deg=settings.east_west_buffer_deg,
    )
    plane = projection.plane_vectors(settings.npix, settings.reso_arcmin)
    stack = np.asarray(pre.stack)
    units = pre.meta.get("units", {})
    attrs = {
        "units": json.dumps(
            {
                "inputs": units.get("hi", "K"),
                "target": units.get("dust", "unknown"),
                "oracle": units.get("dust", "unknown"),
            }
        ),
        "velocities_kms": np.asarray(pre.meta["velocities_kms"], dtype=np.float64),
        "nside": pre.nside,
        "reso_arcmin": float(settings.reso_arcmin),
        "npix": int(settings.npix),
        "seed": int(seed),
        "split": settings.split,
        "subset": subset,
        "interpolation": settings.interpolation,
        "shard_index": int(shard_index),
        "n_shards": int(n_shards),
        "n_total": int(settings.count(subset)),
        "max_masked_fraction": float(settings.max_masked_fraction),
        "min_separation_deg": float(region.min_separation_deg),
        "dtype": settings.dtype,
        "format_version": FORMAT_VERSION,
    }
    attempts = 0
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs.update(attrs)
        images = {
            "inputs": h5.create_dataset(
                "inputs", (n, c, hw, hw), dtype=dtype, chunks=(1, c, hw, hw) if n else None
            ),
            "target": h5.create_dataset(
                "target", (n, hw, hw), dtype=dtype, chunks=(1, hw, hw) if n else None
            ),
            "mask": h5.create_dataset(
                "mask", (n, hw, hw), dtype=np.uint8, chunks=(1, hw, hw) if n else None
            ),
        }
        if pre.oracle is not None:
            images["oracle"] = h5.create_dataset(
                "oracle", (n, hw, hw), dtype=dtype, chunks=(1, hw, hw) if n else None
            )
        vectors = {
            name: h5.create_dataset(name, (n,), dtype=np.int64 if name == "slot" else "f8")
            for name in VECTOR_FIELDS
        }
        # Gathered in the stack's precision; float16 storage is a cast of whole chunks.
        inputs = np.empty((settings.chunk, c, p), dtype=np.float32)
        target = np.empty((settings.chunk, p), dtype=np.float32)
        for start in range(0, n, settings.chunk):
            stop = min(start + settings.chunk, n)
            m = stop - start
            draws = sampling.draw_cutouts(
                pre.mask,
                slots[start:stop],
                region=region,
                seed=seed,
                subset=subset,
                npix=settings.npix,
                reso_arcmin=settings.reso_arcmin,
                max_masked_fraction=settings.max_masked_fraction,
                max_draws=settings.max_draws,
                plane=plane,
            )
            attempts += int(draws.attempts.sum())
            # rows_of(values2d) iterates over the cutouts' pixel rows of a pixel-major array.
            if settings.interpolation == "nearest":
                rows_of = partial(projection.iter_cutout_rows, pix=draws.pixels, zero=draws.masked)
            else:
                pix4, w4 = projection.bilinear_weights(
                    pre.nside,
                    draws.lon,
                    draws.lat,
                    draws.psi,
                    npix=settings.npix,
                    reso_arcmin=settings.reso_arcmin,
                    plane=plane,
                )
                rows_of = partial(
                    projection.iter_bilinear_rows, pix4=pix4, weights4=w4, zero=draws.masked
                )
            for k, rows in rows_of(stack):
                inputs[k] = rows[:, :c].T
                target[k] = rows[:, c]
            images["inputs"][start:stop] = _stored(inputs[:m], dtype, path).reshape(m, c, hw, hw)
            images["target"][start:stop] = _stored(target[:m], dtype, path).reshape(m, hw, hw)
            images["mask"][start:stop] = draws.masked.reshape(m, hw, hw)
            if pre.oracle is not None:
                oracle = np.empty((m, hw * hw), np.float32)
                for k, rows in rows_of(pre.oracle[:, None]):
                    oracle[k] = rows[:, 0]
                oracle = _stored(oracle, dtype, path)
                images["oracle"][start:stop] = oracle.reshape(m, hw, hw)
            for name in ("lon", "lat", "psi", "masked_fraction"):
                vectors[name][start:stop] = getattr(draws, name)
            vectors["slot"][start:stop] = draws.slots
    seconds = time.monotonic() - t0
    log.info(
        "%s: %d %s cutouts (%.2f draws each) in %.1f s",
        path,
        n,
        subset,
        attempts / max(n, 1),
        seconds,
    )
    return {
        "path": path,
        "subset": subset,
        "count": n,
        "draws_per_cutout": attempts / max(n, 1),
        "seconds": seconds,
    }


def _stored(values: np.ndarray, dtype: type, path: str) -> np.ndarray:
    """``values`` (float32) in the storage dtype; refuses values float16 cannot hold."""
    if dtype == np.float32:
        return values
    limit = float(np.finfo(np.float16).max)
    # min/max are fast SIMD reductions, and NaN propagates through them.
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if not (-limit <= lo and hi <= limit):
        raise InputError(
            f"{path}: values in [{lo:g}, {hi:g}] do not fit float16 (|x| <= {limit:g}, finite); "
            "expected config 'cutouts.dtype: float32' for data of this range"
        )
    return values.astype(dtype)


def write_shards(
    stack_path: str | os.PathLike,
    mask_path: str | os.PathLike,
    meta_path: str | os.PathLike,
    oracle_path: str | os.PathLike | None,
    train_path: str | os.PathLike,
    test_path: str | os.PathLike,
    *,
    cutouts: dict[str, Any],
    seed: int,
    scatteritem: str,
) -> list[dict[str, Any]]:
    """One scatter job: shard ``scatteritem`` ('i-of-K') of the train and of the test subset.

    Parameters
    ----------
    cutouts
        The config ``cutouts`` section.
    seed
        The config's master ``seed``.
    """
    settings = CutoutSettings.from_config(cutouts)
    # K comes from the job (Snakemake's --set-scatter may override config 'cutouts.shards');
    # the cutouts do not depend on it.
    index, n_shards = parse_scatteritem(scatteritem)
    pre = load_preprocessed(stack_path, mask_path, meta_path, oracle_path)
    summaries = []
    for subset, path in (("train", train_path), ("test", test_path)):
        slots = shard_slots(settings.count(subset), index, n_shards)
        summaries.append(
            write_shard(
                path,
                pre,
                slots,
                subset=subset,
                settings=settings,
                seed=seed,
                shard_index=index,
                n_shards=n_shards,
            )
        )
    return summaries


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def _decode_attrs(raw: h5py.AttributeManager) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, bytes):
            value = value.decode()
        if key in _JSON_ATTRS:
            value = json.loads(value)
        elif isinstance(value, np.generic):
            value = value.item()
        attrs[key] = value
    return attrs


def read_shard(path: str | os.PathLike, fields: Sequence[str] | None = None) -> dict[str, Any]:
    """Read one shard into memory.

    Parameters
    ----------
    fields
        Datasets to read (default: all present, e.g. ``('inputs', 'target', 'mask')``).

    Returns
    -------
    dict
        ``{name: array}`` for each dataset (image fields in their stored dtype) plus
        ``'attrs'``: the decoded attributes (``units`` as a dict, ``velocities_kms`` array).
    """
    path = os.fspath(path)
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise InputError(f"{path}: cannot open as HDF5 ({err}); expected a cutout shard") from err
    with h5:
        names = list(fields) if fields is not None else list(h5.keys())
        missing = [name for name in names if name not in h5]
        if missing:
            raise InputError(f"{path}: no dataset(s) {missing}; found {sorted(h5.keys())}")
        out: dict[str, Any] = {name: h5[name][()] for name in names}
        out["attrs"] = _decode_attrs(h5.attrs)
    return out


def iter_shards(
    paths: Iterable[str | os.PathLike], fields: Sequence[str] | None = None
) -> Iterator[dict[str, Any]]:
    """:func:`read_shard` over ``paths``, one shard in memory at a time."""
    for path in paths:
        yield read_shard(path, fields)


def load_shards(
    paths: Sequence[str | os.PathLike], fields: Sequence[str] | None = None
) -> dict[str, Any]:
    """Read shards and concatenate them along the cutout axis (in the order given).

    Returns
    -------
    dict
        ``{name: (N_total, ...) array}`` and ``'attrs'`` of the first shard (``n_shards``,
        ``shard_index`` describe that shard only). Raises InputError if the shards disagree
        on geometry, channels, split or subset.
    """
    paths = list(paths)
    if not paths:
        raise InputError("load_shards: no shard paths given; expected at least one")
    parts = list(iter_shards(paths, fields))
    first = parts[0]["attrs"]
    for path, part in zip(paths[1:], parts[1:], strict=True):
        attrs = part["attrs"]
        for key in ("nside", "npix", "reso_arcmin", "split", "subset", "seed", "interpolation"):
            if attrs.get(key) != first.get(key):
                raise InputError(
                    f"{os.fspath(path)}: attribute {key}={attrs.get(key)!r}; expected "
                    f"{first.get(key)!r} like {os.fspath(paths[0])}"
                )
    names = [key for key in parts[0] if key != "attrs"]
    out: dict[str, Any] = {name: np.concatenate([part[name] for part in parts]) for name in names}
    out["attrs"] = first
    return out


# --------------------------------------------------------------------------------------
# Index (the gather step)
# --------------------------------------------------------------------------------------


def write_index(
    index_path: str | os.PathLike,
    train_paths: Sequence[str | os.PathLike],
    test_paths: Sequence[str | os.PathLike],
    *,
    cutouts: dict[str, Any],
    seed: int,
    threads: int = 1,
) -> dict[str, Any]:
    """Write ``index.json`` for a cutout set: counts, SHA-256 checksums and the config slice.

    Checks that each subset's shards hold exactly the slots ``0..n-1`` in order.
    """
    settings = CutoutSettings.from_config(cutouts)
    all_paths = [os.fspath(p) for p in (*train_paths, *test_paths)]
    with ThreadPoolExecutor(max_workers=max(1, int(threads))) as pool:
        checksums = dict(zip(all_paths, pool.map(sha256_of, all_paths), strict=True))
    config_slice = {k: v for k, v in asdict(settings).items() if k != "chunk"}
    config_slice["shards"] = len(train_paths)
    index: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "seed": int(seed),
        "cutouts": config_slice,
        "subsets": {},
    }
    directory = os.path.dirname(os.path.abspath(index_path))
    for subset, paths in (("train", train_paths), ("test", test_paths)):
        entries, total, attrs = [], 0, {}
        for path in map(os.fspath, paths):
            with h5py.File(path, "r") as h5:
                slots = h5["slot"][()]
                attrs = _decode_attrs(h5.attrs)
                fields_present = sorted(h5.keys())
            if attrs.get("subset") != subset or not np.array_equal(
                slots, np.arange(total, total + slots.size)
            ):
                raise InputError(
                    f"{path}: subset {attrs.get('subset')!r}, slots {slots[:1]}..; expected "
                    f"{subset!r} slots from {total} (shards in order)"
                )
            entries.append(
                {
                    "path": os.path.relpath(os.path.abspath(path), directory),
                    "count": int(slots.size),
                    "bytes": os.path.getsize(path),
                    "sha256": checksums[path],
                }
            )
            total += slots.size
        if total != settings.count(subset):
            raise InputError(
                f"{index_path}: {subset} shards hold {total} cutouts; expected "
                f"{settings.count(subset)} (config 'cutouts.n_{subset}')"
            )
        index["subsets"][subset] = {
            "count": total,
            "shards": entries,
            "fields": fields_present,
        }
    if attrs:
        index["nside"] = attrs["nside"]
        index["nchan"] = int(len(attrs["velocities_kms"]))
        index["velocities_kms"] = [float(v) for v in attrs["velocities_kms"]]
        index["units"] = attrs["units"]
    atomic_write(index_path, lambda tmp: tmp.write_text(json.dumps(index, indent=2) + "\n"))
    log.info("%s: %s", index_path, {s: v["count"] for s, v in index["subsets"].items()})
    return index
