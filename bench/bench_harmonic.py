"""Side-by-side bench of the harmonic step: healpy per-map loop vs dustpred.sky.harmonic (ducc0).

Both paths filter the same maps with the same Butterworth low-pass:

- healpy (the workflow's earlier path): ``map2alm(iter=3)`` + ``alm2map`` at
  ``lmax = 3 Nside - 1``, one map after the other, threads from ``OMP_NUM_THREADS`` (set
  here to ``--healpy-threads`` before healpy is imported; the preprocess rule had 2). It is
  timed on the first ``--healpy-maps`` maps (it is the slow one) and compared per map;
- ours: the preprocess rule's call, :func:`dustpred.sky.preprocess.filter_channels` (ducc0,
  ``--iters`` iterations, lmax from :func:`dustpred.sky.harmonic.filter_lmax`, ``--threads``
  threads: ``threads // 4`` maps at a time) on all the maps.

The maps alternate between a dust-like map (log-normal of an ell^-2.5 field plus a white
floor) and an HI-like one (a smoother field plus 43 mK * Nside/256 white noise), made once
with ducc0. Prints the time per path, the ratio and the larger relative rms difference
(over the reference's standard deviation) of the first two maps (one of each kind).

    PYTHONPATH=workflow python bench/bench_harmonic.py --nside 1024 --maps 64 --threads 16
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nside", type=int, default=1024)
    parser.add_argument("--maps", type=int, default=8, help="maps filtered by each path")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ell-cutoff", type=float, default=460.0)
    parser.add_argument("--order", type=int, default=4)
    parser.add_argument("--iters", type=int, default=1, help="ours (the configs' 1)")
    parser.add_argument("--healpy-threads", type=int, default=2)
    parser.add_argument("--healpy-maps", type=int, default=2)
    args = parser.parse_args()
    # Before the imports: healpy's threads, and ducc0's pool (which would else take
    # OMP_NUM_THREADS too; Snakemake sets both to the job's threads).
    os.environ["OMP_NUM_THREADS"] = str(args.healpy_threads)
    os.environ["DUCC0_NUM_THREADS"] = str(args.threads)

    import healpy as hp
    import numpy as np

    from dustpred.sky import harmonic, preprocess

    nside, lmax_full = args.nside, 3 * args.nside - 1
    rng = np.random.default_rng(0)
    ell = np.arange(lmax_full + 1.0)

    def field(alpha: float) -> np.ndarray:
        cl = np.zeros(lmax_full + 1)
        cl[1:] = ell[1:] ** -alpha
        el, m = hp.Alm.getlm(lmax_full)
        re, im = rng.standard_normal((2, el.size))
        alm = np.where(m == 0, re, (re + 1j * im) / np.sqrt(2)) * np.sqrt(cl[el])
        g = harmonic.synthesis(alm, nside, lmax_full, nthreads=args.threads)
        return g / g.std()

    white = rng.standard_normal(12 * nside**2)
    dust = 100.0 * np.exp(0.8 * field(2.5)) + 8.5 * nside / 256 * white
    hi = 2.0 * np.exp(0.5 * field(3.0)) + 0.043 * nside / 256 * np.roll(white, 12345)
    maps = np.stack([dust if i % 2 == 0 else hi for i in range(args.maps)], axis=1)
    lmax = harmonic.filter_lmax(nside, nside, args.ell_cutoff, args.order)
    n_ref = min(args.healpy_maps, args.maps)
    print(
        f"Nside {nside}, {args.maps} maps; healpy: {n_ref} maps, {args.healpy_threads} "
        f"threads, iter 3, lmax {lmax_full}; ours: {args.maps} maps, {args.threads} threads, "
        f"iters {args.iters}, lmax {lmax}; ell_c {args.ell_cutoff:g}, order {args.order}"
    )
    filt = (args.ell_cutoff, args.order)

    t0 = time.perf_counter()
    ref = [
        harmonic.lowpass_to_nside_healpy(maps[:, j], nside, *filt, iters=3) for j in range(n_ref)
    ]
    t_healpy = (time.perf_counter() - t0) / n_ref

    def lowpass(m: np.ndarray, threads: int) -> np.ndarray:
        return harmonic.lowpass_to_nside(m, nside, *filt, iters=args.iters, nthreads=threads)

    ours = np.empty_like(maps, dtype=np.float32)
    t0 = time.perf_counter()
    preprocess.filter_channels(ours, maps, np.zeros(args.maps), lowpass, t0, args.threads)
    t_ours = (time.perf_counter() - t0) / args.maps

    rel = [float(np.sqrt(np.mean((ours[:, j] - r) ** 2)) / r.std()) for j, r in enumerate(ref)]
    print(f"healpy per-map loop: {t_healpy:8.3f} s per map")
    print(f"dustpred (ducc0):    {t_ours:8.3f} s per map ({t_ours * args.maps:.1f} s in all)")
    print(f"ratio healpy / ours: {t_healpy / t_ours:.1f}x")
    print("relative rms difference per map (over std): " + ", ".join(f"{r:.2e}" for r in rel))


if __name__ == "__main__":
    main()
