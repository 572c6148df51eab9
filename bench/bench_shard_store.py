"""Benchmark: the cutout shards as images against pixel indices (config ``cutouts.store``).

Makes a random preprocessed stack (:func:`bench_cutout_stage.make_inputs`), writes the same
training cutouts three ways with the workflow's library call
(:func:`dustpred.cutouts.extract.write_shards`, one scatter job): images in float16 + lzf
(config/paper.yaml's store), images in uncompressed float16, and pixel indices. Then reads
each set as the models do (``ShardSet.iter_chunks(["inputs", "target", "mask"], 64)``: the
reader of U-Net training, the linear fit and prediction), checks that every set gives the
same arrays, and prints per store: write seconds, disk bytes, read seconds, and the ratios
to the lzf images. The page cache is warm for every read (each set is read twice and the
second read timed), as when a training job follows the cutout jobs on one node. The
indices set is read on one thread and on ``--threads`` (the gather's threads; default: all
cores).

Usage (repository root):
``PYTHONPATH=workflow python3 bench/bench_shard_store.py --workdir /tmp/store --nside 256
--n 2000`` (a CPU-sized case); results: bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from bench_cutout_stage import make_inputs  # noqa: E402

from dustpred.cutouts import extract, shards  # noqa: E402

STORES = {
    "images, float16 + lzf": {"store": "images", "compression": "lzf"},
    "images, float16": {"store": "images", "compression": "none"},
    "indices": {"store": "indices", "compression": "none"},
}


def write(prep: Path, out: Path, n: int, store: dict) -> tuple[float, list[Path]]:
    """Write ``n`` training cutouts (and 1 test cutout) with ``store``; (seconds, paths)."""
    section = {"n_train": n, "n_test": 1, "shards": 1, "dtype": "float16", **store}
    paths = {"train": out / "train.h5", "test": out / "test.h5"}
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    extract.write_shards(
        prep / "stack.npy",
        prep / "mask.npy",
        prep / "meta.json",
        None,
        paths,
        cutouts=section,
        seed=0,
        scatteritem="1-of-1",
    )
    return time.perf_counter() - t0, [paths["train"]]


def read(paths: list[Path], threads: int = 1) -> tuple[float, np.ndarray]:
    """Seconds to read every cutout as the models do, and a digest of what was read."""
    digest = np.zeros(3)
    t0 = time.perf_counter()
    chunks = shards.ShardSet(paths, threads=threads).iter_chunks(["inputs", "target", "mask"], 64)
    for _, d in chunks:
        digest += [d["inputs"].sum(dtype=np.float64), d["target"].sum(), d["mask"].sum()]
    return time.perf_counter() - t0, digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dustpred-shard-store"))
    parser.add_argument("--nside", type=int, default=256)
    parser.add_argument("--nchan", type=int, default=64)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    prep = args.workdir / "prep"
    make_inputs(prep, args.nside, args.nchan, seed=0)
    rows, digests = {}, []
    for k, (name, store) in enumerate(STORES.items()):
        seconds, paths = write(prep, args.workdir / f"store{k}", args.n, store)
        read(paths)  # warm the page cache
        read_s, digest = read(paths)
        digests.append(digest)
        rows[name] = (seconds, sum(os.path.getsize(p) for p in paths), read_s)
    read(paths, args.threads)
    read_s, digest = read(paths, args.threads)  # the last set: the indices
    digests.append(digest)
    rows[f"indices, {args.threads} threads"] = (seconds, rows["indices"][1], read_s)
    print(f"{args.n} cutouts of {args.nchan} channels, 64 x 64, Nside {args.nside}")
    base = rows["images, float16 + lzf"]
    for name, (write_s, size, read_s) in rows.items():
        print(
            f"  {name:22s} write {write_s:7.2f} s  disk {size / 2**20:9.1f} MiB "
            f"({size / base[1]:.3f}x)  read {read_s:7.2f} s ({base[2] / read_s:.2f}x faster)"
        )
    print("every store read the same arrays:", all(np.array_equal(d, digests[0]) for d in digests))


if __name__ == "__main__":
    main()
