"""Rule cutouts_qu: the Q/U of every cutout of one subset's shards, in the cutout frame."""

import json

from dustpred.cutouts.shards import check_against_index
from dustpred.logutil import setup_logging
from dustpred.polarisation.qu_cutouts import write_qu_cutouts

log = setup_logging(snakemake.log[0])  # noqa: F821
inp = snakemake.input  # noqa: F821
check_against_index(inp.shards, inp.index, threads=snakemake.threads)  # noqa: F821
with open(inp.meta) as f:
    unit = json.load(f)["unit"]
n = write_qu_cutouts(
    list(inp.shards),
    inp.qu,
    snakemake.output[0],  # noqa: F821
    oracle_path=inp.oracle or None,
    unit=unit,
)
log.info("%d Q/U cutouts (unit %s)", n, unit)
