"""Rule plot_east_west: Fig. 7, mean r(ell) of an east/west experiment over its seeds."""

from dustpred.figures.comparison import plot_east_west
from dustpred.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821
plot_east_west(
    list(snakemake.input),  # noqa: F821
    [snakemake.output.png, snakemake.output.pdf],  # noqa: F821
    experiment=snakemake.params.experiment,  # noqa: F821
    dpi=snakemake.params.dpi,  # noqa: F821
)
