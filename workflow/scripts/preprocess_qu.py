"""Rules preprocess_qu and preprocess_qu_oracle: a Q/U table in COSMO, filtered like the dust."""

from dustpred.logutil import setup_logging
from dustpred.polarisation.qu_cutouts import write_filtered_qu
from dustpred.sky.stack import write_json_atomic

log = setup_logging(snakemake.log[0])  # noqa: F821
s = snakemake.params.settings  # noqa: F821
read = snakemake.params.read  # noqa: F821
unit = write_filtered_qu(
    snakemake.output.qu,  # noqa: F821
    snakemake.input.qu,  # noqa: F821
    nside=s["nside"],
    ell_cutoff=s["ell_cutoff"],
    butterworth_order=s["butterworth_order"],
    map2alm_iters=s["map2alm_iters"],
    nthreads=snakemake.threads,  # noqa: F821
    **read,
)
write_json_atomic(snakemake.output.meta, {"unit": unit, "source": str(snakemake.input.qu), **read})  # noqa: F821
log.info("Q/U filtered to Nside %d, unit %s", s["nside"], unit)
