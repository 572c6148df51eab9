"""The evaluate stage as a Snakemake DAG on fake predictions: tables, figures, summary, report.

Runs the real Snakefile in a temporary working directory holding fake prediction files and
training logs for two experiments (one with two seeds), so it needs nothing upstream.
"""

import zipfile

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, job_counts, snakemake_cli
from fake_predictions import write_fake_predictions

from dustpred.evaluation.summary import SUMMARY_BY_EXPERIMENT_COLUMNS, SUMMARY_COLUMNS
from dustpred.evaluation.tables import PER_CUTOUT_COLUMNS, R_ELL_COLUMNS, WINS_COLUMNS

pytestmark = pytest.mark.workflow

RUNS = [("baseline", 0), ("baseline", 1), ("lam0", 0)]
FIGURES = ["fig3_example", "fig4_per_cutout", "fig5_r_ell", "training_curves"]
TABLES = {"per_cutout": PER_CUTOUT_COLUMNS, "r_ell": R_ELL_COLUMNS, "wins": WINS_COLUMNS}
SUMMARIES = {"summary": SUMMARY_COLUMNS, "summary_by_experiment": SUMMARY_BY_EXPERIMENT_COLUMNS}


def targets():
    out = []
    for name, seed in RUNS:
        out += [
            f"results/tables/{name}/seed{seed}/{t}.{e}" for t in TABLES for e in ("csv", "parquet")
        ]
        out += [
            f"results/figures/{name}/seed{seed}/{f}.{e}" for f in FIGURES for e in ("png", "pdf")
        ]
    out += [f"results/figures/baseline/seed_ensemble.{e}" for e in ("png", "pdf")]  # 2 seeds
    out += [f"results/figures/fig6_lambda_sweep.{e}" for e in ("png", "pdf")]  # lambda 0, 30
    out += [f"results/tables/{t}.{e}" for t in SUMMARIES for e in ("csv", "parquet")]
    return out + ["results/summary.txt"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("wf")
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["seeds"] = [0]
    config["experiments"] = {"baseline": {"seeds": [0, 1]}, "lam0": {"unet": {"loss_lambda": 0.0}}}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    for name, seed in RUNS:
        pred = workdir / f"results/predictions/{name}/seed{seed}"
        pred.mkdir(parents=True)
        for i, subset in enumerate(("train", "test")):
            write_fake_predictions(pred / f"{subset}.h5", n=12, seed=seed + 10 * i)
        model = workdir / f"results/models/{name}/seed{seed}"
        model.mkdir(parents=True)
        e = np.arange(1, 4)
        pd.DataFrame(
            {
                "epoch": e,
                "lr": 1e-3,
                "train_loss": 3.0 / e,
                "val_loss": 3.5 / e,
                "train_r50": 0.8,
                "train_r150": 0.7,
                "val_r50": 0.7,
                "val_r150": 0.6,
                "samples_per_s": 10.0,
                "seconds": 1.0,
            }
        ).to_csv(model / "training.csv", index=False)
    result = snakemake_cli(workdir, *targets(), configfiles=[workdir / "config.yaml"])
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir, result


def test_every_declared_output_exists_and_is_well_formed(finished):
    workdir, _ = finished
    for path in targets():
        p = workdir / path
        assert p.is_file() and p.stat().st_size > 0, path
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000, path
        elif p.suffix == ".pdf":
            assert p.read_bytes()[:5] == b"%PDF-", path
        elif p.suffix in (".csv", ".parquet"):
            table = pd.read_csv(p) if p.suffix == ".csv" else pd.read_parquet(p)
            columns = {**TABLES, **SUMMARIES}[p.stem]
            assert list(table.columns) == columns, path
            assert len(table) > 0, path


def test_summary_has_a_row_per_run_and_model_and_is_printed(finished):
    workdir, result = finished
    table = pd.read_csv(workdir / "results/tables/summary.csv")
    assert sorted(set(zip(table.experiment, table.seed, strict=True))) == sorted(RUNS)
    assert len(table) == len(RUNS) * 5  # integrated, linear, linear_sd, unet, oracle
    assert set(table.loc[table.experiment == "lam0", "loss_lambda"]) == {0.0}
    text = (workdir / "results/summary.txt").read_text()
    assert text.count("U-Net beats integrated intensity in") == len(RUNS)
    # Seed 0 of both experiments shares the test cutouts: one headline block, both U-Nets.
    assert "seed 0: experiments baseline, lam0" in text
    assert "U-Net (residual, lam0) beats integrated intensity in" in text
    assert "U-Net beats integrated intensity in" in (workdir / "logs/summary.log").read_text()


def test_plot_setting_edit_reruns_only_plots(finished, tmp_path):
    workdir, _ = finished
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["plots"] = {**config.get("plots", {}), "dpi": 72}
    edited = workdir / "edited.yaml"
    edited.write_text(yaml.safe_dump(config))
    dry = snakemake_cli(workdir, *targets(), configfiles=[edited], args=("-n",))
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-3000:]
    counts = job_counts(dry.stdout + dry.stderr)
    per_run = {"plot_example": 3, "plot_per_cutout": 3, "plot_r_ell": 3, "plot_training": 3}
    assert counts == {**per_run, "plot_seed_ensemble": 1, "plot_lambda_sweep": 1}


def test_report_contains_every_figure_and_table(finished, tmp_path):
    workdir, _ = finished
    report = tmp_path / "report.zip"
    result = snakemake_cli(
        workdir, *targets(), configfiles=[workdir / "config.yaml"], args=("--report", str(report))
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "ERROR" not in result.stderr  # e.g. reStructuredText errors in captions
    names = zipfile.ZipFile(report).namelist()
    for figure in FIGURES:
        assert sum(n.endswith(f"/{figure}.png") for n in names) == len(RUNS), figure
    for figure in ("seed_ensemble.png", "fig6_lambda_sweep.png"):
        assert sum(n.endswith(f"/{figure}") for n in names) == 1, figure
    tables = ("per_cutout.csv", "r_ell.csv", "wins.csv", "summary.csv", "summary.txt")
    for table in (*tables, "summary_by_experiment.csv"):
        assert any(n.endswith(table) for n in names), table
    html = zipfile.ZipFile(report).read(next(n for n in names if n.endswith("report.html")))
    assert b"Fig. 4" in html and b"lam0" in html


def test_rerun_is_a_no_op(finished):
    workdir, _ = finished
    dry = snakemake_cli(workdir, *targets(), configfiles=[workdir / "config.yaml"], args=("-n",))
    assert dry.returncode == 0
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_an_east_west_experiment_adds_its_runs_and_fig7(finished):
    workdir, _ = finished
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["experiments"]["eastwest"] = {"split": "east_west"}
    edited = workdir / "eastwest.yaml"
    edited.write_text(yaml.safe_dump(config))
    dry = snakemake_cli(
        workdir, "results/figures/fig7_east_west.png", configfiles=[edited], args=("-n",)
    )
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-3000:]
    counts = job_counts(dry.stdout + dry.stderr)
    assert counts["plot_east_west"] == 1 and counts["evaluate"] == 1
    assert "results/tables/eastwest/seed0/r_ell.csv" in dry.stdout + dry.stderr
