"""Rule summary: tables and a text summary across all experiments and seeds."""

from dustpred.evaluation.resampling import ErrorSettings
from dustpred.evaluation.summary import summarize
from dustpred.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821
out = snakemake.output  # noqa: F821
runs = [(name, int(seed)) for name, seed in snakemake.params.runs]  # noqa: F821
errors = snakemake.params.errors  # noqa: F821
summarize(
    dict(zip(runs, snakemake.input, strict=True)),  # noqa: F821
    out.csv,
    out.txt,
    out.parquet,
    by_experiment=(out.by_experiment, out.by_experiment_parquet),
    settings=snakemake.params.settings,  # noqa: F821
    errors=ErrorSettings.from_config(errors["evaluation"], errors["seed"]),
)
