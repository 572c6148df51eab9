"""Rule simulate_sky: write the synthetic HI cube, dust, masks and HI-traced dust."""

from dustpred.logutil import setup_logging
from dustpred.sky.synthetic import SkySettings, simulate_sky

log = setup_logging(snakemake.log[0])  # noqa: F821
out = snakemake.output  # noqa: F821
settings = SkySettings.from_config(snakemake.params.synthetic, snakemake.params.seed)  # noqa: F821
threads = snakemake.threads  # noqa: F821
summary = simulate_sky(settings, out.hi, out.dust, out.mask, out.oracle, nthreads=threads)
log.info("summary: %s", summary)
