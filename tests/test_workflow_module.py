"""The standard layout: workflow/Snakefile is the workflow, usable as a Snakemake module from
another folder (as `snakedeploy deploy-workflow` sets it up) with the same jobs as a run from
the repository root."""

import re
import shutil
import subprocess

import pytest
from conftest import REPO, SNAKEMAKE, TINY_CONFIG

pytestmark = pytest.mark.workflow

DEPLOYED_SNAKEFILE = """\
configfile: "config/config.yaml"


module dustpred:
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from dustpred
"""


def dry_run_jobs(cmd: list[str], cwd) -> list[str]:
    """The sorted rule, output and wildcards lines of every job of a dry run."""
    done = subprocess.run(cmd + ["-n"], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = re.findall(r"^(?:rule \w+:|    output: .*|    wildcards: .*)$", done.stdout, re.M)
    assert lines, done.stdout[-3000:]
    return sorted(lines)


def test_the_workflow_used_as_a_module_from_another_folder_has_the_same_jobs(tmp_path):
    deployed = tmp_path / "deployed"
    (deployed / "workflow").mkdir(parents=True)
    shutil.copytree(REPO / "config", deployed / "config")
    shutil.copy(TINY_CONFIG, deployed / "config" / "tiny.yaml")
    snakefile = DEPLOYED_SNAKEFILE.format(snakefile=REPO / "workflow" / "Snakefile")
    (deployed / "workflow" / "Snakefile").write_text(snakefile)
    root = tmp_path / "root"
    root.mkdir()
    configs = ["--configfile", "config/config.yaml", "config/tiny.yaml"]
    shutil.copytree(deployed / "config", root / "config")

    as_module = dry_run_jobs([SNAKEMAKE, *configs], deployed)
    from_root = dry_run_jobs([SNAKEMAKE, "-s", str(REPO / "Snakefile"), *configs], root)

    assert as_module == from_root
    assert "rule train_unet_crossfit:" in as_module and "rule template:" in as_module


def test_the_root_snakefile_and_workflow_snakefile_list_the_same_jobs(tmp_path):
    shutil.copytree(REPO / "config", tmp_path / "config")
    configs = ["--configfile", "config/config.yaml", str(TINY_CONFIG)]
    root = dry_run_jobs([SNAKEMAKE, "-s", str(REPO / "Snakefile"), *configs], tmp_path)
    inner = [SNAKEMAKE, "-s", str(REPO / "workflow" / "Snakefile"), *configs]
    assert dry_run_jobs(inner, tmp_path) == root
