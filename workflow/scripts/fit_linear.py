"""Rule fit_linear: scale-independent and scale-dependent linear weights from the training
shards."""

from dustpred.cutouts.shards import check_against_index
from dustpred.logutil import setup_logging
from dustpred.models.linear import fit_linear

setup_logging(snakemake.log[0])  # noqa: F821
params = snakemake.params.linear  # noqa: F821
check_against_index(snakemake.input.shards, snakemake.input.index, threads=snakemake.threads)  # noqa: F821
fit_linear(
    list(snakemake.input.shards),  # noqa: F821
    snakemake.output.linear,  # noqa: F821
    snakemake.output.linear_sd,  # noqa: F821
    ridge=float(params["ridge"]),
    nthreads=snakemake.threads,  # noqa: F821
)
