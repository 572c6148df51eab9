"""Benchmark: the whole cutout stage at the paper's scale, K shard jobs in parallel.

Makes a random preprocessed stack like the preprocess stage's (``stack.npy`` pixel-major
``(npix, nchan + 1)`` float32, ``mask.npy`` with ~28 % of the sky masked: the galactic band
|b| < 12 deg plus random discs, ``meta.json``), then runs the cutout stage as the workflow
does: K processes, one per scatter job, each running the rule's library call
(:func:`dustpred.cutouts.extract.write_shards`: shard i of the training and of the test cutouts),
with the thread variables Snakemake sets for ``threads: 1``; then the gather step
(:func:`dustpred.cutouts.extract.write_index`, SHA-256 of every shard on ``--gather-threads``).
Snakemake's own scheduling overhead (a second or two) is not included.

Prints the stage's wall time (jobs + gather), each job's time and peak memory (VmHWM, which
counts the pages of the memory-mapped stack it touched, and its private memory RssAnon), and
the data written. Peak memory of a job should be about the stack plus one chunk of cutouts.

Usage (repository root):
``PYTHONPATH=workflow python3 bench/bench_cutout_stage.py --workdir /tmp/stage`` (paper scale:
Nside 1024, 64 + 1 maps, 50,000 + 1,000 cutouts, K = 16). Results: bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

THREAD_VARS = (
    "OMP_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def make_inputs(prep: Path, nside: int, nchan: int, seed: int) -> None:
    """Random stack, a ~28 %-masked mask and meta.json, as the preprocess stage writes them."""
    import healpy as hp

    prep.mkdir(parents=True, exist_ok=True)
    npix = 12 * nside**2
    rng = np.random.default_rng(seed)
    stack = np.lib.format.open_memmap(
        prep / "stack.npy", mode="w+", dtype=np.float32, shape=(npix, nchan + 1)
    )
    step = 1 << 20
    for start in range(0, npix, step):
        stop = min(start + step, npix)
        stack[start:stop] = rng.uniform(0.0, 10.0, (stop - start, nchan + 1)).astype(np.float32)
    stack.flush()
    del stack
    _, lat = hp.pix2ang(nside, np.arange(npix), lonlat=True)
    mask = (np.abs(lat) < 12.0).astype(np.uint8)
    for _ in range(40):
        centre = hp.ang2vec(
            rng.uniform(0, 360), np.degrees(np.arcsin(rng.uniform(-1, 1))), lonlat=True
        )
        mask[hp.query_disc(nside, centre, np.radians(5.0))] = 1
    np.save(prep / "mask.npy", mask)
    meta = {
        "nside": nside,
        "velocities_kms": list(np.linspace(-64.5, 17.0, nchan)),
        "units": {"hi": "K", "dust": "uK_RJ"},
    }
    (prep / "meta.json").write_text(json.dumps(meta))
    print(
        f"inputs: Nside {nside}, {nchan} + 1 maps, stack "
        f"{os.path.getsize(prep / 'stack.npy') / 2**30:.2f} GiB, masked fraction "
        f"{mask.mean():.3f}",
        flush=True,
    )


def status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def job(args: argparse.Namespace) -> None:
    """One scatter job (run in its own process)."""
    from dustpred.cutouts.extract import write_shards

    t0 = time.monotonic()
    prep, out = Path(args.prep), Path(args.workdir) / "cutouts"
    item = f"{args.job}-of-{args.shards}"
    summaries = write_shards(
        prep / "stack.npy",
        prep / "mask.npy",
        prep / "meta.json",
        None,
        {subset: out / subset / f"shard-{item}.h5" for subset in ("train", "test")},
        cutouts=cutout_settings(args),
        seed=args.seed,
        scatteritem=item,
    )
    result = {
        "job": args.job,
        "seconds": time.monotonic() - t0,
        "cutouts": sum(s["count"] for s in summaries),
        "draws_per_cutout": summaries[0]["draws_per_cutout"],
        "vmhwm_mb": status_kb("VmHWM") / 1024,
        "rss_anon_mb": status_kb("RssAnon") / 1024,
        "rss_file_mb": status_kb("RssFile") / 1024,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print("JOB " + json.dumps(result), flush=True)


def cutout_settings(args: argparse.Namespace) -> dict:
    return {
        "npix": 64,
        "reso_arcmin": 23.4,
        "split": "north_south",
        "n_train": args.n_train,
        "n_test": args.n_test,
        "max_masked_fraction": 0.7,
        "shards": args.shards,
        "dtype": args.dtype,
        "interpolation": "nearest",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="shards go to WORKDIR/cutouts")
    parser.add_argument("--prep", help="preprocessed inputs (default WORKDIR/prep; made if absent)")
    parser.add_argument("--nside", type=int, default=1024)
    parser.add_argument("--nchan", type=int, default=64, help="HI channels (+1 dust map)")
    parser.add_argument("--n-train", type=int, default=50_000)
    parser.add_argument("--n-test", type=int, default=1_000)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--gather-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=20190430)
    parser.add_argument("--keep", action="store_true", help="keep the shards afterwards")
    parser.add_argument("--job", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job is not None:
        job(args)
        return

    workdir = Path(args.workdir)
    args.prep = args.prep or str(workdir / "prep")
    prep, out = Path(args.prep), workdir / "cutouts"
    shutil.rmtree(out, ignore_errors=True)
    if not (prep / "stack.npy").exists():
        t0 = time.monotonic()
        make_inputs(prep, args.nside, args.nchan, args.seed)
        os.sync()  # so the stage does not share the disk with the inputs' write-back
        print(f"inputs written in {time.monotonic() - t0:.1f} s", flush=True)
    env = dict(os.environ, **{var: "1" for var in THREAD_VARS})
    cmd = [
        sys.executable,
        __file__,
        "--workdir",
        str(workdir),
        "--prep",
        str(prep),
        "--shards",
        str(args.shards),
        "--n-train",
        str(args.n_train),
        "--n-test",
        str(args.n_test),
        "--dtype",
        args.dtype,
        "--seed",
        str(args.seed),
    ]

    t0 = time.monotonic()
    procs = [
        subprocess.Popen([*cmd, "--job", str(i)], env=env, stdout=subprocess.PIPE, text=True)
        for i in range(1, args.shards + 1)
    ]
    results = []
    for proc in procs:
        stdout, _ = proc.communicate()
        if proc.returncode != 0:
            sys.exit(f"shard job failed with exit code {proc.returncode}")
        results += [json.loads(line[4:]) for line in stdout.splitlines() if line.startswith("JOB ")]
    t_jobs = time.monotonic() - t0

    from dustpred.cutouts.extract import write_index

    k = args.shards
    t1 = time.monotonic()
    write_index(
        workdir / "index.json",
        {
            subset: [out / subset / f"shard-{i}-of-{k}.h5" for i in range(1, k + 1)]
            for subset in ("train", "test")
        },
        cutouts=cutout_settings(args),
        seed=args.seed,
        threads=args.gather_threads,
    )
    t_gather = time.monotonic() - t1
    t_stage = time.monotonic() - t0
    written = sum(p.stat().st_size for p in out.rglob("*.h5"))
    t2 = time.monotonic()
    os.sync()
    t_sync = time.monotonic() - t2

    n = args.n_train + args.n_test
    stack_gb = (prep / "stack.npy").stat().st_size / 2**30
    shard_gb = written / k / 2**30
    print(
        f"\ncutout stage: {n:,} cutouts x {args.nchan + 1} maps, Nside {args.nside}, "
        f"{k} shard jobs in parallel on {os.cpu_count()} CPUs, {args.dtype} shards"
    )
    print(
        f"{'job':>4}{'cutouts':>9}{'seconds':>9}{'draws/cutout':>14}{'VmHWM MB':>10}"
        f"{'RssAnon MB':>12}{'RssFile MB':>12}"
    )
    for r in sorted(results, key=lambda r: r["job"]):
        print(
            f"{r['job']:>4}{r['cutouts']:>9}{r['seconds']:>9.1f}{r['draws_per_cutout']:>14.3f}"
            f"{r['vmhwm_mb']:>10.0f}{r['rss_anon_mb']:>12.0f}{r['rss_file_mb']:>12.0f}"
        )
    print(f"\nshard jobs (wall, all {k}):   {t_jobs:8.1f} s")
    print(f"gather + index (sha256):     {t_gather:8.1f} s")
    print(
        f"whole stage:                 {t_stage:8.1f} s  "
        f"({n * (args.nchan + 1) / t_stage:,.0f} map-cutouts/s)"
    )
    print(
        f"written: {written / 2**30:.1f} GiB in {2 * k} files; os.sync() afterwards {t_sync:.1f} s"
    )
    print(
        f"peak memory of a job: {max(r['vmhwm_mb'] for r in results) / 1024:.2f} GiB "
        f"(stack {stack_gb:.2f} GiB memory-mapped and shared; private at most "
        f"{max(r['rss_anon_mb'] for r in results) / 1024:.2f} GiB; one shard {shard_gb:.2f} GiB)"
    )
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
