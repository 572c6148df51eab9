"""Side-by-side bench of the harmonic step: healpy per-map loop vs dustpred.harmonic (ducc0).

Both paths filter the same maps with the same Butterworth low-pass and Jacobi iterations:

- healpy (the workflow's earlier path): ``map2alm(iter)`` + ``alm2map`` at
  ``lmax = 3 Nside - 1``, threads from ``OMP_NUM_THREADS`` (set here to ``--threads``
  before healpy is imported);
- ours: :func:`dustpred.harmonic.lowpass_to_nside`, ducc0 with ``nthreads = --threads`` and
  lmax from :func:`dustpred.harmonic.filter_lmax`.

The maps alternate between a dust-like map (log-normal of an ell^-2.5 field plus a white
floor) and an HI-like one (a smoother field plus 43 mK * Nside/256 white noise), made once
with ducc0. Prints the time per path, the ratio and the larger relative rms difference
(over the reference's standard deviation) of the first two maps (one of each kind).

    PYTHONPATH=workflow python bench/bench_harmonic.py --nside 1024 --maps 65 --threads 16
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
    parser.add_argument("--iters", type=int, default=3)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # healpy's threads; before the import

    import healpy as hp
    import numpy as np

    from dustpred import harmonic

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
    maps = [dust if i % 2 == 0 else hi for i in range(args.maps)]
    lmax = harmonic.filter_lmax(nside, nside, args.ell_cutoff, args.order)
    print(
        f"Nside {nside}, {args.maps} maps, {args.threads} threads, iters {args.iters}, "
        f"ell_c {args.ell_cutoff:g}, order {args.order}: healpy lmax {lmax_full}, ours {lmax}"
    )
    filt = (args.ell_cutoff, args.order)

    t0 = time.perf_counter()
    ref = [harmonic.lowpass_to_nside_healpy(m, nside, *filt, iters=args.iters) for m in maps[:2]]
    for m in maps[2:]:
        harmonic.lowpass_to_nside_healpy(m, nside, *filt, iters=args.iters)
    t_healpy = time.perf_counter() - t0

    t0 = time.perf_counter()
    ours = [
        harmonic.lowpass_to_nside(m, nside, *filt, iters=args.iters, nthreads=args.threads)
        for m in maps
    ]
    t_ours = time.perf_counter() - t0

    rel = max(
        float(np.sqrt(np.mean((o - r) ** 2)) / r.std()) for o, r in zip(ours, ref, strict=False)
    )
    n = args.maps
    print(f"healpy per-map loop: {t_healpy:8.2f} s  ({t_healpy / n:.3f} s per map)")
    print(f"dustpred (ducc0):    {t_ours:8.2f} s  ({t_ours / n:.3f} s per map)")
    print(f"ratio healpy / ours: {t_healpy / t_ours:.2f}x")
    print(f"relative rms difference, first 2 maps (over std): {rel:.2e}")


if __name__ == "__main__":
    main()
