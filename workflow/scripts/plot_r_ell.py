"""Rule plot_r_ell: Fig. 5, mean r(ell) per model for the training and test sets."""

from dustpred.figures.paper import plot_r_ell
from dustpred.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821
plot_r_ell(
    snakemake.input.r_ell,  # noqa: F821
    [snakemake.output.png, snakemake.output.pdf],  # noqa: F821
    split=snakemake.params.split,  # noqa: F821
    dpi=snakemake.params.dpi,  # noqa: F821
)
