#!/usr/bin/env bash
# Issue 25's ablation of the training recipe (bench/ablation.yaml) through the whole DAG,
# one GPU job at a time so that each row's training time is its own:
#
#   bash bench/bench_ablation.sh [workdir] [cores] [extra.yaml ...]
#
# then prints the table of bench/ablation_table.py. Extra files are merged last (e.g. a CPU
# rehearsal: bench/paper_scale_smoke.yaml and a file with unet.device: cpu).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/dustpred-ablation}
cores=${2:-$(nproc)}
SNAKEMAKE_ARGS="--resources gpu=1" bash "$repo/bench/bench_paper_scale.sh" "$work" "$cores" \
    "$repo/bench/ablation.yaml" "${@:3}"
echo "== ablation (bench/ablation_table.py)"
python3 "$repo/bench/ablation_table.py" "$work"
