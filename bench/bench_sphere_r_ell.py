"""Side-by-side bench of the template's sphere r_ell: healpy's path vs ours (ducc0).

Both compute the binned r_ell per hemisphere of the same maps (a dust-like target, and two
templates: the target plus 30 % and 100 % white noise) inside the same kept sky (|b| > 20
deg), with the same 5 deg apodisation, bins of 20 from ell 2 to 460:

- healpy (the workflow's earlier path): ``healpy.smoothing`` (lmax 3 Nside - 1) for the
  window and ``healpy.map2alm`` for the spectra, threads from ``OMP_NUM_THREADS`` (set here
  to ``--healpy-threads``; the rule had 1);
- ours: :func:`dustpred.template.sphere.sphere_r_ell` (ducc0, ``--threads``; the window's
  smoothing band-limited by its beam).

Prints both times, the ratio and the largest difference in r.

    PYTHONPATH=workflow python bench/bench_sphere_r_ell.py --nside 1024 --threads 16
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nside", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--healpy-threads", type=int, default=1)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.healpy_threads)  # before healpy is imported
    os.environ["DUCC0_NUM_THREADS"] = str(args.threads)

    import healpy as hp
    import numpy as np
    import pandas as pd

    from dustpred.sky import harmonic
    from dustpred.template.sphere import ell_bins, sphere_r_ell
    from dustpred.template.tiling import region_map

    nside, lmax_full = args.nside, 3 * args.nside - 1
    rng = np.random.default_rng(0)
    ell = np.arange(lmax_full + 1.0)
    cl = np.zeros(lmax_full + 1)
    cl[1:] = ell[1:] ** -2.5
    el, m = hp.Alm.getlm(lmax_full)
    re, im = rng.standard_normal((2, el.size))
    alm = np.where(m == 0, re, (re + 1j * im) / np.sqrt(2)) * np.sqrt(cl[el])
    g = harmonic.synthesis(alm, nside, lmax_full, nthreads=args.threads)
    target = 100.0 * np.exp(0.8 * g / g.std())
    templates = {
        f"noise {k:g}": target + k * target.std() * rng.standard_normal(target.size)
        for k in (0.3, 1.0)
    }
    theta, _ = hp.pix2ang(nside, np.arange(12 * nside**2))
    keep = np.abs(90.0 - np.degrees(theta)) > 20.0
    kw = {"ell_cutoff": 460.0, "bin_width": 20, "ell_min": 2, "apod_deg": 5.0}

    def healpy_path() -> pd.DataFrame:
        edges = ell_bins(kw["ell_min"], kw["ell_cutoff"], kw["bin_width"])
        lmax = int(edges[-1] - 1)
        fwhm = np.radians(kw["apod_deg"])
        rows = []
        for region in ("train", "test"):
            k = (keep & region_map(nside, "north_south", region)).astype(np.float64)
            core = (hp.smoothing(k, fwhm=fwhm) >= 0.99).astype(np.float64)
            w = np.clip(hp.smoothing(core, fwhm=fwhm), 0.0, 1.0) * k

            def alm_of(v, w=w):
                return hp.map2alm(w * (v - (w * v).sum() / w.sum()), lmax=lmax)

            at = alm_of(target)
            for name, v in templates.items():
                ap = alm_of(v)
                tp, tt, pp = hp.alm2cl(at, ap), hp.alm2cl(at), hp.alm2cl(ap)
                for lo, hi in zip(edges[:-1], edges[1:], strict=True):
                    s = slice(lo, hi)
                    mult = 2 * np.arange(lo, hi) + 1
                    r = (mult @ tp[s]) / np.sqrt((mult @ tt[s]) * (mult @ pp[s]))
                    rows.append({"region": region, "model": name, "ell_lo": lo, "r": r})
        return pd.DataFrame(rows)

    print(
        f"Nside {nside}; healpy {args.healpy_threads} thread(s), smoothing lmax {lmax_full}; "
        f"ours {args.threads} threads; {len(templates)} templates, 2 hemispheres"
    )
    t0 = time.perf_counter()
    ref = healpy_path()
    t_healpy = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = sphere_r_ell(target, templates, keep, split="north_south", nthreads=args.threads, **kw)
    t_ours = time.perf_counter() - t0
    diff = np.abs(ref["r"].to_numpy() - ours["r"].to_numpy()).max()
    print(f"healpy path: {t_healpy:8.2f} s")
    print(f"ours:        {t_ours:8.2f} s")
    print(f"ratio healpy / ours: {t_healpy / t_ours:.1f}x; largest |r difference|: {diff:.1e}")


if __name__ == "__main__":
    main()
