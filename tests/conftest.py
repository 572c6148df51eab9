"""Shared fixtures: running the real Snakefile on the tiny configuration.

``snakemake_cli(workdir, *targets, configfiles=None, extra_config=None, args=())`` runs the
snakemake CLI of this environment on ``Snakefile`` in ``workdir`` (so results land in the
temporary directory, never in the repository) with ``config/config.yaml`` then
``tests/configs/tiny.yaml`` (or the given ``configfiles``), then an optional dict written to
``workdir/extra.yaml``. ``job_counts(output)`` parses the "Job stats" table of its output.
(Snakemake resolves ``configfile: config/config.yaml`` against the working directory, so
the default config is passed explicitly.)

``tiny_run`` is the tiny configuration's whole DAG, run once per test session and shared by
the workflow tests that read its outputs (test_workflow_preprocess, _cutouts, _template,
_full, _reruns, and test_slurm's comparison with the Slurm run). Those tests must leave it as
it is: a test that changes files works on a copy. Under ``pytest -n N`` the first worker to
ask for it runs it and the others wait for it (a file lock in the session's directory).
``pytest_xdist_make_scheduler`` sends whole test files to one worker (several module fixtures
run a DAG of their own, once), the tiny run's readers but test_slurm together, and the
longest files first: test_slurm (its Slurm run waits on the scheduler most of its time, so
it overlaps the others' work), then the tiny run's readers, then the other DAG tests.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

# Once Slurm is installed and its daemons are stopped, importing the Slurm executor plugin
# (every snakemake start) waits 10 s for `scontrol show config` to time out. No test but the
# Slurm cluster's needs scontrol: the others see one that fails at once (the plugin then goes
# on without MinJobAge). tests/test_slurm.py's `cluster` fixture puts REAL_PATH back while
# its cluster runs.
# (Kept in the environment: `from conftest import ...` may run this module a second time.)
REAL_PATH = os.environ.setdefault("DUSTPRED_TESTS_REAL_PATH", os.environ.get("PATH", ""))
if "DUSTPRED_TESTS_NO_SCONTROL" not in os.environ:
    _stub = Path(tempfile.mkdtemp(prefix="dustpred-tests-no-scontrol-"))
    (_stub / "scontrol").write_text("#!/bin/sh\nexit 1\n")
    (_stub / "scontrol").chmod(0o755)
    os.environ["DUSTPRED_TESTS_NO_SCONTROL"] = f"{_stub}{os.pathsep}{REAL_PATH}"
os.environ["PATH"] = os.environ["DUSTPRED_TESTS_NO_SCONTROL"]
TINY_CONFIG = REPO / "tests" / "configs" / "tiny.yaml"
TINY_RUN_GROUP = "tiny_run"
# The test modules that read the shared tiny run on one worker (see the module docstring).
TINY_RUN_MODULES = {
    "test_workflow_preprocess",
    "test_workflow_cutouts",
    "test_workflow_template",
    "test_workflow_full",
    "test_workflow_reruns",
}
# Scheduled first, in this order (the longest; every other file follows in collection order).
LONGEST_FIRST = [
    "test_slurm",
    TINY_RUN_GROUP,
    "test_workflow_null",
    "test_workflow_realsky",
    "test_workflow_evaluate",
    "test_training",
    "test_workflow_module",
]


def _scope(nodeid: str) -> str:
    stem = Path(nodeid.split("::")[0]).stem
    return TINY_RUN_GROUP if stem in TINY_RUN_MODULES else stem


def pytest_collection_modifyitems(items):
    # A stable sort: LONGEST_FIRST's files first, each file's tests in their own order.
    def rank(item) -> int:
        scope = _scope(item.nodeid)
        return LONGEST_FIRST.index(scope) if scope in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)


def pytest_xdist_make_scheduler(config, log):
    """Under ``pytest -n N``: whole test files to one worker, the tiny run's readers together,
    in the collection order above. (xdist's own ``--dist loadgroup`` does not group with
    pytest 9, and its default reorders the files by their number of tests.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    config.option.loadscopereorder = False
    return ByFile(config, log)


def snakemake_cli(
    workdir: Path,
    *targets: str,
    configfiles: list | None = None,
    extra_config: dict | None = None,
    args: tuple = (),
) -> subprocess.CompletedProcess:
    """Run snakemake (2 cores) on the tiny config in ``workdir``; returns the finished process."""
    if configfiles is None:
        configfiles = [REPO / "config" / "config.yaml", TINY_CONFIG]
    configfiles = [str(path) for path in configfiles]
    if extra_config:
        extra = Path(workdir) / "extra.yaml"
        extra.write_text(yaml.safe_dump(extra_config))
        configfiles.append(str(extra))
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    cmd += ["--cores", "2", "--configfile", *configfiles, *args, "--", *targets]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def job_counts(output: str) -> dict[str, int]:
    """``{rule: number of jobs}`` from the "Job stats" table snakemake prints ({} if none)."""
    counts: dict[str, int] = {}
    lines = output.splitlines()
    if "Job stats:" not in lines:
        return counts
    for line in lines[lines.index("Job stats:") + 3 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


@dataclass(frozen=True)
class TinyRun:
    """The finished `rule all` of the tiny configuration: its directory and the process."""

    workdir: Path
    result: subprocess.CompletedProcess


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, worker_id) -> TinyRun:
    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent  # the session's directory, above each xdist worker's own
    workdir, record = root / "tiny_run", root / "tiny_run.json"
    with open(root / "tiny_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if not record.exists():
            workdir.mkdir(exist_ok=True)  # a run interrupted by a timeout starts again
            done = snakemake_cli(workdir)
            fields = {"args": done.args, "returncode": done.returncode}
            record.write_text(json.dumps({**fields, "stdout": done.stdout, "stderr": done.stderr}))
    result = subprocess.CompletedProcess(**json.loads(record.read_text()))
    assert result.returncode == 0, result.stderr[-5000:]
    return TinyRun(workdir, result)
