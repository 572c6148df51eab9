"""Rule plot_training: U-Net loss and r50/r150 by epoch."""

from dustpred.figures.paper import plot_training
from dustpred.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821
plot_training(
    snakemake.input.training,  # noqa: F821
    [snakemake.output.png, snakemake.output.pdf],  # noqa: F821
    dpi=snakemake.params.dpi,  # noqa: F821
)
