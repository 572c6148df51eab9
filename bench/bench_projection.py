"""Benchmark: dustpred.cutouts.projection.gnomonic_cutouts against a loop of healpy.gnomview.

Both project the same random HEALPix maps (a pixel-major stack of C channels) at the same
random centres and rotations, in one process, side by side. The gnomview loop is timed on a
small sample of (cutout, channel) pairs (it runs at ~20 map-cutouts per second); dustpred on
``--n`` cutouts of all C channels. Prints map-cutouts per second for each, their ratio, and the
projected time of the paper's 51,000 cutouts x 65 maps at Nside 1024. Also checks that the
sampled gnomview arrays equal dustpred's element for element.

Usage (repository root): ``.venv/bin/python bench/bench_projection.py [--nside 1024] [--n 2000]``
Results: bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import matplotlib

matplotlib.use("Agg")

import healpy as hp  # noqa: E402
import numpy as np  # noqa: E402

from dustpred.cutouts.projection import gnomonic_cutouts  # noqa: E402

PAPER_MAP_CUTOUTS = 51_000 * 65


def random_stack(nside: int, nchan: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    npix = 12 * nside**2
    stack = np.empty((npix, nchan), dtype=np.float32)
    step = 1 << 20
    for start in range(0, npix, step):
        stack[start : start + step] = rng.standard_normal(
            (min(step, npix - start), nchan), dtype=np.float32
        )
    return stack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nside", type=int, default=1024)
    parser.add_argument("--nchan", type=int, default=65, help="maps in the stack (64 HI + dust)")
    parser.add_argument("--n", type=int, default=2000, help="cutouts projected by dustpred")
    parser.add_argument("--n-gnomview", type=int, default=24, help="gnomview map-cutouts timed")
    parser.add_argument("--npix", type=int, default=64)
    parser.add_argument("--reso", type=float, default=23.4)
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1, os.cpu_count() or 1],
        help="dustpred thread counts to time (one process)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(
        f"host: {platform.node()}, {os.cpu_count()} CPUs, numpy {np.__version__}, "
        f"healpy {hp.__version__}"
    )
    t0 = time.perf_counter()
    stack = random_stack(args.nside, args.nchan, args.seed)
    print(
        f"random stack: Nside {args.nside}, {args.nchan} maps, {stack.nbytes / 2**30:.2f} GiB "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    rng = np.random.default_rng(args.seed + 1)
    lon = rng.uniform(0.0, 360.0, args.n)
    lat = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, args.n)))
    psi = rng.uniform(0.0, 360.0, args.n)
    kw = dict(npix=args.npix, reso_arcmin=args.reso)

    # Baseline: gnomview on (cutout k, channel c) pairs of the same maps and centres.
    pairs = [(k, k % args.nchan) for k in range(args.n_gnomview)]
    maps = {c: np.ascontiguousarray(stack[:, c]) for _, c in pairs}  # fair: contiguous maps
    hp.gnomview(
        maps[0],
        rot=(lon[0], lat[0], psi[0]),
        xsize=args.npix,
        reso=args.reso,
        return_projected_map=True,
        no_plot=True,
    )  # warm-up (matplotlib import, fonts)
    reference = {}
    t0 = time.perf_counter()
    for k, c in pairs:
        reference[k, c] = hp.gnomview(
            maps[c],
            rot=(lon[k], lat[k], psi[k]),
            xsize=args.npix,
            reso=args.reso,
            return_projected_map=True,
            no_plot=True,
        )
    t_gnom = time.perf_counter() - t0
    rate_gnom = len(pairs) / t_gnom

    out = np.empty((args.n, args.nchan, args.npix, args.npix), dtype=np.float32)
    gnomonic_cutouts(stack, lon[:64], lat[:64], psi[:64], out=out[:64], **kw)  # warm-up, pages
    out[:] = 0.0
    rows = []
    for threads in dict.fromkeys(args.threads):
        t0 = time.perf_counter()
        gnomonic_cutouts(stack, lon, lat, psi, out=out, threads=threads, **kw)
        dt = time.perf_counter() - t0
        rows.append((threads, dt, args.n * args.nchan / dt))
    identical = all(
        np.array_equal(np.asarray(ref.data), out[k, c]) for (k, c), ref in reference.items()
    )

    print(
        f"\ncutouts {args.npix}x{args.npix} of {args.reso}', centres uniform on the sphere, "
        f"random psi; {args.nchan} maps per cutout"
    )
    print(
        f"{'method':<34}{'map-cutouts':>12}{'seconds':>10}{'map-cutouts/s':>15}{'ratio':>10}"
        f"{'paper 51,000x65':>17}"
    )
    print(
        f"{'healpy.gnomview loop':<34}{len(pairs):>12}{t_gnom:>10.2f}{rate_gnom:>15.1f}"
        f"{1.0:>10.0f}{PAPER_MAP_CUTOUTS / rate_gnom / 3600:>15.1f} h"
    )
    for threads, dt, rate in rows:
        name = f"dustpred, 1 process, {threads} thread{'s' if threads > 1 else ''}"
        print(
            f"{name:<34}{args.n * args.nchan:>12}{dt:>10.2f}{rate:>15.0f}"
            f"{rate / rate_gnom:>10.0f}{PAPER_MAP_CUTOUTS / rate:>15.1f} s"
        )
    print(
        f"\ngnomview time per map-cutout: {1e3 * t_gnom / len(pairs):.1f} ms; "
        f"sampled gnomview arrays identical to dustpred's: {identical}"
    )


if __name__ == "__main__":
    main()
