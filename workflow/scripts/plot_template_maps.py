"""Rule plot_template_maps: target, template, residual, uncertainty (Mollweide and poles)."""

from dustpred.figures.template import plot_template_maps
from dustpred.logutil import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
plot_template_maps(
    smk.input.template,
    {"stack": smk.input.stack, "mask": smk.input.mask, "meta": smk.input.meta},
    [smk.output.png, smk.output.pdf],
    dpi=smk.params.dpi,
)
