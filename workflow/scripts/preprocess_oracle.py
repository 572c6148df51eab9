"""Rule preprocess_oracle: the synthetic HI-traced dust filtered exactly like the dust."""

from dustpred.logutil import setup_logging
from dustpred.sky.preprocess import write_filtered_map

setup_logging(snakemake.log[0])  # noqa: F821
s = snakemake.params.settings  # noqa: F821
write_filtered_map(
    snakemake.output[0],  # noqa: F821
    snakemake.input.oracle,  # noqa: F821
    "I_ML_FULL",
    nside=s["nside"],
    ell_cutoff=s["ell_cutoff"],
    butterworth_order=s["butterworth_order"],
    map2alm_iters=s["map2alm_iters"],
    nthreads=snakemake.threads,  # noqa: F821
)
