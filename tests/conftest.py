"""Shared fixtures: running the real Snakefile on the tiny configuration.

``run_snakemake(workdir, *targets, extra_config=None, args=())`` runs the snakemake CLI of
this environment on ``Snakefile`` with ``config/config.yaml`` then ``tests/configs/tiny.yaml``
(and an optional dict written to ``workdir/extra.yaml``, applied last) in ``workdir``, so
results land in the temporary directory and never in the repository.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TINY_CONFIG = REPO / "tests" / "configs" / "tiny.yaml"


def snakemake_cli(
    workdir: Path, *targets: str, extra_config: dict | None = None, args: tuple = ()
) -> subprocess.CompletedProcess:
    """Run snakemake (2 cores) on the tiny config in ``workdir``; returns the finished process."""
    configfiles = [str(REPO / "config" / "config.yaml"), str(TINY_CONFIG)]
    if extra_config:
        extra = Path(workdir) / "extra.yaml"
        extra.write_text(yaml.safe_dump(extra_config))
        configfiles.append(str(extra))
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    cmd += ["--cores", "2", "--configfile", *configfiles, *args, "--", *targets]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


@pytest.fixture
def run_snakemake():
    """The :func:`snakemake_cli` helper, as a fixture."""
    return snakemake_cli
