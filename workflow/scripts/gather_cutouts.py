"""Rule gather_cutouts: check the shards of a cutout set and write its index.json."""

from dustpred.cutouts.extract import write_index
from dustpred.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821
write_index(
    snakemake.output[0],  # noqa: F821
    snakemake.input.train,  # noqa: F821
    snakemake.input.test,  # noqa: F821
    cutouts=snakemake.params.cutouts,  # noqa: F821
    seed=snakemake.params.seed,  # noqa: F821
    threads=snakemake.threads,  # noqa: F821
)
