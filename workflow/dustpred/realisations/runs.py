"""Run the workflow on several synthetic-sky realisations and summarise the gains across them.

``python -m dustpred.realisations.runs N [--configfile A.yaml B.yaml ...] [--synthetic]
[--outdir runs] [snakemake options after --]`` runs Snakemake once per realisation
k = 0 .. N-1, each in its own working directory ``<outdir>/realisation-<k>/`` with
``synthetic.realisation: k`` layered on the given config files (realisation 0 is the
default sky, so ``<outdir>/realisation-0`` reproduces ``make run``), then writes
``<outdir>/realisations.csv`` and ``<outdir>/realisations.txt``: each model's gain over
integrated intensity, mean and sd over all (realisation, training seed) runs, beside the
mean within-sky block-bootstrap error (:func:`dustpred.realisations.spread.realisation_spread`).
``--synthetic`` also sets ``data.source: synthetic`` (for configs such as
``config/paper.yaml`` that otherwise download the real sky, of which there is one).
``--own-seeds`` gives realisation k its own cutout-sampling seed (``seed: k``) and training
seed (``seeds: [k]``), so that the runs differ in everything the block errors claim to cover;
without it only the sky differs. ``--seeds-per-sky S`` (with ``--own-seeds``) trains S seeds
on each sky instead (``seeds: [kS, ..., kS + S - 1]``), which measures the training-seed
spread that the block errors leave out. ``--jobs J`` runs J realisations at once (on one machine:
give each ``--cores`` of its share).

Separate working directories keep every path of the DAG unchanged; the cost is N full runs
(each realisation has its own sky, preprocessing, cutouts and trainings).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]


def realisation_config(
    k: int, synthetic_source: bool, own_seeds: bool = False, seeds_per_sky: int = 1
) -> dict:
    """The config layer of realisation ``k``."""
    layer: dict = {"synthetic": {"realisation": int(k)}}
    if synthetic_source:
        layer["data"] = {"source": "synthetic"}
    if own_seeds:
        first = int(k) * seeds_per_sky
        layer.update(seed=int(k), seeds=list(range(first, first + seeds_per_sky)))
    return layer


def run_realisation(
    k: int,
    outdir: Path,
    configfiles: Sequence[str | os.PathLike],
    *,
    synthetic_source: bool = False,
    own_seeds: bool = False,
    seeds_per_sky: int = 1,
    snakemake_args: Sequence[str] = (),
) -> Path:
    """Run the workflow for realisation ``k`` in ``outdir/realisation-k``; returns the path of
    its ``results/tables/summary.csv``."""
    workdir = outdir / f"realisation-{k}"
    workdir.mkdir(parents=True, exist_ok=True)
    layer = workdir / "realisation.yaml"
    config = realisation_config(k, synthetic_source, own_seeds, seeds_per_sky)
    layer.write_text(yaml.safe_dump(config))
    files = [str(Path(c).resolve()) for c in configfiles] + [str(layer.resolve())]
    # `python -m snakemake`: the environment's snakemake, wherever its script was installed.
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    cmd += ["--directory", str(workdir)]
    cmd += ["--configfile", *files, *snakemake_args]
    subprocess.run(cmd, check=True)
    return workdir / "results" / "tables" / "summary.csv"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, help="number of realisations (0 .. n-1)")
    parser.add_argument("--configfile", nargs="+", default=[str(REPO / "config/config.yaml")])
    parser.add_argument("--outdir", type=Path, default=Path("runs"))
    parser.add_argument("--synthetic", action="store_true", help="force data.source: synthetic")
    parser.add_argument("--own-seeds", action="store_true", help="seed: k and seeds: [k]")
    parser.add_argument("--seeds-per-sky", type=int, default=1, help="with --own-seeds")
    parser.add_argument("--jobs", type=int, default=1, help="realisations run at once")
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after `--` goes to snakemake; options may come before or after N.
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    if args.seeds_per_sky < 1 or (args.seeds_per_sky > 1 and not args.own_seeds):
        parser.error(f"--seeds-per-sky {args.seeds_per_sky}: expected 1, or more with --own-seeds")
    extra = argv[cut + 1 :] or ["--cores", "all"]
    from dustpred.realisations.spread import summarize_realisations

    def run(k: int) -> Path:
        return run_realisation(
            k,
            args.outdir,
            args.configfile,
            synthetic_source=args.synthetic,
            own_seeds=args.own_seeds,
            seeds_per_sky=args.seeds_per_sky,
            snakemake_args=extra,
        )

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        paths = dict(zip(range(args.n), pool.map(run, range(args.n)), strict=True))
    summarize_realisations(
        paths, args.outdir / "realisations.csv", args.outdir / "realisations.txt"
    )
    print((args.outdir / "realisations.txt").read_text(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
