"""Rule summary: one table and a text summary across all experiments and seeds."""

from dustpred.evaluation import summarize
from dustpred.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821
runs = [(name, int(seed)) for name, seed in snakemake.params.runs]  # noqa: F821
summarize(
    dict(zip(runs, snakemake.input, strict=True)),  # noqa: F821
    snakemake.output.csv,  # noqa: F821
    snakemake.output.txt,  # noqa: F821
    snakemake.output.parquet,  # noqa: F821
)
