"""Shared fixtures: running the real Snakefile on the tiny configuration.

``snakemake_cli(workdir, *targets, configfiles=None, extra_config=None, args=())`` runs the
snakemake CLI of this environment on ``Snakefile`` in ``workdir`` (so results land in the
temporary directory, never in the repository) with ``config/config.yaml`` then
``tests/configs/tiny.yaml`` (or the given ``configfiles``), then an optional dict written to
``workdir/extra.yaml``. ``job_counts(output)`` parses the "Job stats" table of its output.
(Snakemake resolves ``configfile: config/config.yaml`` against the working directory, so
the default config is passed explicitly.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TINY_CONFIG = REPO / "tests" / "configs" / "tiny.yaml"


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
