"""Rule plot_seed_ensemble: test r(ell), r50 and r150 of every seed of one experiment."""

from dustpred.figures.comparison import plot_seed_ensemble
from dustpred.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821
plot_seed_ensemble(
    list(snakemake.input.r_ell),  # noqa: F821
    list(snakemake.input.per_cutout),  # noqa: F821
    snakemake.params.seeds,  # noqa: F821
    [snakemake.output.png, snakemake.output.pdf],  # noqa: F821
    dpi=snakemake.params.dpi,  # noqa: F821
)
