"""Rule plot_example: Fig. 3, one test cutout (target, integrated, linear, U-Net)."""

from dustpred.figures.paper import plot_example
from dustpred.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821
params = snakemake.params  # noqa: F821
plot_example(
    snakemake.input.test,  # noqa: F821
    [snakemake.output.png, snakemake.output.pdf],  # noqa: F821
    index=params.example_cutout,
    cmap=params.cmap,
    dpi=params.dpi,
)
