"""The whole DAG on the tiny configuration: every declared output exists and is well-formed,
the summary is printed, and `snakemake --report` gathers every figure and table.

One run of `rule all` (simulate -> preprocess -> cutouts -> fit/train -> predict -> evaluate
-> figures) in a temporary directory, shared by the tests of this module.
"""

import json
import shutil
import zipfile
from pathlib import Path

import h5py
import pandas as pd
import pytest
from conftest import snakemake_cli

from dustpred.evaluation.summary import SUMMARY_BY_EXPERIMENT_COLUMNS, SUMMARY_COLUMNS
from dustpred.evaluation.tables import PER_CUTOUT_COLUMNS, R_ELL_COLUMNS, WINS_COLUMNS

pytestmark = pytest.mark.workflow

TABLE_COLUMNS = {
    "per_cutout": PER_CUTOUT_COLUMNS,
    "r_ell": R_ELL_COLUMNS,
    "wins": WINS_COLUMNS,
    "summary": SUMMARY_COLUMNS,
    "summary_by_experiment": SUMMARY_BY_EXPERIMENT_COLUMNS,
}
PREDICTION_DATASETS = {
    "target",
    "mask",
    "integrated",
    "linear",
    "linear_sd",
    "unet",
    "lon",
    "lat",
    "psi",
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def declared_outputs(workdir):
    """Every output file of the DAG of `rule all`, from `snakemake --summary`."""
    result = snakemake_cli(workdir, args=("--summary",))
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line.split("\t") for line in result.stdout.splitlines() if "\t" in line]
    header, rows = lines[0], lines[1:]
    assert header[:3] == ["output_file", "date", "rule"], header
    return [(row[0], row[2], row[4]) for row in rows]


@pytest.fixture(scope="module")
def finished(tiny_run):
    return tiny_run.workdir, tiny_run.result


def check_well_formed(path: Path):
    """Assert that `path` is a plausible file of its kind (by suffix and name)."""
    assert path.is_file(), path
    assert path.stat().st_size > 0, path
    data = path.read_bytes()[:8]
    if path.suffix == ".png":
        assert data == PNG_MAGIC and path.stat().st_size > 2_000, path
    elif path.suffix == ".pdf":
        assert data[:5] == b"%PDF-", path
    elif path.suffix in (".csv", ".parquet"):
        table = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
        assert len(table) > 0, path
        if path.stem in TABLE_COLUMNS:
            assert list(table.columns) == TABLE_COLUMNS[path.stem], path
    elif path.suffix == ".h5":
        with h5py.File(path, "r") as f:
            assert len(f.keys()) > 0, path
            if "predictions" in path.parts:
                assert PREDICTION_DATASETS <= set(f.keys()), path
    elif path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".fits":
        assert data.startswith(b"SIMPLE"), path


def test_every_declared_output_exists_and_is_well_formed(finished):
    workdir, _ = finished
    outputs = declared_outputs(workdir)
    assert len(outputs) > 20
    for name, rule, status in outputs:
        assert status == "ok", (name, rule, status)
        path = workdir / name
        if path.is_dir():
            assert any(path.iterdir()), name
        else:
            check_well_formed(path)
    names = {name for name, _, _ in outputs}
    for figure in ("fig3_example", "fig4_per_cutout", "fig5_r_ell", "training_curves"):
        assert f"results/figures/baseline/seed0/{figure}.png" in names
    assert "results/summary.txt" in names


def test_summary_reports_every_model_and_the_win_counts(finished):
    workdir, result = finished
    text = (workdir / "results/summary.txt").read_text()
    headline = text.split("every run")[0]
    assert "\n  integrated intensity " in headline  # the reference: its r, no win count
    for label in (
        "linear, scale-independent",
        "linear, scale-dependent",
        "U-Net (residual)",
        "U-Net (paper)",
        "oracle (HI-traced dust)",
    ):
        assert f"  {label} beats integrated intensity in" in headline, label
    assert "U-Net beats integrated intensity in" in text
    assert "U-Net (paper) beats integrated intensity in" in result.stderr  # printed to the log
    table = pd.read_csv(workdir / "results/tables/summary.csv")
    assert set(table["model"]) == {"integrated", "linear", "linear_sd", "unet", "oracle"}
    assert set(zip(table.experiment, table.variant, strict=True)) == {
        ("baseline", "residual"),
        ("paper_unet", "paper"),
    }
    oracle = table[table.model == "oracle"].iloc[0]
    assert oracle["r50_test"] > table[table.model == "integrated"]["r50_test"].iloc[0]


def test_second_run_has_nothing_to_do(finished):
    workdir, _ = finished
    dry = snakemake_cli(workdir, args=("-n",))
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_report_contains_every_figure_and_table(finished, tmp_path):
    workdir, _ = finished
    report = tmp_path / "report.zip"
    result = snakemake_cli(workdir, args=("--report", str(report)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ERROR" not in result.stderr  # reStructuredText errors in captions
    members = zipfile.ZipFile(report).namelist()
    in_report = {Path(m).name for m in members}
    figures = sorted((workdir / "results/figures").rglob("*.png"))
    assert figures
    for figure in figures:
        assert figure.name in in_report, figure
    for table in ("per_cutout.csv", "r_ell.csv", "wins.csv", "summary.csv", "summary.txt"):
        assert table in in_report, table
    assert any(m.endswith("report.html") for m in members)


def test_another_experiments_model_file_is_refused_by_predict(finished, tmp_path):
    workdir, _ = finished
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns(".snakemake"))
    models = copy / "results/models"
    shutil.copy(models / "paper_unet/seed0/unet.pt", models / "baseline/seed0/unet.pt")
    target = "results/predictions/baseline/seed0/test.h5"
    done = snakemake_cli(copy, target, args=("--forcerun", "predict"))
    assert done.returncode != 0
    log = (copy / "logs/predict/baseline/seed0/test.log").read_text()
    assert "baseline/seed0/unet.pt: trained with other unet settings" in log
    assert "variant: 'paper' (config 'residual')" in log
