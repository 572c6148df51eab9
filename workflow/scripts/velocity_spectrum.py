"""Rule velocity_spectrum: Fig. 1, total HI intensity per channel of random unmasked pointings."""

from dustpred.figures.spectrum import plot_velocity_spectrum
from dustpred.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821
params, out = snakemake.params, snakemake.output  # noqa: F821
plot_velocity_spectrum(
    snakemake.input.hi,  # noqa: F821
    snakemake.input.mask,  # noqa: F821
    out.png,
    out.pdf,
    out.csv,
    n_pointings=params.n_pointings,
    seed=params.seed,
    mask_field=params.mask_field,
    velocity_kms=tuple(params.velocity_kms),
    hi_column=params.hi_column,
    coordsys_if_missing=params.coordsys_if_missing,
    dpi=params.dpi,
)
