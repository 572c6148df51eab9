"""The ablation table of bench/bench_ablation.sh: one row per experiment of bench/ablation.yaml.

    python bench/ablation_table.py WORKDIR

Rows in the order of WORKDIR/config.yaml's experiments. Reads
WORKDIR/results/tables/summary.csv (the U-Net of each experiment against integrated
intensity on the same 1,000 test cutouts, seed 0; errors from the block bootstrap over
Nside-2 regions) and WORKDIR/benchmarks/train_unet/<experiment>/seed0.tsv (the training
job's wall time), and prints a Markdown table.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import yaml


def table(workdir: Path) -> str:
    summary = pd.read_csv(workdir / "results" / "tables" / "summary.csv")
    unet = summary[summary.model == "unet"].set_index("experiment")
    integrated = summary[summary.model == "integrated"].set_index("experiment")
    lines = [
        "| row | r50 | r150 | robust r50 | gain r50 (paper's r) | gain r50 (robust r) "
        "| gain r150 | wins r50 / r150 | training s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = yaml.safe_load((workdir / "config.yaml").read_text())["experiments"]
    for name in order:
        row = unet.loc[name]
        bench = workdir / "benchmarks" / "train_unet" / name / "seed0.tsv"
        seconds = pd.read_csv(bench, sep="\t")["s"].iloc[0] if bench.exists() else float("nan")
        lines.append(
            f"| {name} | {row.r50_test:.3f} | {row.r150_test:.3f} | {row.r50_robust_test:.3f} "
            f"| {row.gain_r50:+.3f} ± {row.gain_r50_err:.3f} "
            f"| {row.gain_r50_robust:+.3f} ± {row.gain_r50_robust_err:.3f} "
            f"| {row.gain_r150:+.3f} ± {row.gain_r150_err:.3f} "
            f"| {int(row.wins_r50)} / {int(row.wins_r150)} of {int(row.n_test)} | {seconds:.0f} |"
        )
    first = integrated.iloc[0]
    lines.append(
        f"\nIntegrated intensity on the same test cutouts: r50 {first.r50_test:.3f}, "
        f"r150 {first.r150_test:.3f}, robust r50 {first.r50_robust_test:.3f}."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1])))
