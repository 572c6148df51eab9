"""Rule plot_template_coverage: coverage of I_ERR per hemisphere, residual power spectra."""

from dustpred.figures.template import plot_template_coverage
from dustpred.logutil import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
plot_template_coverage(
    smk.input.coverage, smk.input.r_ell, [smk.output.png, smk.output.pdf], dpi=smk.params.dpi
)
