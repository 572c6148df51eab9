"""dustpred.template.tiling / fullsky_output / fullsky_validate: tiles back onto the sphere.

Specifications with their tolerances:

- an "identity model" (each tile's prediction is its own target channel) reassembles a
  band-limited map (Nside 64, Butterworth cutoff 40) to a relative rms error below 3 %
  everywhere (measured 1.7 % nearest, 1.6 % bilinear: two interpolations, not seams), and
  the difference has no seam feature in its power spectrum: C_l(diff) / C_l(map) < 1e-2 at
  every 2 <= l <= 40 (measured <= 5.2e-3). A control with near-boxcar windows and per-tile
  offsets (tile-to-tile disagreement of 8 % rms) breaks that bound, so the check can fail;
- one tile reassembled alone equals an independent inverse projection (healpy's
  ``GnomonicProj.vec2xy`` plus a plain bilinear lookup) to 1e-10, and healpy's own
  ``get_interp_val`` of the map within interpolation error (rms below 3 % of the map's
  rms; measured 1.7 %);
- cross-fitting: with models returning 1 and 2, every pixel holds 1 + FOLD exactly and no
  pixel read by a model's training cutouts is provided by that model;
- the FITS table round-trips through ``healpy.read_map`` and
  ``dustpred.inputs.healpix_maps.read_healpix_map``.
"""

from __future__ import annotations

import json

import healpy as hp
import numpy as np
import pytest

from dustpred.cutouts import sampling
from dustpred.errors import InputError
from dustpred.inputs import healpix_maps
from dustpred.sky.harmonic import butterworth
from dustpred.template import reassembly, tiling
from dustpred.template.amplitude import fit_amplitude
from dustpred.template.fitsfile import (
    TEMPLATE_COLUMNS,
    provenance_cards,
    read_template,
    write_template,
)
from dustpred.template.sphere import sphere_r_ell

NSIDE = 64
ELL_CUTOFF = 40
NPIX, RESO = 32, 50.0  # 26.7 deg tiles (pixels ~ the Nside-64 pixel size)


def smooth_cl(ell: np.ndarray, ell_cutoff: float = ELL_CUTOFF) -> np.ndarray:
    """C_l ~ l^-2.5 (0 below l = 2) under a Butterworth (order 4) low-pass."""
    cl = np.where(ell >= 2, np.maximum(ell, 1.0) ** -2.5, 0.0)
    return cl * butterworth(ell, ell_cutoff, 4) ** 2


def smooth_map(nside: int, seed: int, ell_cutoff: float = ELL_CUTOFF) -> np.ndarray:
    """A Gaussian map with the spectrum :func:`smooth_cl`."""
    ell = np.arange(3 * nside)
    cl = smooth_cl(ell, ell_cutoff)
    lmax = 3 * nside - 1
    rng = np.random.default_rng(seed)
    size = hp.Alm.getsize(lmax)
    alm = (rng.standard_normal(size) + 1j * rng.standard_normal(size)) / np.sqrt(2)
    alm[: lmax + 1] = rng.standard_normal(lmax + 1)  # m = 0: real, unit variance
    return hp.alm2map(hp.almxfl(alm, np.sqrt(cl)), nside, lmax=lmax)


@pytest.fixture(scope="module")
def sky():
    return smooth_map(NSIDE, seed=3)


@pytest.fixture(scope="module")
def tiles():
    return tiling.tile_grid(NPIX, RESO, seed=1)


def test_tile_grid_puts_every_point_within_coverage_of_a_centre(tiles):
    # Distance from every Nside-64 pixel centre to the nearest tile centre (its coarse pixel's).
    vec = np.asarray(hp.pix2vec(NSIDE, np.arange(12 * NSIDE**2)))
    nearest = hp.vec2pix(tiles.nside_tiles, *vec)
    centres = hp.ang2vec(tiles.lon[nearest], tiles.lat[nearest], lonlat=True).T
    distance = np.arccos(np.clip((vec * centres).sum(axis=0), -1, 1))
    assert tiles.nside_tiles == 8 and len(tiles) == 768
    assert distance.max() <= 0.75 * np.arctan(tiles.half_width_rad)


def test_tile_rotations_are_fixed_by_the_seed():
    a, b = tiling.tile_grid(NPIX, RESO, seed=1), tiling.tile_grid(NPIX, RESO, seed=1)
    c = tiling.tile_grid(NPIX, RESO, seed=2)
    assert np.array_equal(a.psi, b.psi)
    assert np.abs(a.psi - c.psi).max() > 1.0
    assert 0 <= a.psi.min() and a.psi.max() < 360


def test_reassembly_weight_covers_the_whole_sky(tiles, sky):
    cut, _ = tiling.tile_cutouts(sky, np.zeros(sky.size, np.uint8), tiles)
    weight = reassembly.reassemble(cut, tiles, NSIDE).weight
    # No gaps and no thin spots: the least-covered pixel keeps > half the median weight.
    assert weight.min() > 0.5 * np.median(weight)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_identity_model_reassembles_the_map_without_seams(tiles, sky, interpolation):
    cut, _ = tiling.tile_cutouts(
        sky, np.zeros(sky.size, np.uint8), tiles, interpolation=interpolation
    )
    out = reassembly.reassemble(cut, tiles, NSIDE)
    diff = out.value - sky
    assert np.sqrt(np.mean(diff**2)) / sky.std() < 0.03
    ratio = hp.anafast(diff, lmax=ELL_CUTOFF)[2:] / hp.anafast(sky, lmax=ELL_CUTOFF)[2:]
    assert ratio.max() < 1e-2


def test_seam_check_fails_on_hard_edged_tiles_with_offsets(tiles, sky):
    # Control for the spectral check above: near-boxcar windows and a random offset per tile
    # (0.3 x the map rms; 8 % rms error after averaging ~10 tiles, measured 2.5e-2 in
    # C_l(diff) / C_l(map)) are seams the same bound must reject.
    cut, _ = tiling.tile_cutouts(sky, np.zeros(sky.size, np.uint8), tiles, interpolation="bilinear")
    offsets = 0.3 * sky.std() * np.random.default_rng(0).standard_normal(len(tiles))
    out = reassembly.reassemble(cut + offsets[:, None, None], tiles, NSIDE, taper=0.02)
    diff = out.value - sky
    ratio = hp.anafast(diff, lmax=ELL_CUTOFF)[2:] / hp.anafast(sky, lmax=ELL_CUTOFF)[2:]
    assert ratio.max() > 1e-2


def test_masked_tile_pixels_contribute_nothing(tiles, sky):
    mask = np.zeros(sky.size, np.uint8)
    mask[hp.query_disc(NSIDE, hp.ang2vec(40.0, 20.0, lonlat=True), np.radians(15.0))] = 1
    cut, masked = tiling.tile_cutouts(sky, mask, tiles)
    clean = reassembly.reassemble(cut, tiles, NSIDE, masked=masked)
    garbage = np.where(masked == 1, 1e6, cut)
    dirty = reassembly.reassemble(garbage, tiles, NSIDE, masked=masked)
    np.testing.assert_allclose(dirty.value, clean.value, rtol=0, atol=1e-12)
    inner = hp.query_disc(NSIDE, hp.ang2vec(40.0, 20.0, lonlat=True), np.radians(12.0))
    assert clean.weight[inner].max() == 0 and clean.value[inner].max() == 0
    assert (clean.weight[mask == 0] > 0).all()


def one_tile(lon=30.0, lat=50.0, psi=25.0) -> tiling.Tiles:
    arr = [np.array([v]) for v in (lon, lat, psi)]
    return tiling.Tiles(*arr, npix=NPIX, reso_arcmin=RESO, nside_tiles=0)


def test_one_tile_matches_healpys_inverse_projection(sky):
    tile = one_tile()
    image = np.random.default_rng(5).standard_normal((1, NPIX, NPIX))
    out = reassembly.reassemble(image, tile, NSIDE)
    pix = np.flatnonzero(out.weight > 0)
    # Independent inverse: healpy's projector (its own Rotator) gives plane x, y; pixel
    # (i, j) sits at x = (j - c) dx, y = (i - c) dx; plain bilinear lookup in the image.
    proj = hp.projector.GnomonicProj(rot=(30.0, 50.0, 25.0), xsize=NPIX, reso=RESO)
    x, y = proj.vec2xy(np.asarray(hp.pix2vec(NSIDE, pix)))
    dx, c = np.radians(RESO / 60.0), 0.5 * (NPIX - 1)
    fi, fj = c + y / dx, c + x / dx
    i0, j0 = np.floor(fi).astype(int), np.floor(fj).astype(int)
    ti, tj = fi - i0, fj - j0
    img = image[0]
    reference = (
        img[i0, j0] * (1 - ti) * (1 - tj)
        + img[i0, j0 + 1] * (1 - ti) * tj
        + img[i0 + 1, j0] * ti * (1 - tj)
        + img[i0 + 1, j0 + 1] * ti * tj
    )
    np.testing.assert_allclose(out.value[pix], reference, rtol=0, atol=1e-10)
    # And a tile of the map itself comes back as healpy's interpolation of the map.
    cut, _ = tiling.tile_cutouts(sky, np.zeros(sky.size, np.uint8), tile, interpolation="bilinear")
    back = reassembly.reassemble(cut, tile, NSIDE).value[pix]
    theta, phi = hp.pix2ang(NSIDE, pix)
    err = back - hp.get_interp_val(sky, theta, phi)
    assert np.sqrt(np.mean(err**2)) < 0.03 * sky.std()


@pytest.mark.parametrize("split", sampling.SPLITS)
def test_cross_fit_takes_every_pixel_from_the_model_that_did_not_train_on_it(split):
    nside, npix, reso = 32, 16, 60.0
    mask = np.zeros(12 * nside**2, np.uint8)
    seen = []
    for subset in sampling.SUBSETS:  # model 0 trains on 'train', model 1 on 'test'
        region = sampling.split_region(split, subset, npix=npix, reso_arcmin=reso)
        draws = sampling.draw_cutouts(
            mask,
            np.arange(200),
            region=region,
            seed=0,
            subset=subset,
            npix=npix,
            reso_arcmin=reso,
        )
        seen.append(
            tiling.seen_pixels(
                nside,
                draws.lon,
                draws.lat,
                draws.psi,
                npix=npix,
                reso_arcmin=reso,
                interpolation="bilinear",
            )
        )
    fold = tiling.fold_map(nside, split, seen=tuple(seen))
    tiles = tiling.tile_grid(npix, reso, seed=0)
    constants = np.stack([np.full((len(tiles), npix, npix), v) for v in (1.0, 2.0)])
    out = reassembly.reassemble(constants, tiles, nside, fold=fold)
    assert (out.weight > 0).all()
    np.testing.assert_allclose(out.value, 1.0 + fold, rtol=0, atol=1e-12)
    assert seen[0].sum() > 1000 and seen[1].sum() > 1000
    assert not (seen[0] & (fold == 0)).any() and not (seen[1] & (fold == 1)).any()
    assert (fold[tiling.region_map(nside, split, "train")] == 1).all()
    assert (fold[tiling.region_map(nside, split, "test")] == 0).all()


def test_fold_map_follows_the_record_of_seen_pixels():
    nside = 16
    south = np.flatnonzero(tiling.region_map(nside, "north_south", "test"))[:5]
    seen_0 = np.zeros(12 * nside**2, bool)
    seen_0[south] = True  # model 0 (north) read 5 southern pixels: model 1 must provide them
    fold = tiling.fold_map(nside, "north_south", seen=(seen_0, np.zeros_like(seen_0)))
    assert (fold[south] == 1).all()
    with pytest.raises(InputError, match="both models"):
        tiling.fold_map(nside, "north_south", seen=(seen_0, seen_0))


def test_fold_map_without_cross_fitting_is_one_model():
    assert not tiling.fold_map(16, "north_south", cross_fit=False).any()


def test_fit_amplitude_recovers_scale_and_offset_on_the_selected_pixels(sky):
    rng = np.random.default_rng(1)
    target = 3.0 * sky + 5.0 + 1e-3 * sky.std() * rng.standard_normal(sky.size)
    north = tiling.region_map(NSIDE, "north_south", "train")
    target[~north] = 1e6  # outside the fit region: must not matter
    scale, offset = fit_amplitude(sky, target, north)
    assert scale == pytest.approx(3.0, rel=1e-3)
    assert offset == pytest.approx(5.0, abs=1e-3 * 3.0 * sky.std())


def template_maps(nside: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    maps = {name: rng.standard_normal(12 * nside**2) for name in TEMPLATE_COLUMNS}
    maps["WEIGHT"] = np.abs(maps["WEIGHT"])
    maps["FOLD"] = tiling.fold_map(nside, "north_south")
    return maps


def test_uncovered_pixels_are_unseen_for_healpy_with_the_healpix_header_cards(tmp_path):
    nside = 16
    maps = template_maps(nside)
    uncovered = np.zeros(12 * nside**2, bool)
    uncovered[:100] = True
    maps["WEIGHT"][uncovered] = 0.0
    path = tmp_path / "dust_template.fits"
    write_template(path, maps, unit="uK_RJ", cards={})
    for name in ("I", "I_STD", "I_TILE_STD", "I_INTEGRATED", "I_LINEAR"):
        values = hp.read_map(path, field=TEMPLATE_COLUMNS.index(name))
        np.testing.assert_allclose(values[uncovered], hp.UNSEEN, rtol=1e-6)  # float32 UNSEEN
        assert np.array_equal(hp.mask_bad(values), uncovered), name
        np.testing.assert_array_equal(values[~uncovered], maps[name][~uncovered].astype(np.float32))
    from astropy.io import fits

    with fits.open(path) as hdul:
        header = hdul[1].header
    assert header["EXTNAME"] == "DUST_TEMPLATE" and header["POLAR"] is False
    assert header["BAD_DATA"] == pytest.approx(hp.UNSEEN)
    # The project's reader accepts its own file again, UNSEEN included.
    again = read_template(path, ["I", "WEIGHT"])
    assert np.array_equal(hp.mask_bad(again["I"]), uncovered)
    assert np.all(again["WEIGHT"][uncovered] == 0)


def test_template_fits_round_trips_through_healpy_and_the_dust_reader(tmp_path):
    nside = 32
    maps = template_maps(nside)
    # Longer than one card: stored over CONTINUE cards.
    config = json.dumps(
        {"template": {"cross_fit": True, "tiles": {f"key{i}": i for i in range(20)}}}
    )
    cards = provenance_cards(
        model_sha256=["a" * 64, "b" * 64],
        scales=[2.5, 3.5],
        offsets=[0.1, -0.2],
        split="north_south",
        config_json=config,
    )
    path = tmp_path / "dust_template.fits"
    write_template(path, maps, unit="uK_RJ", cards=cards)
    for k, name in enumerate(TEMPLATE_COLUMNS):
        values = hp.read_map(path, field=k)
        np.testing.assert_array_equal(values, maps[name].astype(np.float32))
    dust = healpix_maps.read_healpix_map(path, "I", units=healpix_maps.DUST_UNITS)
    np.testing.assert_array_equal(dust, maps["I"].astype(np.float32))
    from astropy.io import fits

    with fits.open(path) as hdul:
        header = hdul[1].header
    assert (header["ORDERING"], header["NSIDE"], header["COORDSYS"]) == ("RING", nside, "G")
    assert header["NAXIS2"] == 12 * nside**2 and header["TUNIT1"] == "uK_RJ"
    fold, weight = (TEMPLATE_COLUMNS.index(c) + 1 for c in ("FOLD", "WEIGHT"))
    assert header[f"TFORM{fold}"] == "B" and f"TUNIT{weight}" not in header
    assert header["MODSHA1"] == "b" * 64 and header["AMPSCL0"] == 2.5
    assert header["CONFIG"] == config and header["SPLIT"] == "north_south"


def test_template_fits_has_the_same_bytes_for_the_same_inputs(tmp_path):
    maps = template_maps(16)
    write_template(tmp_path / "a.fits", maps, unit="uK_RJ", cards=provenance_cards())
    write_template(tmp_path / "b.fits", maps, unit="uK_RJ", cards=provenance_cards())
    assert (tmp_path / "a.fits").read_bytes() == (tmp_path / "b.fits").read_bytes()


def test_write_template_refuses_missing_columns(tmp_path):
    maps = template_maps(16)
    del maps["FOLD"]
    with pytest.raises(InputError, match="FOLD"):
        write_template(tmp_path / "t.fits", maps, unit="uK_RJ")


@pytest.fixture(scope="module")
def sphere_table(sky):
    """sphere_r_ell of a rescaled template and of the sky plus independent noise of the same
    spectrum (expected r = 1/sqrt(2)), outside a Galactic cut, bins of 10."""
    keep = np.ones(sky.size, bool)
    keep[hp.query_strip(NSIDE, np.radians(80), np.radians(100))] = False  # a Galactic cut
    noise = smooth_map(NSIDE, seed=11)
    return sphere_r_ell(
        sky,
        {"scaled": 3.0 * sky + 5.0, "noisy": sky + noise},
        keep,
        split="north_south",
        ell_cutoff=ELL_CUTOFF,
        bin_width=10,
    )


def test_sphere_r_ell_is_one_for_a_rescaled_template_and_falls_with_noise(sphere_table):
    table = sphere_table
    assert len(table) == 2 * 2 * 4  # hemispheres x models x bins [2, 12, 22, 32, 41)
    assert set(table["hemisphere"]) == {"north", "south"}
    np.testing.assert_allclose(table.loc[table.model == "scaled", "r"], 1.0, atol=1e-10)
    noisy = table.loc[table.model == "noisy", "r"]
    # ~150-300 modes per bin: a scatter of ~0.05 per bin, ~0.02 on the mean of 8 bins.
    assert noisy.mean() == pytest.approx(1 / np.sqrt(2), abs=0.06)
    assert noisy.max() < 0.9


def test_residual_power_is_that_of_the_map_left_after_the_template(sphere_table):
    table = sphere_table
    scaled, noisy = (table[table.model == m] for m in ("scaled", "noisy"))
    # target - (3 target + 5) = -2 target - 5, and the offset is removed: 4 C_l exactly.
    np.testing.assert_allclose(scaled["cl_residual"], 4.0 * scaled["cl_target"], rtol=1e-8)
    # The residual is the noise, a realisation of the target's spectrum: ratio ~1 with the
    # cosmic variance of ~150-300 modes per bin and hemisphere (~0.1 per bin).
    ratio = noisy["cl_residual"] / noisy["cl_target"]
    assert ratio.mean() == pytest.approx(1.0, abs=0.2)
    # Divided by the mean squared window, the pseudo-C_l is the full-sky C_l of the model
    # (bins from l = 12: ~150+ modes per hemisphere, cosmic variance ~0.1; l < 12 has ~50).
    for _, row in noisy[noisy.ell_lo >= 12].iterrows():
        ell = np.arange(row.ell_lo, row.ell_hi)
        expected = float((2 * ell + 1) @ smooth_cl(ell) / (2 * ell + 1).sum())
        assert row.cl_target == pytest.approx(expected, rel=0.3)
        assert row.cl_residual == pytest.approx(expected, rel=0.3)
