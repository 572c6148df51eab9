"""Rule preprocess: channel selection, one-step filter + Nside change, mask -> stack."""

from dustpred.logutil import setup_logging
from dustpred.sky.preprocess import preprocess

setup_logging(snakemake.log[0])  # noqa: F821
s = snakemake.params.settings  # noqa: F821
preprocess(
    snakemake.input.hi,  # noqa: F821
    snakemake.input.dust,  # noqa: F821
    snakemake.input.mask or None,  # noqa: F821  ([] with preprocess.mask_from_dust)
    snakemake.output.stack,  # noqa: F821
    snakemake.output.mask,  # noqa: F821
    snakemake.output.meta,  # noqa: F821
    velocity_kms=s["velocity_kms"],
    nside=s["nside"],
    ell_cutoff=s["ell_cutoff"],
    butterworth_order=s["butterworth_order"],
    mask_field=s["mask_field"],
    dust_column=s["dust_column"],
    hi_column=s["hi_column"],
    mask_threshold=s["mask_threshold"],
    map2alm_iters=s["map2alm_iters"],
    mask_from_dust=s["mask_from_dust"],
    nthreads=snakemake.threads,  # noqa: F821
    **snakemake.params.inputs,  # noqa: F821
)
