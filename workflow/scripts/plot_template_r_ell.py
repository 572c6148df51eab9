"""Rule plot_template_r_ell: sphere r_ell of the template and the baselines per hemisphere."""

from dustpred.figures.template import plot_template_r_ell
from dustpred.logutil import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
plot_template_r_ell(smk.input.r_ell, [smk.output.png, smk.output.pdf], dpi=smk.params.dpi)
