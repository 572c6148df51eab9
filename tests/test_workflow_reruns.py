"""Rerun only what changed (issue 7): from the finished tiny run (``tiny_run``: two
experiments, baseline and paper_unet, on the same cutouts), each config edit, layered on top
of the run's config, makes `snakemake -n` list exactly the jobs that depend on it.

Expected job sets are written out by rule and wildcards, so a rule that starts taking a
wider config slice (and so reruns on unrelated edits) fails here.
"""

import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TINY_CONFIG, snakemake_cli

pytestmark = pytest.mark.workflow

PER_RUN_PLOTS = {"plot_example", "plot_per_cutout", "plot_r_ell", "plot_training"}
# The template of the first experiment (baseline) and its validation and figures.
TEMPLATE_JOBS = {
    "template",
    "template_r_ell",
    "template_coverage",
    "plot_template_maps",
    "plot_template_r_ell",
    "plot_template_coverage",
}


def planned_jobs(workdir: Path, edit: dict | None = None, text: str | None = None) -> set:
    """``{(rule, experiment, seed)}`` of the jobs a dry run would execute after an edit.

    ``edit`` (a dict) or ``text`` (YAML) is a config file layered on top of the run's own.
    """
    cfg = workdir.parent / f"{workdir.name}-edited.yaml"  # outside the shared run
    cfg.write_text(text if text is not None else yaml.safe_dump(edit or {}))
    files = [REPO / "config" / "config.yaml", TINY_CONFIG, cfg]
    result = snakemake_cli(workdir, configfiles=files, args=("-n",))
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = set()
    for block in re.split(r"\n(?=rule |localrule )", result.stdout):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if not head:
            continue
        wildcards = dict(re.findall(r"(\w+)=([^\s,]+)", _line(block, "wildcards:")))
        jobs.add((head.group(1), wildcards.get("experiment"), wildcards.get("seed")))
    return jobs


def _line(block: str, key: str) -> str:
    for line in block.splitlines():
        if line.strip().startswith(key):
            return line
    return ""


def rules(jobs: set) -> set:
    return {rule for rule, _, _ in jobs}


@pytest.fixture(scope="module")
def finished(tiny_run):
    return tiny_run.workdir


def test_finished_run_plans_nothing(finished):
    assert planned_jobs(finished) == set()


def test_comment_and_key_order_change_reruns_nothing(finished):
    reordered = (
        "# a new comment\nexperiments:\n  paper_unet: {unet: {variant: paper}}\n  baseline: {}\n"
    )
    assert planned_jobs(finished, text=reordered) == set()


def test_lambda_of_one_experiment_reruns_its_training_onward_only(finished):
    jobs = planned_jobs(finished, {"experiments": {"paper_unet": {"unet": {"loss_lambda": 5.0}}}})
    per_experiment = {(rule, exp, seed) for rule, exp, seed in jobs if exp is not None}
    run = ("paper_unet", "0")
    expected = {("train_unet", *run), ("predict", *run), ("evaluate", *run)}
    expected |= {(rule, *run) for rule in PER_RUN_PLOTS}
    assert per_experiment == expected
    assert rules(jobs) - rules(per_experiment) == {"summary", "all"}


def test_cutout_count_reruns_cutouts_onward_not_preprocessing(finished):
    base = yaml.safe_load(TINY_CONFIG.read_text())["cutouts"]
    jobs = planned_jobs(finished, {"cutouts": {"n_train": base["n_train"] + 4}})
    assert {"cutout_shard", "gather_cutouts", "fit_linear", "train_unet", "predict"} <= rules(jobs)
    assert not {"simulate_sky", "preprocess", "preprocess_oracle", "velocity_spectrum"} & rules(
        jobs
    )


def test_plot_setting_reruns_plots_only(finished):
    jobs = planned_jobs(finished, {"plots": {"dpi": 61}})
    # velocity_spectrum is the paper's Fig. 1 (it plots too).
    plots = PER_RUN_PLOTS | {"velocity_spectrum", "plot_qu"}
    plots |= {j for j in TEMPLATE_JOBS if "plot" in j}
    assert rules(jobs) - {"all"} == plots


def test_added_seed_runs_only_that_seeds_jobs_and_the_summaries(finished):
    jobs = planned_jobs(finished, {"experiments": {"baseline": {"seeds": [0, 1]}}})
    per_seed = {(rule, exp, seed) for rule, exp, seed in jobs if seed is not None}
    run = ("baseline", "1")
    expected = {("train_unet", *run), ("predict", *run), ("evaluate", *run)}
    expected |= {("train_unet_crossfit", *run)}  # the template's second model
    # The polarisation stages' U-Nets (E and B maps), predictions and tables (tiny.yaml).
    expected |= {(rule, *run) for rule in ("train_unet_qu", "predict_qu", "evaluate_qu", "plot_qu")}
    expected |= {(rule, *run) for rule in PER_RUN_PLOTS}
    assert per_seed == expected
    # Across-seed and across-experiment outputs gain a row or a curve (the template a seed),
    # and nothing else reruns.
    others = rules(jobs) - rules(per_seed)
    assert others <= {"summary", "plot_seed_ensemble", "all"} | TEMPLATE_JOBS
    assert "summary" in others


def test_error_setting_reruns_the_template_onward_only(finished):
    jobs = planned_jobs(finished, {"template": {"errors": {"bins": 7}}})
    assert rules(jobs) - {"all"} == TEMPLATE_JOBS


def test_coverage_table_setting_reruns_the_coverage_table_only(finished):
    jobs = planned_jobs(finished, {"template": {"validation": {"coverage_min_pixels": 5}}})
    assert rules(jobs) - {"all"} == {"template_coverage", "plot_template_coverage"}
