"""Rule fit_qu_baselines: the HI-orientation baselines' fractions on the training cutouts."""

from dustpred.cutouts.shards import check_against_index
from dustpred.logutil import setup_logging
from dustpred.polarisation.baselines import fit_baselines

log = setup_logging(snakemake.log[0])  # noqa: F821
inp = snakemake.input  # noqa: F821
check_against_index(inp.shards, inp.index, threads=snakemake.threads)  # noqa: F821
fractions = fit_baselines(
    list(inp.shards),
    inp.qu,
    snakemake.output[0],  # noqa: F821
    fwhm_pix=snakemake.params.fwhm_pix,  # noqa: F821
    threads=snakemake.threads,  # noqa: F821
)
log.info("fitted fractions: %s", fractions)
