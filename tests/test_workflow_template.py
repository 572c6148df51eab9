"""The template stage on the tiny configuration: the FITS template, cross-fitting, validation.

Runs the real Snakefile from the synthetic sky to the template's table and figures (Nside 32,
192 tiles, a two-level U-Net per fold), then checks the file a CMB analysis would read.
"""

import healpy as hp
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from conftest import REPO, job_counts, snakemake_cli
from test_workflow_reruns import TEMPLATE_JOBS

from dustpred.cutouts.shards import ShardSet
from dustpred.inputs import healpix_maps
from dustpred.template import tiling
from dustpred.template.fitsfile import TEMPLATE_COLUMNS, read_template

pytestmark = pytest.mark.workflow

NSIDE = 32  # tests/configs/tiny.yaml: preprocess.nside, template.nside null
FITS = "results/template/baseline/dust_template.fits"
TABLES = [f"results/tables/baseline/template_r_ell.{e}" for e in ("csv", "parquet")]
COVERAGE = [f"results/tables/baseline/template_coverage.{e}" for e in ("csv", "parquet")]
FIGURES = [
    f"results/figures/baseline/{f}.{e}"
    for f in ("template_maps", "template_r_ell", "template_coverage")
    for e in ("png", "pdf")
]


@pytest.fixture(scope="module")
def workdir(tiny_run):
    return tiny_run.workdir


def test_template_and_its_table_and_figures_exist(workdir):
    for path in [FITS, *TABLES, *COVERAGE, *FIGURES]:
        assert (workdir / path).stat().st_size > 0, path


def test_template_is_read_by_healpy_with_all_columns(workdir):
    path = workdir / FITS
    header = fits.getheader(path, 1)
    names = [header[f"TTYPE{i + 1}"] for i in range(header["TFIELDS"])]
    assert names == list(TEMPLATE_COLUMNS)
    assert (header["ORDERING"], header["NSIDE"], header["COORDSYS"]) == ("RING", NSIDE, "G")
    maps = hp.read_map(path, field=tuple(range(len(names))))
    assert maps.shape == (len(names), 12 * NSIDE**2)
    assert np.all(np.isfinite(maps))


def test_template_is_read_by_the_project_reader(workdir):
    values = read_template(workdir / FITS, TEMPLATE_COLUMNS)
    assert all(v.shape == (12 * NSIDE**2,) for v in values.values())
    # Every unmasked pixel is covered by tiles (the window sum is positive).
    mask = np.load(next((workdir / "results/preprocess").glob("*/mask.npy")))
    assert values["WEIGHT"][mask == 0].min() > 0
    assert values["I"][mask == 0].std() > 0


def test_each_pixel_comes_from_the_model_that_did_not_train_on_it(workdir):
    fold = healpix_maps.read_healpix_map(workdir / FITS, "FOLD").astype(int)
    north = tiling.region_map(NSIDE, "north_south", "train")
    south = tiling.region_map(NSIDE, "north_south", "test")
    # Fold 1 (trained on the south) provides the north, fold 0 the south.
    assert np.all(fold[north] == 1) and np.all(fold[south] == 0)
    # And no pixel that a model's training cutouts read is provided by that model.
    shards = workdir / "results/cutouts"
    for k, subset in enumerate(("train", "crossfit")):
        pos = ShardSet(sorted(shards.glob(f"*/north_south/{subset}/shard-*.h5"))).load(
            ["lon", "lat", "psi"]
        )
        seen = tiling.seen_pixels(NSIDE, pos["lon"], pos["lat"], pos["psi"])
        assert seen.sum() > 0
        assert not np.any(fold[seen] == k)
    header = fits.getheader(workdir / FITS, 1)
    assert header["CROSSFIT"] is True
    assert header["FOLD1"] == "trained on south, provides north"


def test_sphere_r_ell_table_has_every_model_per_hemisphere(workdir):
    table = pd.read_parquet(workdir / TABLES[1])
    assert set(table["hemisphere"]) == {"north", "south"}
    assert set(table["model"]) == {"unet", "integrated", "linear", "oracle"}
    assert table["r"].between(-1, 1).all()
    # The oracle (HI-traced dust) correlates best with the target on the largest scales.
    low = table[table["ell_lo"] == table["ell_lo"].min()].set_index(["hemisphere", "model"])
    for hemisphere in ("north", "south"):
        assert low.loc[(hemisphere, "oracle"), "r"] >= low.loc[(hemisphere, "linear"), "r"]


def test_coverage_table_judges_the_error_of_both_hemispheres(workdir):
    table = pd.read_parquet(workdir / COVERAGE[1])
    whole = table[table["region"] == -1]
    assert set(whole["hemisphere"]) == {"north", "south"}
    assert set(whole["scale"]) == {"pixel", "smoothed"}
    assert whole["coverage"].between(0, 1).all()
    # Coverage grows with the nominal level: the error is a scale, not noise.
    for _, rows in whole.groupby(["scale", "hemisphere"]):
        assert rows.sort_values("level")["coverage"].is_monotonic_increasing


def dry_run_counts(tmp_path, configfiles=None, extra_config=None):
    result = snakemake_cli(
        tmp_path, configfiles=configfiles, extra_config=extra_config, args=("-n",)
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return job_counts(result.stdout)


def test_paper_config_lists_the_template_jobs(tmp_path):
    counts = dry_run_counts(
        tmp_path, configfiles=[REPO / "config/config.yaml", REPO / "config/paper.yaml"]
    )
    for rule in TEMPLATE_JOBS:
        assert counts.get(rule) == 1, (rule, counts)
    # One second model per seed of the first experiment only (template.experiments: null).
    assert 1 <= counts["train_unet_crossfit"] < counts["train_unet"]
    assert counts["fit_linear_crossfit"] == 1


def test_without_cross_fit_no_second_model_is_trained(tmp_path):
    counts = dry_run_counts(tmp_path, extra_config={"template": {"cross_fit": False}})
    assert counts["template"] == 1
    assert "train_unet_crossfit" not in counts and "fit_linear_crossfit" not in counts


def test_disabled_template_asks_for_nothing_of_it(tmp_path):
    counts = dry_run_counts(tmp_path, extra_config={"template": {"enabled": False}})
    assert not {"template", "train_unet_crossfit", "template_r_ell"} & set(counts)
