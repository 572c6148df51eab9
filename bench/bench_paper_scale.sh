#!/usr/bin/env bash
# The whole DAG at the paper's scale, measured: config/config.yaml + config/paper.yaml +
# bench/paper_scale.yaml (synthetic sky at Nside 1024, 50,000 + 1,000 cutouts, 40 epochs, the
# paper's U-Net, one experiment), run by the real Snakefile in a scratch folder. Prints the
# per-rule table (dustpred.benchmarks), the whole wall time, the peak host memory in use
# (sampled every 2 s) and the disk the run used.
#
#   bash bench/bench_paper_scale.sh [workdir] [cores] [extra.yaml ...]
#
# (defaults: /tmp/dustpred-paper-scale, all cores, nothing extra; the extra files are merged
# last, in order, e.g. bench/paper_scale_smoke.yaml for a small CPU rehearsal of the same DAG;
# the experiments are those of the last file that names any). SNAKEMAKE_ARGS adds arguments
# to the snakemake call (e.g. "--resources gpu=1": one GPU job at a time).
#
# Needs snakemake, healpy, astropy, ducc0 and torch importable by python3 (see bench/RESULTS.md
# for carrying them as wheels to a GPU machine).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/dustpred-paper-scale}
cores=${2:-$(nproc)}
extra=("${@:3}")
mkdir -p "$work"
export PYTHONUNBUFFERED=1

peak=0
sample_memory() {
    while true; do
        used=$(free -m | awk '/^Mem:/ {print $3}')
        echo "$used" >>"$work/memory_mb.txt"
        sleep 2
    done
}
sample_memory &
sampler=$!
trap 'kill $sampler 2>/dev/null || true' EXIT

# Snakemake merges config files key by key, so paper.yaml's nine experiments would survive
# a later file: write one merged config whose `experiments` is paper_scale.yaml's alone.
PYTHONPATH="$repo/workflow${PYTHONPATH:+:$PYTHONPATH}" python3 - "$repo" "$work/config.yaml" "${extra[@]}" <<'PY'
import sys

import yaml

from dustpred.config import deep_merge

repo, out, *extra = sys.argv[1:]
files = [f"{repo}/config/config.yaml", f"{repo}/config/paper.yaml", f"{repo}/bench/paper_scale.yaml"]
config, *overrides = [yaml.safe_load(open(path)) for path in files + extra]
for override in overrides:
    config = deep_merge(config, override)
config["experiments"] = [o for o in overrides if "experiments" in o][-1]["experiments"]
yaml.safe_dump(config, open(out, "w"), sort_keys=False)
PY

start=$(date +%s)
python3 -m snakemake -s "$repo/Snakefile" --directory "$work" --cores "$cores" \
    --configfile "$work/config.yaml" ${SNAKEMAKE_ARGS:-} >"$work/snakemake.log" 2>&1 || {
    tail -40 "$work/snakemake.log"
    exit 1
}
wall=$(($(date +%s) - start))
kill $sampler 2>/dev/null || true
peak=$(sort -n "$work/memory_mb.txt" | tail -1)

echo "== per-rule benchmarks (benchmarks/*/*.tsv)"
PYTHONPATH="$repo/workflow${PYTHONPATH:+:$PYTHONPATH}" python3 -m dustpred.benchmarks \
    "$work/benchmarks" --csv "$work/benchmarks.csv"
echo "== whole DAG: ${wall} s wall clock on ${cores} cores"
echo "== peak host memory in use: ${peak} MB (free -m, sampled every 2 s)"
echo "== disk used by the run:"
for d in "$work" "$work/resources" "$work/results/preprocess" "$work/results/cutouts"; do du -sh "$d"; done
echo "== summary"
cat "$work/results/summary.txt"
