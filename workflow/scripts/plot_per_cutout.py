"""Rule plot_per_cutout: Fig. 4, per-cutout r50 and r150 against integrated intensity."""

from dustpred.figures.paper import plot_per_cutout
from dustpred.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821
plot_per_cutout(
    snakemake.input.per_cutout,  # noqa: F821
    snakemake.input.wins,  # noqa: F821
    [snakemake.output.png, snakemake.output.pdf],  # noqa: F821
    dpi=snakemake.params.dpi,  # noqa: F821
)
