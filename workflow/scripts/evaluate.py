"""Rule evaluate: r50/r150 per cutout, mean r(ell) and wins of one experiment and seed."""

from dustpred.evaluation import ErrorSettings, evaluate
from dustpred.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821
out = snakemake.output  # noqa: F821
errors = snakemake.params.errors  # noqa: F821
evaluate(
    {"train": snakemake.input.train, "test": snakemake.input.test},  # noqa: F821
    per_cutout=(out.per_cutout, out.per_cutout_parquet),
    r_ell_path=(out.r_ell, out.r_ell_parquet),
    wins=(out.wins, out.wins_parquet),
    errors=ErrorSettings.from_config(errors["evaluation"], errors["seed"]),
    nthreads=snakemake.threads,  # noqa: F821
)
