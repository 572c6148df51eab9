"""Rule simulate_polarisation: write the synthetic dust Q/U and its HI-traced part."""

from dustpred.logutil import setup_logging
from dustpred.polarisation.sky import PolarisationSettings, write_polarised_dust
from dustpred.sky.synthetic import SkySettings

log = setup_logging(snakemake.log[0])  # noqa: F821
out = snakemake.output  # noqa: F821
params = snakemake.params  # noqa: F821
sky = SkySettings.from_config(params.synthetic, params.seed)
pol = PolarisationSettings.from_config(params.polarisation)
summary = write_polarised_dust(sky, pol, out.qu, out.oracle, nthreads=snakemake.threads)  # noqa: F821
log.info("summary: %s", summary)
