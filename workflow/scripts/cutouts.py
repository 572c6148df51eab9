"""Rules cutout_shard(_crossfit): scatter job i-of-K, shard i of each subset the rule outputs
(train and test; crossfit)."""

from dustpred.cutouts.extract import write_shards
from dustpred.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821
inp, out = snakemake.input, snakemake.output  # noqa: F821
write_shards(
    inp.stack,
    inp.mask,
    inp.meta,
    inp.oracle or None,
    dict(out.items()),
    cutouts=snakemake.params.cutouts,  # noqa: F821
    seed=snakemake.params.seed,  # noqa: F821
    scatteritem=snakemake.wildcards.scatteritem,  # noqa: F821
)
