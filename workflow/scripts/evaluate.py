"""Rule evaluate: r50/r150 per cutout, mean r(ell) and wins of one experiment and seed."""

import logging

from dustpred.evaluation.evaluate import evaluate
from dustpred.evaluation.resampling import ErrorSettings
from dustpred.evaluation.summary import summary_lines
from dustpred.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821
out = snakemake.output  # noqa: F821
params = snakemake.params.errors  # noqa: F821
errors = ErrorSettings.from_config(params["evaluation"], params["seed"])
tables = evaluate(
    {"train": snakemake.input.train, "test": snakemake.input.test},  # noqa: F821
    per_cutout=(out.per_cutout, out.per_cutout_parquet),
    r_ell_path=(out.r_ell, out.r_ell_parquet),
    wins=(out.wins, out.wins_parquet),
    errors=errors,
    nthreads=snakemake.threads,  # noqa: F821
)
for line in summary_lines(tables["per_cutout"], tables["wins"], errors=errors):
    logging.getLogger("dustpred.evaluation").info(line)
