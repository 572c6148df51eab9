"""The HDF5 cutout shard format: its one writer (:class:`ShardWriter`), reader (:class:`ShardSet`).

Layout of one shard file (**contract**, see ARCHITECTURE.md), ``N`` cutouts of ``H = W = npix``:

============================  ===================  =============================================
dataset                       shape, dtype         meaning
============================  ===================  =============================================
``inputs``                    (N, C, H, W) f4/f2   HI channels (K), increasing velocity
``target``                    (N, H, W) f4         dust (unit in ``attrs['units']``)
``mask``                      (N, H, W) uint8      1 = masked (nearest HEALPix pixel masked)
``oracle`` (synthetic sky)    (N, H, W) f4         HI-traced part of the dust (best any HI model)
``lon``, ``lat``, ``psi``     (N,) float64         centre and rotation, degrees
``masked_fraction``           (N,) float64         mean of ``mask``
``slot``                      (N,) int64           global cutout number within the subset
============================  ===================  =============================================

With config ``cutouts.store: indices`` a shard holds the pixels instead of the images
(nearest-pixel sampling makes a cutout a gather of stack rows): ``pixels`` (N, H, W) int32,
the RING pixel of the preprocessed stack under each image pixel; ``target_pixels`` (N, H, W)
int32 for shuffled pairing, the pixels the target and oracle come from; ``mask`` and the
vectors as above. Attributes ``store = 'indices'``, ``stack_path`` and ``oracle_path`` (''
without an oracle) name the stack and oracle ``.npy`` files, from which :class:`ShardSet`
gathers ``inputs``, ``target`` and ``oracle`` on reading (:mod:`dustpred.sky.gather`), equal
element for element to the image shards of the same cutouts (tests/test_shards.py).

Masked pixels are 0 in ``inputs``, ``target`` and ``oracle``. Attributes: ``units`` (JSON
object: inputs, target, oracle), ``velocities_kms``, ``nside``, ``reso_arcmin``, ``npix``,
``seed``, ``split``, ``subset``, ``interpolation``, ``shard_index``, ``n_shards``,
``n_total`` (cutouts of the subset over all shards), ``max_masked_fraction``,
``min_separation_deg``, ``dtype``, ``format_version``. :attr:`ShardSet.attrs` holds them
decoded. The arrays are chunked one cutout per chunk (uncompressed, or lzf with byte shuffle
with config ``cutouts.compression: lzf``), so sequential reads stream.
``dtype`` (config ``cutouts.dtype``) is the storage type of ``inputs`` alone: float16 halves
the files (the inputs are 64 of every 67 maps) while the dust target and the oracle, whose
units (e.g. µK_RJ) can exceed float16's range and which the metrics compare at full
precision, stay float32.

The cutout stage (:mod:`dustpred.cutouts.extract`) writes shards through :class:`ShardWriter`; its
index step, the models (linear fit, U-Net training, prediction) and the tests read them
through :class:`ShardSet`. Every job that reads shards first checks them against the size
and sha256 that the index step recorded (:func:`check_against_index`): Snakemake reruns
nothing for a shard overwritten in place with its mtime kept.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import h5py
import numpy as np

from dustpred.atomic import atomic_path
from dustpred.errors import InputError
from dustpred.inputs.download import sha256_of
from dustpred.sky.gather import GATHERED, PIXEL_FIELDS, check_range, gather, open_stack

FORMAT_VERSION = 1
STORES = ("images", "indices")
IMAGE_FIELDS = ("inputs", "target", "mask", "oracle")
VECTOR_FIELDS = ("lon", "lat", "psi", "masked_fraction", "slot")
REQUIRED = ("inputs", "target", "mask")
DTYPES = {"float32": np.float32, "float16": np.float16}
# HDF5 filters of the image datasets: lzf with byte shuffle is lossless and decodes at GB/s.
COMPRESSIONS = {"none": {}, "lzf": {"compression": "lzf", "shuffle": True}}
_JSON_ATTRS = ("units",)
# Attributes every shard of one set must share (besides channels, shape and reso).
_SAME_ATTRS = ("nside", "npix", "reso_arcmin", "split", "subset", "seed", "interpolation")


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


class ShardWriter:
    """Write one shard file atomically, a run of cutouts at a time.

    Used as a context manager: entering creates the file under a temporary name with
    ``attrs`` and every dataset of the layout (``oracle`` only if ``oracle``); leaving
    renames it onto ``path``, or removes it if the block raised.

    Parameters
    ----------
    path : path
        The shard file.
    n : int
        Number of cutouts N.
    channels, npix : int
        C and H = W.
    dtype : str
        Storage dtype of the image fields, a key of :data:`DTYPES`.
    oracle : bool
        Whether the shard has an ``oracle`` dataset (images store).
    attrs : dict
        File attributes (see the module docstring), written as given.
    compression : str
        A key of :data:`COMPRESSIONS`.
    store : str
        ``'images'``, or ``'indices'``: datasets ``pixels`` (and ``target_pixels`` with
        ``paired``) instead of ``inputs``, ``target`` and ``oracle``.
    paired : bool
        Whether the target comes from other pixels (shuffled pairing; indices store).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        n: int,
        *,
        channels: int,
        npix: int,
        dtype: str,
        oracle: bool,
        attrs: dict[str, Any],
        compression: str = "none",
        store: str = "images",
        paired: bool = False,
    ) -> None:
        self.path = os.fspath(path)
        self.store, self.paired = store, bool(paired)
        self.filters = COMPRESSIONS[compression]
        self.n, self.channels, self.npix = int(n), int(channels), int(npix)
        self.dtype = DTYPES[dtype]
        self.oracle = bool(oracle)
        self.attrs = attrs
        self._stack = ExitStack()
        self._datasets: dict[str, h5py.Dataset] = {}

    def __enter__(self) -> ShardWriter:
        with ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(self.path))
            h5 = stack.enter_context(h5py.File(tmp, "w"))
            h5.attrs.update(self.attrs)
            self._create_datasets(h5)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc_info: object) -> bool:
        return bool(self._stack.__exit__(*exc_info))

    def _create_datasets(self, h5: h5py.File) -> None:
        # Creation order fixes the file's byte layout: keep it (byte-identical reruns).
        n, c, hw = self.n, self.channels, self.npix
        for name in self._image_fields():
            shape = (n, c, hw, hw) if name == "inputs" else (n, hw, hw)
            dtype = {"mask": np.uint8, "inputs": self.dtype}.get(name, np.float32)
            dtype = np.int32 if name in PIXEL_FIELDS else dtype
            chunks = (1, *shape[1:]) if n else None
            self._datasets[name] = h5.create_dataset(
                name, shape, dtype=dtype, chunks=chunks, **(self.filters if n else {})
            )
        for name in VECTOR_FIELDS:
            dtype = np.int64 if name == "slot" else "f8"
            self._datasets[name] = h5.create_dataset(name, (n,), dtype=dtype)

    def _image_fields(self) -> list[str]:
        if self.store == "indices":
            return ["pixels", *(["target_pixels"] if self.paired else []), "mask"]
        return [name for name in IMAGE_FIELDS if name != "oracle" or self.oracle]

    def write(self, start: int, values: dict[str, np.ndarray]) -> None:
        """Write cutouts ``start, start + 1, ...`` of the datasets in ``values``.

        Image fields are given in float32 (any shape that reshapes to the dataset's rows,
        e.g. (m, C, H*W)), ``inputs`` cast to the storage dtype; ``mask`` as bool or uint8.
        Raises InputError if float16 storage cannot hold the values.
        """
        unknown = sorted(set(values) - set(self._datasets))
        if unknown:
            raise ValueError(f"{self.path}: no dataset(s) {unknown}; has {list(self._datasets)}")
        # In creation order, whatever the order of ``values`` (byte-identical files).
        for name, dataset in self._datasets.items():
            if name not in values:
                continue
            rows = np.asarray(values[name])
            m = rows.shape[0]
            if name == "inputs":
                rows = _stored(rows, self.dtype, self.path)
            dataset[start : start + m] = rows.reshape(m, *dataset.shape[1:])


def _stored(values: np.ndarray, dtype: type, path: str) -> np.ndarray:
    """``values`` (float32) in the storage dtype; refuses values float16 cannot hold."""
    if dtype == np.float32:
        return values
    # min/max are fast SIMD reductions, and NaN propagates through them.
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    check_range(lo, hi, dtype, path)
    return values.astype(dtype)


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def decode_attrs(raw: h5py.AttributeManager) -> dict[str, Any]:
    """Shard attributes as Python values: ``units`` as a dict, strings decoded, numpy
    scalars as Python scalars, arrays (``velocities_kms``) left as arrays."""
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


def _open(path: str) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path}: cannot open as HDF5 ({exc}); expected a cutout shard") from exc


def _require(f: h5py.File, path: str, names: Sequence[str]) -> None:
    missing = [k for k in names if k not in f]
    if missing:
        raise InputError(f"{path}: no dataset(s) {missing}; expected {list(names)}")


def _describe(path: str) -> dict[str, Any]:
    """Count, geometry, fields and attributes of one shard file; checks the required layout."""
    with _open(path) as f:
        attrs = decode_attrs(f.attrs)
        indices = attrs.get("store") == "indices"
        first = "pixels" if indices else "inputs"
        for name in ("pixels", "mask") if indices else REQUIRED:
            if name not in f:
                required = ["pixels", "mask"] if indices else list(REQUIRED)
                raise InputError(f"{path}: no dataset '{name}'; expected datasets {required}")
        shape = f[first].shape
        if len(shape) != (3 if indices else 4):
            expected = "(N, H, W)" if indices else "(N, C, H, W)"
            raise InputError(f"{path}: '{first}' has shape {shape}; expected {expected}")
        velocities = np.asarray(f.attrs.get("velocities_kms", np.arange(shape[1])), float)
        n, c, (h, w) = shape[0], (velocities.size if indices else shape[1]), shape[-2:]
        paired = [k for k in ("target_pixels",) if k in f] if indices else ["target"]
        for name in ["mask", *paired]:
            if f[name].shape != (n, h, w):
                raise InputError(
                    f"{path}: '{name}' has shape {f[name].shape}; expected {(n, h, w)}"
                )
        fields = set(f.keys())
        if indices:
            fields |= {"inputs", "target"} | ({"oracle"} if attrs.get("oracle_path") else set())
        meta = {
            "n": n,
            "channels": c,
            "shape": (h, w),
            "fields": sorted(fields),
            "velocities_kms": velocities,
            "reso_arcmin": float(f.attrs.get("reso_arcmin", np.nan)),
            "attrs": attrs,
        }
    if not np.isfinite(meta["reso_arcmin"]):
        raise InputError(f"{path}: no attribute 'reso_arcmin'; expected the pixel size")
    return meta


def _check_same(path: str, meta: dict[str, Any], first: dict[str, Any], first_path: str) -> None:
    """Refuse a shard whose geometry or set attributes differ from the first shard's."""
    geometry = ("channels", "shape", "reso_arcmin")
    if tuple(meta[k] for k in geometry) != tuple(first[k] for k in geometry):
        raise InputError(
            f"{path}: {meta['channels']} channels of {meta['shape']} pixels at "
            f"{meta['reso_arcmin']}'; expected {first['channels']} channels of "
            f"{first['shape']} at {first['reso_arcmin']}' like {first_path}"
        )
    for key in _SAME_ATTRS:
        found, expected = meta["attrs"].get(key), first["attrs"].get(key)
        if found != expected:
            raise InputError(
                f"{path}: attribute {key}={found!r}; expected {expected!r} like {first_path}"
            )


class ShardSet:
    """A list of cutout shards read as one indexable collection (the one shard reader).

    Parameters
    ----------
    paths : sequence of path
        Shard files, in order; cutout ``i`` of the set is the i-th over all files. They must
        agree on channels, cutout shape, pixel size and the attributes ``nside``, ``npix``,
        ``reso_arcmin``, ``split``, ``subset``, ``seed``, ``interpolation`` (absent counts
        as a value).
    threads : int
        Threads that gather the images of an indices set (``cutouts.store: indices``).
    target : numpy.ndarray, optional
        ``(n, H, W)`` maps read as the ``target`` field in place of the shards' own (e.g. the
        E or B maps of the polarisation stage, :mod:`dustpred.polarisation.qu_cutouts`).

    Attributes
    ----------
    n : int
        Cutouts over all shards; ``counts`` (per shard) and ``offsets`` (K + 1,) place them.
    channels : int
        C; ``velocities_kms`` (C,) their velocities (0, 1, ... if the shard has none).
    shape : tuple of int
        (H, W) of a cutout; ``reso_arcmin`` its pixel size.
    has_oracle : bool
        Whether every shard has an ``oracle`` dataset.
    fields : list of str
        Datasets present in every shard, sorted.
    attrs : dict
        Decoded attributes of the first shard (:func:`decode_attrs`); ``shard_index`` and
        ``n_shards`` describe that shard only.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        *,
        threads: int = 1,
        target: np.ndarray | None = None,
    ) -> None:
        self.paths = [os.fspath(p) for p in paths]
        self.threads = max(1, int(threads))
        if not self.paths:
            raise InputError("cutout shards: got an empty list of shard files; expected >= 1")
        metas = [_describe(path) for path in self.paths]
        first = metas[0]
        for path, meta in zip(self.paths[1:], metas[1:], strict=True):
            _check_same(path, meta, first, self.paths[0])
        self.counts = np.asarray([meta["n"] for meta in metas], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)])
        self.n = int(self.offsets[-1])
        self.channels = int(first["channels"])
        self.shape = tuple(int(s) for s in first["shape"])
        self.velocities_kms = first["velocities_kms"]
        self.reso_arcmin = first["reso_arcmin"]
        self.fields = sorted(set.intersection(*(set(meta["fields"]) for meta in metas)))
        self.has_oracle = "oracle" in self.fields
        self.attrs = first["attrs"]
        self.store = self.attrs.get("store", "images")
        if any(meta["attrs"].get("store", "images") != self.store for meta in metas):
            raise InputError(
                f"cutout shards {self.paths}: some store images, some indices; expected one "
                "store (config cutouts.store) for the whole set"
            )
        self._sources: tuple[np.ndarray, Any] | None = None
        if self.n == 0:
            raise InputError(f"cutout shards {self.paths}: 0 cutouts in all; expected >= 1")
        self.target = target
        if target is not None and np.shape(target) != (self.n, *self.shape):
            raise InputError(
                f"cutout shards {self.paths}: replacement targets of shape {np.shape(target)}; "
                f"expected {(self.n, *self.shape)}, one map per cutout"
            )

    @property
    def npix(self) -> int:
        return self.shape[0]

    @property
    def side_deg(self) -> float:
        """Cutout side in degrees (npix * reso)."""
        return self.shape[0] * self.reso_arcmin / 60.0

    def _stored_names(self, names: Sequence[str], f: h5py.File) -> list[str]:
        """The datasets to read from ``f`` for the fields ``names``."""
        if self.target is not None:
            names = [k for k in names if k != "target"]
        if self.store != "indices" or not set(names) & set(GATHERED):
            return list(names)
        pixels = [k for k in PIXEL_FIELDS if k in f]
        return [k for k in names if k not in GATHERED and k not in pixels + ["mask"]] + [
            *pixels,
            "mask",
        ]

    def _complete(
        self, stored: dict[str, np.ndarray], names: Sequence[str], path: str, rows: np.ndarray
    ) -> dict:
        """``{name: array}`` for ``names`` from the arrays read for them (:meth:`_stored_names`);
        ``rows``: the set's cutout numbers read (for the replacement targets)."""
        if self.target is not None and "target" in names:
            stored = {**stored, "target": np.asarray(self.target[rows], np.float32)}
            names = [k for k in names if k != "target"]
        if self.store != "indices" or not set(names) & set(GATHERED):
            return stored
        if self._sources is None:
            self._sources = open_stack(path, self.attrs, self.channels)
        dtype = DTYPES[self.attrs.get("dtype", "float32")]
        return gather(stored, names, self._sources, dtype=dtype, path=path, threads=self.threads)

    def iter_chunks(self, names: Sequence[str], chunk: int) -> Iterator[tuple[int, dict]]:
        """Yield ``(start, {name: array})`` over all cutouts in order, ``chunk`` at a time."""
        for path, offset in zip(self.paths, self.offsets[:-1], strict=True):
            with _open(path) as f:
                stored = self._stored_names(names, f)
                _require(f, path, stored)
                n = f["mask"].shape[0]
                for lo in range(0, n, chunk):
                    hi = min(lo + chunk, n)
                    values = {k: f[k][lo:hi] for k in stored}
                    rows = np.arange(offset + lo, offset + hi)
                    yield int(offset + lo), self._complete(values, names, path, rows)

    def load(self, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Every cutout of datasets ``names`` (default :attr:`fields`) in memory, in order.

        Returns ``{name: (n, ...) array}`` in the stored dtypes.
        """
        names = list(self.fields if names is None else names)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
        for _, values in self.iter_chunks(names, 256 if self.store == "indices" else self.n):
            for k in names:
                parts[k].append(values[k])
        return {k: np.concatenate(parts[k]) for k in names}

    def read(self, names: Sequence[str], indices: np.ndarray) -> dict[str, np.ndarray]:
        """Read the cutouts ``indices`` (any order) of datasets ``names``."""
        indices = np.asarray(indices, dtype=np.int64)
        order = np.argsort(indices, kind="stable")
        sorted_idx = indices[order]
        parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
        shard = np.searchsorted(self.offsets, sorted_idx, side="right") - 1
        for s in np.unique(shard):
            local = sorted_idx[shard == s] - self.offsets[s]
            with _open(self.paths[s]) as f:
                stored = self._stored_names(names, f)
                _require(f, self.paths[s], stored)
                # One read per cutout: h5py's fancy indexing is ~100x slower here.
                values = {k: np.stack([f[k][int(i)] for i in local]) for k in stored}
                values = self._complete(values, names, self.paths[s], local + self.offsets[s])
                for k in names:
                    parts[k].append(values[k])
        out = {}
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        for k in names:
            out[k] = np.concatenate(parts[k])[inverse]
        return out


def check_against_index(
    paths: Sequence[str | os.PathLike], index_path: str | os.PathLike, *, threads: int = 1
) -> None:
    """Refuse shards whose size or sha256 differs from the one ``index.json`` recorded.

    Parameters
    ----------
    paths
        Shard files of one cutout set (any subset), as the job will read them.
    index_path
        The set's ``index.json`` (written by :func:`dustpred.cutouts.extract.write_index`).
    threads
        Files hashed at once (sha256 runs at ~1 GB/s per thread).

    Raises
    ------
    InputError
        Naming the shard, the index, what was found and what was expected, and the fix.
    """
    index_path = os.fspath(index_path)
    try:
        with open(index_path) as fh:
            index = json.load(fh)
        recorded = {
            os.path.normpath(os.path.join(os.path.dirname(index_path), entry["path"])): entry
            for subset in index["subsets"].values()
            for entry in subset["shards"]
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(
            f"{index_path}: cannot read the shard list ({exc!r}); expected the index.json "
            "the gather_cutouts job writes. Delete it and run again"
        ) from exc
    paths = [os.path.normpath(os.fspath(p)) for p in paths]
    fix = f"Delete it and {index_path}, and run again to rebuild both"
    for path in paths:
        entry = recorded.get(path)
        if entry is None:
            raise InputError(f"{path}: not listed in {index_path}; expected one of its shards")
        size = os.path.getsize(path)
        if size != entry["bytes"]:
            raise InputError(
                f"{path}: {size} bytes; {index_path} recorded {entry['bytes']}: the shard "
                f"changed after it was indexed. {fix}"
            )
    with ThreadPoolExecutor(max_workers=max(1, int(threads))) as pool:
        found = list(pool.map(sha256_of, paths))
    for path, digest in zip(paths, found, strict=True):
        if digest != recorded[path]["sha256"]:
            raise InputError(
                f"{path}: sha256 {digest}; {index_path} recorded {recorded[path]['sha256']}: "
                f"the shard changed after it was indexed. {fix}"
            )
