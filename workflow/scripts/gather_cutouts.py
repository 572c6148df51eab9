"""Rules gather_cutouts(_crossfit): check the shards of a cutout set (each input is a subset)
and write its index.json."""

from dustpred.cutouts.extract import write_index
from dustpred.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821
write_index(
    snakemake.output[0],  # noqa: F821
    {subset: list(paths) for subset, paths in snakemake.input.items()},  # noqa: F821
    cutouts=snakemake.params.cutouts,  # noqa: F821
    seed=snakemake.params.seed,  # noqa: F821
    threads=snakemake.threads,  # noqa: F821
)
