"""dustpred.template.build and dustpred.figures.template on a small sky, without the workflow.

The sky is Nside 16 with six HI channels (smooth log-normal fields) and a dust map that is
their sum, so integrated intensity is the exact model and its template must reproduce the
target. The models are trained on fake shards: fold 0 on cutouts centred at b > 30 deg (the
north), fold 1 at b < -30 deg (the south), so every pixel a model's cutouts read lies in its
own hemisphere and the two training sets are disjoint, as the workflow's are.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import healpy as hp
import numpy as np
import pandas as pd
import pytest
from fake_training_shards import SIDE_DEG, fit_and_train, write_fake_shards
from test_predict import PARAMS

from dustpred.errors import ConfigError, InputError
from dustpred.figures.template import (
    plot_template_maps,
    plot_template_r_ell,
    template_r_ell_figure,
)
from dustpred.template import tiling
from dustpred.template.build import Fold, Geometry, TemplateSettings, build_template
from dustpred.template.fitsfile import TEMPLATE_COLUMNS, read_template
from dustpred.template.uncertainty import COVERAGE_COLUMNS, ErrorSettings, write_coverage

NSIDE, CHANNELS, NPIX = 16, 6, 16
GEOMETRY = Geometry(
    npix=NPIX, reso_arcmin=SIDE_DEG * 60.0 / NPIX, interpolation="nearest", split="north_south"
)
SETTINGS = TemplateSettings(coverage=0.75, batch_size=64, device="cpu")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_stack(directory) -> dict[str, str]:
    """stack.npy (six HI channels, dust = their sum), mask.npy (a cap masked), meta.json."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    fields = [hp.smoothing(rng.normal(size=12 * NSIDE**2), fwhm=0.2) for _ in range(CHANNELS)]
    hi = np.stack([np.exp(f / f.std()) for f in fields], axis=1)
    stack = np.column_stack([hi, hi.sum(axis=1)]).astype(np.float32)
    theta, _ = hp.pix2ang(NSIDE, np.arange(12 * NSIDE**2))
    mask = (np.abs(theta - np.pi / 2) < 0.1).astype(np.uint8)  # a band around the plane
    meta = {
        "nside": NSIDE,
        "velocities_kms": np.linspace(-60.0, 15.0, CHANNELS).tolist(),
        "units": {"hi": "K", "dust": "uK_RJ"},
        "ell_cutoff": 40.0,
        "butterworth_order": 4,
        "sources": {"hi": "hi.fits", "dust": "dust.fits", "mask": "mask.fits"},
        "dust_header": {"unit": "K_RJ", "reference_frequency": "NU_REF = 545 GHz"},
    }
    paths = {k: str(directory / f"{k}.{e}") for k, e in (("stack", "npy"), ("mask", "npy"))}
    np.save(paths["stack"], stack)
    np.save(paths["mask"], mask)
    paths["meta"] = str(directory / "meta.json")
    (directory / "meta.json").write_text(json.dumps(meta))
    return paths


def trained_fold(directory, lat_range, seed) -> Fold:
    shards = write_fake_shards(
        directory / "shards", n_per_shard=(24,), channels=CHANNELS, npix=NPIX, seed=seed
    )
    for path in shards:  # the fake shards' centres, moved to one hemisphere
        with h5py.File(path, "r+") as f:
            f["lat"][...] = np.random.default_rng(seed).uniform(*lat_range, f["lat"].shape[0])
    fit_and_train(shards, directory, PARAMS)
    return Fold(
        unets={0: str(directory / "unet.pt")}, linear=str(directory / "linear.csv"), shards=shards
    )


@pytest.fixture(scope="module")
def sky(tmp_path_factory):
    root = tmp_path_factory.mktemp("template_build")
    north = trained_fold(root / "north", (40.0, 80.0), seed=1)
    south = trained_fold(root / "south", (-80.0, -40.0), seed=2)
    return root, write_stack(root / "prep"), north, south


def build(sky, folds, out, **overrides):
    root, prep, _, _ = sky
    settings = {
        "geometry": GEOMETRY,
        "settings": SETTINGS,
        "errors": ErrorSettings(bins=5, fwhm_deg=10.0),
        "seed": 3,
        "config_slice": {"k": 1},
    }
    build_template(prep, folds, out, **{**settings, **overrides})
    return read_template(out, TEMPLATE_COLUMNS)


@pytest.fixture(scope="module")
def cross_fitted(sky):
    root, _, north, south = sky
    out = root / "crossfit.fits"
    return out, build(sky, [north, south], out)


def test_cross_fitted_template_takes_each_hemisphere_from_the_model_trained_on_the_other(
    cross_fitted,
):
    _, maps = cross_fitted
    expected = tiling.fold_map(NSIDE, "north_south")
    covered = maps["WEIGHT"] > 0
    assert covered.mean() > 0.8
    # Without overlap of the two training sets, seen pixels follow the region rule.
    np.testing.assert_array_equal(maps["FOLD"][covered], expected[covered])
    assert set(np.unique(maps["FOLD"])) == {0, 1}


def test_integrated_template_reproduces_a_dust_map_that_is_the_hi_sum(sky, cross_fitted):
    _, prep, _, _ = sky
    _, maps = cross_fitted
    target = np.load(prep["stack"])[:, -1].astype(np.float64)
    keep = (maps["WEIGHT"] > 0) & (np.load(prep["mask"]) == 0)
    r = np.corrcoef(maps["I_INTEGRATED"][keep], target[keep])[0, 1]
    assert r > 0.99  # tiles -> nearest-pixel cutouts -> reassembly, amplitude refitted


def test_header_records_the_folds_and_the_config_slice(cross_fitted):
    from astropy.io import fits

    out, _ = cross_fitted
    header = fits.getheader(out, 1)
    assert header["CROSSFIT"] is True
    assert header["FOLD0"] == "trained on north, provides south"
    assert header["MODORDER"] == "s0f0,s0f1"
    assert json.loads(header["CONFIG"]) == {"k": 1}


def test_one_fold_provides_every_pixel(sky, tmp_path):
    _, _, north, _ = sky
    maps = build(sky, [north], tmp_path / "one.fits")
    assert not maps["FOLD"].any()
    covered = maps["WEIGHT"] > 0
    assert np.all(maps["I_STD"][covered] == 0)  # one seed; UNSEEN where no tile reaches


def test_same_inputs_give_the_same_bytes(sky, cross_fitted, tmp_path):
    _, _, north, south = sky
    out, _ = cross_fitted
    build(sky, [north, south], tmp_path / "again.fits")
    assert (tmp_path / "again.fits").read_bytes() == out.read_bytes()


def test_folds_with_different_seeds_are_refused(sky, tmp_path):
    _, _, north, south = sky
    other = Fold(unets={1: south.unets[0]}, linear=south.linear, shards=south.shards)
    with pytest.raises(ConfigError, match="same seeds"):
        build(sky, [north, other], tmp_path / "bad.fits")
    assert not (tmp_path / "bad.fits").exists()


def test_a_fold_whose_unet_was_trained_otherwise_is_refused(sky, tmp_path):
    _, _, north, south = sky
    paper = Fold(**{**vars(south), "unet_settings": {**PARAMS, "variant": "paper"}})
    with pytest.raises(InputError, match=r"trained with other unet settings .*variant"):
        build(sky, [north, paper], tmp_path / "bad.fits")


def test_template_maps_figure_is_written_as_png_and_pdf(sky, cross_fitted, tmp_path):
    _, prep, _, _ = sky
    out, _ = cross_fitted
    paths = [tmp_path / "maps.png", tmp_path / "maps.pdf"]
    plot_template_maps(out, prep, paths, dpi=40)
    assert paths[0].read_bytes()[:8] == PNG_MAGIC
    assert paths[1].read_bytes()[:5] == b"%PDF-"


def test_sphere_r_ell_figure_has_one_panel_per_hemisphere():
    table = pd.DataFrame(
        {
            "hemisphere": ["north"] * 4 + ["south"] * 4,
            "model": ["unet", "unet", "integrated", "integrated"] * 2,
            "ell": [10, 30] * 4,
            "r": [0.9, 0.8, 0.85, 0.7] * 2,
        }
    )
    fig = template_r_ell_figure(table)
    assert [ax.get_title() for ax in fig.axes] == ["north", "south"]
    assert len(fig.axes[0].lines) == 2


def test_sphere_r_ell_figure_refuses_a_table_without_its_columns(tmp_path):
    table = tmp_path / "template_r_ell.csv"
    pd.DataFrame({"hemisphere": ["north"], "ell": [10]}).to_csv(table, index=False)
    with pytest.raises(InputError, match="missing column"):
        plot_template_r_ell(table, [tmp_path / "f.png"])


def test_the_header_records_the_filter_the_dust_input_the_commit_and_the_files_read(sky, tmp_path):
    from astropy.io import fits

    from dustpred.inputs.download import sha256_of

    _, prep, north, _ = sky
    out = tmp_path / "t.fits"
    build(sky, [north], out, commit="0123abc")
    with fits.open(out) as hdul:
        header = hdul[1].header
    assert (header["ELLCUT"], header["BWORDER"]) == (40.0, 4)
    assert (header["DUSTUNIT"], header["DUSTFREQ"]) == ("K_RJ", "NU_REF = 545 GHz")
    assert header["GITCOMMT"] == "0123abc" and header["SRCDUST"] == "dust.fits"
    inputs = {header[f"INPUT{k}"]: header[f"INSHA{k}"] for k in range(4)}
    assert inputs[f"stack: {prep['stack']}"] == sha256_of(prep["stack"])
    assert inputs[f"linear_0: {north.linear}"] == sha256_of(north.linear)


def test_git_commit_names_this_checkout_and_is_unknown_elsewhere(tmp_path):
    from dustpred.template.fitsfile import git_commit

    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", git_commit(Path(__file__).parent))
    assert git_commit(tmp_path) == "unknown"


def test_cross_fitted_template_has_a_calibrated_error_unseen_where_no_tile_reaches(cross_fitted):
    from astropy.io import fits

    out, maps = cross_fitted
    header = fits.getheader(out, 1)
    assert header["ERRCAL"] == "other fold's residuals, 5 bins of I"
    assert header["ERRFWHM"] == 10.0
    error = hp.read_map(out, field=TEMPLATE_COLUMNS.index("I_ERR"))
    covered = maps["WEIGHT"] > 0
    assert np.all(error[~covered] == hp.UNSEEN)
    assert np.all(error[covered] > 0)
    bad = hp.mask_bad(maps["I_ERR_1DEG"])  # defined one beam inside each fold's unmasked sky
    assert 0 < np.mean(bad) < 1 and bad[~covered].all()


def test_without_cross_fitting_the_error_is_unseen_and_its_coverage_table_empty(sky, tmp_path):
    from astropy.io import fits

    _, prep, north, _ = sky
    out = tmp_path / "one.fits"
    maps = build(sky, [north], out)
    assert fits.getheader(out, 1)["ERRCAL"] == "none"
    assert hp.mask_bad(maps["I_ERR"]).all() and hp.mask_bad(maps["I_ERR_1DEG"]).all()
    paths = (tmp_path / "coverage.csv", tmp_path / "coverage.parquet")
    validation = {"coverage_region_nside": 2, "coverage_min_pixels": 10}
    table = write_coverage(out, prep, paths, split="north_south", validation=validation)
    assert table.empty and list(pd.read_csv(paths[0]).columns) == COVERAGE_COLUMNS


def test_coverage_table_of_a_cross_fitted_template_judges_both_hemispheres(
    sky, cross_fitted, tmp_path
):
    _, prep, _, _ = sky
    out, _ = cross_fitted
    paths = (tmp_path / "coverage.csv", tmp_path / "coverage.parquet")
    validation = {"coverage_region_nside": 2, "coverage_min_pixels": 10}
    table = write_coverage(out, prep, paths, split="north_south", validation=validation)
    whole = table[table["region"] == -1]
    assert set(whole["hemisphere"]) == {"north", "south"}
    assert set(whole["scale"]) == {"pixel", "smoothed"}
    assert (whole["fwhm_deg"][whole["scale"] == "smoothed"] == 10.0).all()
    assert whole["coverage"].between(0, 1).all() and (whole["n_pixels"] > 0).all()
