"""Benchmark: dustpred.template.reassembly.reassemble against a per-tile, per-pixel Python loop.

Both put the same tile predictions (gnomonic cutouts of a random smooth map, one "model") back
on a HEALPix grid with the same geometry, Hann window and bilinear interpolation. The loop is
the straightforward implementation: for each tile, for each output pixel of the tile's disc,
rotate its direction into the tile plane, evaluate the window and the bilinear weights in
plain Python and accumulate ``sum w``, ``sum w p``. It is timed on ``--baseline-tiles`` tiles
and its time per tile scaled to all tiles (wall and CPU time: CPU time is the fair measure on a
shared machine); on those tiles its weighted mean is checked against
``reassemble`` (same tiles only). Prints seconds for each, their ratio and the agreement.

Usage (repository root): ``.venv/bin/python bench/bench_template.py [--nside 256]
[--nside-tiles 4] [--npix 64] [--reso 40] [--baseline-tiles 4]``
(Nside 256 with tile centres at Nside 4: 192 tiles of 64 x 40'.) Results: bench/RESULTS.md.

``--whole`` times the whole template step instead (tiles -> FITS, as
:func:`dustpred.template.build.build_template` runs it): a synthetic stack of ``--channels`` HI maps
plus dust at ``--nside``, the default 768 tiles of 64 x 23.4', two cross-fitted "models" (a
fake U-Net: one 3x3 convolution over the channels, in batches of ``--batch`` on the GPU when
one is visible), ``fold_map``, reassembly and amplitude fit per fold
(:func:`dustpred.template.build.fold_and_fit`), and the FITS file. For the GPU machine:
``python bench/bench_template.py --whole --nside 1024 --channels 64``.
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import healpy as hp
import numpy as np

from dustpred.cutouts import projection
from dustpred.cutouts.sampling import SUBSETS
from dustpred.template import reassembly, tiling


def random_smooth_map(nside: int, seed: int) -> np.ndarray:
    lmax = 3 * nside - 1
    ell = np.arange(lmax + 1)
    cl = np.zeros(lmax + 1)
    cl[2:] = ell[2:] ** -2.5
    rng = np.random.default_rng(seed)
    size = hp.Alm.getsize(lmax)
    alm = (rng.standard_normal(size) + 1j * rng.standard_normal(size)) / np.sqrt(2)
    return hp.alm2map(hp.almxfl(alm, np.sqrt(cl)), nside, lmax=lmax)


def hann(u: float) -> float:
    return math.sin(math.pi * u) ** 2 if 0.0 < u < 1.0 else 0.0


def loop_reassemble(pred: np.ndarray, tiles: tiling.Tiles, nside: int, which: range):
    """The baseline: ``(sum w, sum w p)`` accumulated pixel by pixel in Python."""
    n = tiles.npix
    dx = tiles.reso_arcmin / 60.0 * math.pi / 180.0
    c = 0.5 * (n - 1)
    rotations = projection.rotation_matrices(tiles.lon, tiles.lat, tiles.psi)
    total = np.zeros(12 * nside**2)
    acc = np.zeros(12 * nside**2)
    radius = math.atan(math.sqrt(2.0) * tiles.half_width_rad) + hp.max_pixrad(nside)
    for t in which:
        r = rotations[t].tolist()
        image = pred[t].tolist()
        centre = hp.ang2vec(tiles.lon[t], tiles.lat[t], lonlat=True)
        for p in hp.query_disc(nside, centre, radius).tolist():
            vx, vy, vz = hp.pix2vec(nside, p)
            p0 = r[0][0] * vx + r[0][1] * vy + r[0][2] * vz
            p1 = r[1][0] * vx + r[1][1] * vy + r[1][2] * vz
            p2 = r[2][0] * vx + r[2][1] * vy + r[2][2] * vz
            if p0 <= 0:
                continue
            fi, fj = p2 / p0 / dx + c, -p1 / p0 / dx + c
            w = hann(fi / (n - 1)) * hann(fj / (n - 1))
            if w <= 0:
                continue
            i0, j0 = min(int(fi), n - 2), min(int(fj), n - 2)
            ti, tj = fi - i0, fj - j0
            value = (
                image[i0][j0] * (1 - ti) * (1 - tj)
                + image[i0][j0 + 1] * (1 - ti) * tj
                + image[i0 + 1][j0] * ti * (1 - tj)
                + image[i0 + 1][j0 + 1] * ti * tj
            )
            total[p] += w
            acc[p] += w * value
    return total, acc


def whole_step(args) -> None:
    """Time tiles -> cutouts -> batched inference -> reassembly -> FITS at ``args.nside``."""
    import tempfile

    import torch

    from dustpred.template.build import TILE_CHUNK, fold_and_fit
    from dustpred.template.fitsfile import write_template

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rng = np.random.default_rng(0)
    dust = random_smooth_map(args.nside, seed=0).astype(np.float32)
    npix_sky = dust.size
    stack = np.empty((npix_sky, args.channels + 1), np.float32)
    stack[:, :-1] = dust[:, None] / args.channels
    stack[:, :-1] += 0.01 * rng.standard_normal((npix_sky, args.channels), dtype=np.float32)
    stack[:, -1] = dust
    mask = (np.abs(hp.pix2ang(args.nside, np.arange(npix_sky), lonlat=True)[1]) < 10).astype(
        np.uint8
    )
    nets = [torch.nn.Conv2d(args.channels, 1, 3, padding=1).to(device).eval() for _ in range(2)]
    times = {}
    t0 = time.perf_counter()
    tiles = tiling.tile_grid(args.npix, args.reso, seed=0)
    n, shape = len(tiles), (len(tiles), args.npix, args.npix)
    preds = [np.empty(shape, np.float32) for _ in nets]
    masked = np.empty(shape, np.uint8)
    t_cut = t_inf = 0.0
    for lo in range(0, n, TILE_CHUNK):
        sl = slice(lo, min(lo + TILE_CHUNK, n))
        sub = tiling.Tiles(tiles.lon[sl], tiles.lat[sl], tiles.psi[sl], args.npix, args.reso, 0)
        t1 = time.perf_counter()
        cut, masked[sl] = tiling.tile_cutouts(stack, mask, sub)
        t2 = time.perf_counter()
        with torch.no_grad():
            for net, pred in zip(nets, preds, strict=True):
                for b in range(0, cut.shape[0], args.batch):
                    x = torch.from_numpy(np.ascontiguousarray(cut[b : b + args.batch, :-1]))
                    out = net(x.to(device))[:, 0].float().cpu().numpy()
                    pred[lo + b : lo + b + len(out)] = out
        if device.type == "cuda":
            torch.cuda.synchronize()
        t_cut, t_inf = t_cut + t2 - t1, t_inf + time.perf_counter() - t2
    times["cutouts"], times["inference"] = t_cut, t_inf
    t1 = time.perf_counter()
    fold = tiling.fold_map(args.nside, "north_south")
    regions = [tiling.region_map(args.nside, "north_south", s) & (mask == 0) for s in SUBSETS]
    times["fold map"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    result = fold_and_fit(preds, masked, tiles, fold, regions, dust.astype(np.float64), 1.0)
    times["reassembly + amplitude (2 folds)"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    zeros = np.zeros(npix_sky)
    maps = {
        "I": result.value,
        "I_STD": zeros,
        "I_TILE_STD": result.tile_std,
        "I_INTEGRATED": result.value,
        "I_LINEAR": result.value,
        "WEIGHT": result.weight,
        "FOLD": fold.astype(np.uint8),
    }
    with tempfile.TemporaryDirectory() as tmp:
        write_template(f"{tmp}/dust_template.fits", maps, unit="uK_RJ")
    times["FITS"] = time.perf_counter() - t1
    total = time.perf_counter() - t0
    print(f"host: {platform.node()} ({platform.processor() or platform.machine()}), {device}")
    print(
        f"whole template step: Nside {args.nside}, {n} tiles of {args.npix} x {args.reso:g}', "
        f"{args.channels} channels, 2 fake models, batch {args.batch}: {total:.1f} s"
    )
    for name, seconds in times.items():
        print(f"  {name}: {seconds:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nside", type=int, default=256)
    parser.add_argument("--nside-tiles", type=int, default=4)
    parser.add_argument("--npix", type=int, default=64)
    parser.add_argument("--reso", type=float, default=40.0)
    parser.add_argument("--baseline-tiles", type=int, default=4)
    parser.add_argument("--whole", action="store_true", help="time tiles -> FITS instead")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    if args.whole:
        if args.reso == 40.0:
            args.reso = 23.4  # the training geometry (the default tiles: 768)
        whole_step(args)
        return

    sky = random_smooth_map(args.nside, seed=0)
    tiles = tiling.tile_grid(args.npix, args.reso, seed=0, nside_tiles=args.nside_tiles)
    t0 = time.perf_counter()
    pred, _ = tiling.tile_cutouts(sky, np.zeros(sky.size, np.uint8), tiles)
    t_cut = time.perf_counter() - t0

    t0, c0 = time.perf_counter(), time.process_time()
    reassembly.reassemble(pred, tiles, args.nside)
    t_vec, c_vec = time.perf_counter() - t0, time.process_time() - c0

    sample = range(min(args.baseline_tiles, len(tiles)))
    t0, c0 = time.perf_counter(), time.process_time()
    total, acc = loop_reassemble(pred, tiles, args.nside, sample)
    t_loop_sample, c_loop_sample = time.perf_counter() - t0, time.process_time() - c0
    t_loop = t_loop_sample / len(sample) * len(tiles)
    c_loop = c_loop_sample / len(sample) * len(tiles)

    sub = tiling.Tiles(
        tiles.lon[sample.start : sample.stop],
        tiles.lat[sample.start : sample.stop],
        tiles.psi[sample.start : sample.stop],
        tiles.npix,
        tiles.reso_arcmin,
        tiles.nside_tiles,
    )
    check = reassembly.reassemble(pred[sample.start : sample.stop], sub, args.nside)
    hit = total > 0
    agree = np.abs(acc[hit] / total[hit] - check.value[hit]).max() / sky.std()
    same_pixels = np.array_equal(hit, check.weight > 0)

    print(f"host: {platform.node()} ({platform.processor() or platform.machine()})")
    print(
        f"Nside {args.nside}, {len(tiles)} tiles of {args.npix} x {args.reso:g}' "
        f"(centres at Nside {tiles.nside_tiles}); cutouts {t_cut:.2f} s"
    )
    print(
        f"reassemble (vectorised): {t_vec:.2f} s wall, {c_vec:.2f} s CPU "
        f"({c_vec / len(tiles) * 1e3:.1f} ms CPU per tile)"
    )
    print(
        f"Python loop: {t_loop_sample:.2f} s wall for {len(sample)} tiles -> {t_loop:.1f} s wall, "
        f"{c_loop:.1f} s CPU for {len(tiles)} tiles ({c_loop_sample / len(sample) * 1e3:.0f} ms "
        "CPU per tile)"
    )
    print(f"ratio loop / vectorised: {t_loop / t_vec:.0f}x wall, {c_loop / c_vec:.0f}x CPU")
    print(f"agreement on the sampled tiles: max |diff| / map rms = {agree:.1e}, ", end="")
    print(f"same pixels covered: {same_pixels}")


if __name__ == "__main__":
    main()
