"""The cutout stage: shards of cutouts from the preprocessed stack, and their index.

Rule ``cutout_shard`` (``workflow/scripts/cutouts.py``) calls :func:`write_shards`: scatter
job ``i-of-K`` writes shard i of the training and of the test subset. Rule ``gather_cutouts``
(``workflow/scripts/gather_cutouts.py``) calls :func:`write_index`. The file layout is
:mod:`dustpred.cutouts.shards`.

Shard ``i`` of ``K`` holds the subset's slots ``[i*n//K, (i+1)*n//K)``; each slot's cutout
depends only on the seed, subset and slot (:mod:`dustpred.cutouts.sampling`), so the concatenated
shards are identical for every K.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from typing import Any

import numpy as np

from dustpred.atomic import atomic_write
from dustpred.cutouts import projection, sampling, shards
from dustpred.errors import ConfigError, InputError
from dustpred.inputs.download import sha256_of
from dustpred.sky.stack import Preprocessed, load_preprocessed

log = logging.getLogger(__name__)

_SCATTERITEM = re.compile(r"^(\d+)-of-(\d+)$")


PAIRINGS = ("matched", "shuffled")


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
    compression: str = "none"
    store: str = "images"
    interpolation: str = "nearest"
    east_west_buffer_deg: float = 36.0
    max_draws: int = 1000
    chunk: int = 32
    # "shuffled": the dust target (and oracle) of each cutout is projected at (lon + 180 deg,
    # lat, psi), so HI and dust come from different skies: the null test of issue 16.
    pairing: str = "matched"

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
            ("dtype", self.dtype in shards.DTYPES, f"one of {list(shards.DTYPES)}"),
            (
                "compression",
                self.compression in shards.COMPRESSIONS,
                f"one of {list(shards.COMPRESSIONS)}",
            ),
            ("store", self.store in shards.STORES, f"one of {list(shards.STORES)}"),
            (
                "interpolation",
                self.interpolation in projection.INTERPOLATIONS,
                f"one of {list(projection.INTERPOLATIONS)}",
            ),
            ("east_west_buffer_deg", 0 <= self.east_west_buffer_deg < 180, "in [0, 180)"),
            ("max_draws", self.max_draws >= 1, "an integer >= 1"),
            ("chunk", self.chunk >= 1, "an integer >= 1"),
            ("pairing", self.pairing in PAIRINGS, f"one of {list(PAIRINGS)}"),
        ]
        for key, ok, expected in checks:
            if not ok:
                raise ConfigError(
                    f"config key 'cutouts.{key}': found {getattr(self, key)!r}; expected {expected}"
                )
        if self.store == "indices" and self.interpolation != "nearest":
            raise ConfigError(
                f"config key 'cutouts.store': found 'indices' with cutouts.interpolation "
                f"{self.interpolation!r}; expected 'images' (a bilinear cutout is no gather of "
                "stack rows) or interpolation 'nearest'"
            )

    def count(self, subset: str) -> int:
        return {"train": self.n_train, "test": self.n_test, "crossfit": self.n_train}[subset]


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


def shard_attrs(
    pre: Preprocessed,
    settings: CutoutSettings,
    *,
    subset: str,
    seed: int,
    shard_index: int,
    n_shards: int,
    min_separation_deg: float,
    sources: tuple[str, str] = ("", ""),
) -> dict[str, Any]:
    """The attributes of a shard of ``subset`` (see :mod:`dustpred.cutouts.shards`), in file
    order; ``sources`` (the stack and oracle paths, '' for none) for the indices store."""
    units = pre.meta.get("units", {})
    return {
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
        "min_separation_deg": float(min_separation_deg),
        "dtype": settings.dtype,
        "format_version": shards.FORMAT_VERSION,
        # Only written when shuffled, so matched shards keep their bytes.
        **({"pairing": settings.pairing} if settings.pairing != "matched" else {}),
        # Likewise only for the indices store (image shards keep their bytes).
        **(
            {"store": "indices", "stack_path": sources[0], "oracle_path": sources[1]}
            if settings.store == "indices"
            else {}
        ),
    }


def _row_reader(
    pre: Preprocessed, draws: sampling.Draws, settings: CutoutSettings, plane: np.ndarray
) -> Callable[[np.ndarray], Iterator[tuple[int, np.ndarray]]]:
    """``rows_of(values)``: iterates over the cutouts' pixel rows of a pixel-major array."""
    if settings.interpolation == "nearest":
        return partial(projection.iter_cutout_rows, pix=draws.pixels, zero=draws.masked)
    pix4, w4 = projection.bilinear_weights(
        pre.nside,
        draws.lon,
        draws.lat,
        draws.psi,
        npix=settings.npix,
        reso_arcmin=settings.reso_arcmin,
        plane=plane,
    )
    return partial(projection.iter_bilinear_rows, pix4=pix4, weights4=w4, zero=draws.masked)


def shuffled_draws(
    pre: Preprocessed, draws: sampling.Draws, settings: CutoutSettings, plane: np.ndarray
) -> sampling.Draws:
    """``draws`` moved to longitude + 180 deg (same latitude and rotation), with the pixels
    of the new centres but the original ``masked`` (the HI cutout's mask applies to both)."""
    lon = np.mod(draws.lon + 180.0, 360.0)
    pixels = projection.cutout_pixels(
        pre.nside,
        lon,
        draws.lat,
        draws.psi,
        npix=settings.npix,
        reso_arcmin=settings.reso_arcmin,
        plane=plane,
    ).reshape(draws.pixels.shape)
    return replace(draws, lon=lon, pixels=pixels)


def _cutout_values(
    pre: Preprocessed,
    stack: np.ndarray,
    draws: sampling.Draws,
    rows_of: Callable[[np.ndarray], Iterator[tuple[int, np.ndarray]]],
    buffers: tuple[np.ndarray, np.ndarray],
    target_rows_of: Callable[[np.ndarray], Iterator[tuple[int, np.ndarray]]] | None = None,
) -> dict[str, np.ndarray]:
    """The shard fields of the ``m`` cutouts of ``draws``: images (m, ..., H*W) float32.

    ``buffers`` are the (chunk, C, H*W) and (chunk, H*W) float32 arrays the channels and the
    target are gathered into (in the stack's precision; float16 storage casts whole chunks).
    ``target_rows_of`` (default ``rows_of``) reads the dust target and oracle: another
    position's reader for shuffled pairing.
    """
    inputs, target = buffers
    c, m = pre.nchan, draws.slots.size
    for k, rows in rows_of(stack):
        inputs[k] = rows[:, :c].T
        target[k] = rows[:, c]
    if target_rows_of is not None:
        for k, rows in target_rows_of(stack):
            target[k] = rows[:, c]
    else:
        target_rows_of = rows_of
    values = {"inputs": inputs[:m], "target": target[:m], "mask": draws.masked}
    if pre.oracle is not None:
        oracle = np.empty((m, target.shape[1]), np.float32)
        for k, rows in target_rows_of(pre.oracle[:, None]):
            oracle[k] = rows[:, 0]
        values["oracle"] = oracle
    for name in ("lon", "lat", "psi", "masked_fraction"):
        values[name] = getattr(draws, name)
    values["slot"] = draws.slots
    return values


def _pixel_values(draws: sampling.Draws, moved: sampling.Draws | None) -> dict[str, np.ndarray]:
    """The indices store's fields of the cutouts of ``draws`` (``moved``: shuffled pairing)."""
    values = {"pixels": draws.pixels.astype(np.int32), "mask": draws.masked}
    if moved is not None:
        values["target_pixels"] = moved.pixels.astype(np.int32)
    for name in ("lon", "lat", "psi", "masked_fraction"):
        values[name] = getattr(draws, name)
    values["slot"] = draws.slots
    return values


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
    sources: tuple[str, str] = ("", ""),
) -> dict[str, Any]:
    """Draw, project and write the cutouts of ``slots`` to one HDF5 shard (atomically).

    With ``settings.store == 'indices'`` the shard holds the cutouts' pixels, and
    ``sources`` names the stack and oracle files (paths as the readers will open them; ''
    for no oracle) that :class:`dustpred.cutouts.shards.ShardSet` gathers the images from.

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
    n, p, c = slots.size, settings.npix**2, pre.nchan
    region = sampling.split_region(
        settings.split,
        subset,
        npix=settings.npix,
        reso_arcmin=settings.reso_arcmin,
        east_west_buffer_deg=settings.east_west_buffer_deg,
    )
    plane = projection.plane_vectors(settings.npix, settings.reso_arcmin)
    stack = np.asarray(pre.stack)
    attrs = shard_attrs(
        pre,
        settings,
        subset=subset,
        seed=seed,
        shard_index=shard_index,
        n_shards=n_shards,
        min_separation_deg=region.min_separation_deg,
        sources=sources,
    )
    buffers = (
        np.empty((settings.chunk, c, p), dtype=np.float32),
        np.empty((settings.chunk, p), dtype=np.float32),
    )
    attempts = 0
    with shards.ShardWriter(
        path,
        n,
        channels=c,
        npix=settings.npix,
        dtype=settings.dtype,
        oracle=pre.oracle is not None,
        attrs=attrs,
        compression=settings.compression,
        store=settings.store,
        paired=settings.pairing == "shuffled",
    ) as writer:
        for start in range(0, n, settings.chunk):
            draws = sampling.draw_cutouts(
                pre.mask,
                slots[start : start + settings.chunk],
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
            moved = None
            if settings.pairing == "shuffled":
                moved = shuffled_draws(pre, draws, settings, plane)
            if settings.store == "indices":
                writer.write(start, _pixel_values(draws, moved))
                continue
            rows_of = _row_reader(pre, draws, settings, plane)
            target_rows_of = None if moved is None else _row_reader(pre, moved, settings, plane)
            values = _cutout_values(pre, stack, draws, rows_of, buffers, target_rows_of)
            writer.write(start, values)
    seconds, per = time.monotonic() - t0, attempts / max(n, 1)
    log.info("%s: %d %s cutouts (%.2f draws each) in %.1f s", path, n, subset, per, seconds)
    return {"path": path, "subset": subset, "count": n, "draws_per_cutout": per, "seconds": seconds}


def write_shards(
    stack_path: str | os.PathLike,
    mask_path: str | os.PathLike,
    meta_path: str | os.PathLike,
    oracle_path: str | os.PathLike | None,
    outputs: Mapping[str, str | os.PathLike],
    *,
    cutouts: dict[str, Any],
    seed: int,
    scatteritem: str,
) -> list[dict[str, Any]]:
    """One scatter job: shard ``scatteritem`` ('i-of-K') of each subset of ``outputs``.

    Parameters
    ----------
    outputs
        ``{subset: shard path}`` for subsets of :data:`dustpred.cutouts.sampling.DRAWN_SUBSETS`
        (``train`` and ``test``; ``crossfit``, the cross-fit models' training set).
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
    for subset, path in outputs.items():
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
                sources=(os.fspath(stack_path), os.fspath(oracle_path or "")),
            )
        )
    return summaries


# --------------------------------------------------------------------------------------
# Index (the gather step)
# --------------------------------------------------------------------------------------


def _subset_index(
    shard_set: shards.ShardSet, subset: str, *, directory: str, checksums: dict[str, str]
) -> dict[str, Any]:
    """The index entry of one subset's shards; checks they hold slots ``0..n-1`` in order."""
    slots = shard_set.load(["slot"])["slot"]
    entries = []
    for k, path in enumerate(shard_set.paths):
        lo, hi = int(shard_set.offsets[k]), int(shard_set.offsets[k + 1])
        if shard_set.attrs.get("subset") != subset or not np.array_equal(
            slots[lo:hi], np.arange(lo, hi)
        ):
            raise InputError(
                f"{path}: subset {shard_set.attrs.get('subset')!r}, slots {slots[lo : lo + 1]}..; "
                f"expected {subset!r} slots from {lo} (shards in order)"
            )
        entries.append(
            {
                "path": os.path.relpath(os.path.abspath(path), directory),
                "count": hi - lo,
                "bytes": os.path.getsize(path),
                "sha256": checksums[path],
            }
        )
    return {"count": shard_set.n, "shards": entries, "fields": shard_set.fields}


def write_index(
    index_path: str | os.PathLike,
    subsets: Mapping[str, Sequence[str | os.PathLike]],
    *,
    cutouts: dict[str, Any],
    seed: int,
    threads: int = 1,
) -> dict[str, Any]:
    """Write ``index.json`` for a cutout set: counts, SHA-256 checksums and the config slice.

    ``subsets``: ``{subset: its shard paths in order}`` (train and test, or crossfit). Checks
    that each subset's shards hold exactly the slots ``0..n-1`` in order.
    """
    settings = CutoutSettings.from_config(cutouts)
    all_paths = [os.fspath(p) for paths in subsets.values() for p in paths]
    with ThreadPoolExecutor(max_workers=max(1, int(threads))) as pool:
        checksums = dict(zip(all_paths, pool.map(sha256_of, all_paths), strict=True))
    config_slice = {k: v for k, v in asdict(settings).items() if k != "chunk"}
    if settings.pairing == "matched":
        del config_slice["pairing"]  # so matched indexes keep their bytes
    config_slice["shards"] = len(next(iter(subsets.values())))
    index: dict[str, Any] = {
        "format_version": shards.FORMAT_VERSION,
        "seed": int(seed),
        "cutouts": config_slice,
        "subsets": {},
    }
    directory = os.path.dirname(os.path.abspath(index_path))
    for subset, paths in subsets.items():
        shard_set = shards.ShardSet(paths)
        entry = _subset_index(shard_set, subset, directory=directory, checksums=checksums)
        if entry["count"] != settings.count(subset):
            raise InputError(
                f"{index_path}: {subset} shards hold {entry['count']} cutouts; expected "
                f"{settings.count(subset)} (config 'cutouts.n_{subset}')"
            )
        index["subsets"][subset] = entry
    attrs = shard_set.attrs
    index["nside"] = attrs["nside"]
    index["nchan"] = int(len(attrs["velocities_kms"]))
    index["velocities_kms"] = [float(v) for v in attrs["velocities_kms"]]
    index["units"] = attrs["units"]
    atomic_write(index_path, lambda tmp: tmp.write_text(json.dumps(index, indent=2) + "\n"))
    log.info("%s: %s", index_path, {s: v["count"] for s, v in index["subsets"].items()})
    remove_leftover_shards(all_paths)
    return index


def remove_leftover_shards(paths: Sequence[str]) -> list[str]:
    """Delete the shard files and temporaries in the directories of ``paths`` that are not
    ``paths``: left by a run with another ``cutouts.shards`` (or a killed shard job), they
    are gigabytes at paper scale and no job would ever remove them. Returns them.

    Only the gather step calls it: every shard job of the set has finished by then, and no
    other job writes into a set's shard directories.
    """
    keep = {os.path.abspath(p) for p in paths}
    leftovers = []
    for directory in sorted({os.path.dirname(p) for p in keep}):
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            stale_shard = re.fullmatch(r"shard-\d+-of-\d+\.h5", name) and path not in keep
            if stale_shard or re.fullmatch(r"\.shard-\d+-of-\d+\.h5\..+\.tmp", name):
                log.info("removing %s, left by an earlier run or a killed job", path)
                os.unlink(path)
                leftovers.append(path)
    return leftovers
