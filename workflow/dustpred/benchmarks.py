"""Summarise Snakemake's per-job ``benchmark:`` files into one table per rule.

Every rule writes ``benchmarks/<rule>/<wildcards>.tsv`` (Snakemake's format: one header line,
then one row per repeat with columns ``s`` (wall seconds), ``max_rss`` (MB), ``cpu_time``
(seconds), ...). This module reads them all and prints, per rule: the number of jobs, the
summed and the longest wall time, the largest peak resident memory and the CPU time::

    python -m dustpred.benchmarks benchmarks/          # or: --csv out.csv

It needs no Snakemake and no Make.
"""

from __future__ import annotations

import argparse
import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dustpred.errors import InputError

COLUMNS = ("rule", "jobs", "wall_s_sum", "wall_s_max", "max_rss_mb", "cpu_s_sum")


@dataclass(frozen=True)
class JobBenchmark:
    """One job's benchmark: ``rule``, wall time (s), peak RSS (MB), CPU time (s)."""

    rule: str
    path: str
    wall_s: float
    max_rss_mb: float
    cpu_s: float


def _number(value: str) -> float:
    # Snakemake writes "-" (or "NA") where psutil could not measure a value.
    try:
        return float(value)
    except ValueError:
        return float("nan")


def read_job(path: str | os.PathLike, rule: str) -> JobBenchmark:
    """Read one benchmark TSV (the last repeat, if several). Raises InputError if malformed."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or "s" not in rows[-1] or "max_rss" not in rows[-1]:
        raise InputError(
            f"{path}: found {len(rows)} row(s) with columns {list(rows[-1]) if rows else []}; "
            "expected a Snakemake benchmark TSV with columns 's' and 'max_rss'"
        )
    last = rows[-1]
    return JobBenchmark(
        rule=rule,
        path=os.fspath(path),
        wall_s=_number(last["s"]),
        max_rss_mb=_number(last["max_rss"]),
        cpu_s=_number(last.get("cpu_time", "nan")),
    )


def read_all(root: str | os.PathLike) -> list[JobBenchmark]:
    """Every ``<root>/<rule>/**/*.tsv`` and ``<root>/<rule>.tsv`` (rules without wildcards)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a directory; expected the workflow's benchmarks/ folder")
    paths = sorted(root.rglob("*.tsv"))
    jobs = [read_job(p, _rule_of(p.relative_to(root))) for p in paths]
    if not jobs:
        raise InputError(f"{root}: no *.tsv files found; expected benchmark files of a run")
    return jobs


def _rule_of(relative: Path) -> str:
    return relative.stem if len(relative.parts) == 1 else relative.parts[0]


def per_rule(jobs: Sequence[JobBenchmark]) -> list[dict[str, object]]:
    """One row per rule (keys :data:`COLUMNS`), ordered by summed wall time, longest first."""
    rules: dict[str, list[JobBenchmark]] = {}
    for job in jobs:
        rules.setdefault(job.rule, []).append(job)
    rows = [
        {
            "rule": rule,
            "jobs": len(group),
            "wall_s_sum": sum(j.wall_s for j in group),
            "wall_s_max": max(j.wall_s for j in group),
            "max_rss_mb": max(j.max_rss_mb for j in group),
            "cpu_s_sum": sum(j.cpu_s for j in group),
        }
        for rule, group in rules.items()
    ]
    return sorted(rows, key=lambda row: -float(row["wall_s_sum"]))


def format_table(rows: Sequence[dict[str, object]]) -> str:
    """A fixed-width text table of :func:`per_rule` rows."""
    lines = [
        f"{'rule':<22} {'jobs':>4} {'wall s (sum)':>12} {'wall s (max)':>12} "
        f"{'max RSS MB':>10} {'CPU s':>9}"
    ]
    for r in rows:
        lines.append(
            f"{r['rule']:<22} {r['jobs']:>4} {r['wall_s_sum']:>12.1f} {r['wall_s_max']:>12.1f} "
            f"{r['max_rss_mb']:>10.0f} {r['cpu_s_sum']:>9.1f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="benchmarks", help="benchmarks/ folder")
    parser.add_argument("--csv", help="also write the table as CSV to this path")
    args = parser.parse_args(argv)
    rows = per_rule(read_all(args.root))
    print(format_table(rows))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
