"""Rule plot_lambda_sweep: Fig. 6, mean test r(ell) of the U-Net for each loss weight and the
two loss terms at the last epoch."""

from dustpred.figures.comparison import plot_lambda_sweep
from dustpred.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821
plot_lambda_sweep(
    list(snakemake.input.r_ell),  # noqa: F821
    snakemake.params.lambdas,  # noqa: F821
    [snakemake.output.png, snakemake.output.pdf],  # noqa: F821
    training_paths=list(snakemake.input.training),  # noqa: F821
    dpi=snakemake.params.dpi,  # noqa: F821
)
