"""Rule plot_qu: the polarisation figures of one run (r_ell^EE/BB, E/B maps of a cutout)."""

from dustpred.figures.polarisation import plot_eb_example, plot_qu_r_ell
from dustpred.logutil import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
out, dpi = smk.output, smk.params.dpi
plot_qu_r_ell(smk.input.r_ell, [out.r_ell_png, out.r_ell_pdf], dpi=dpi)
plot_eb_example(
    smk.input.predictions,
    [out.maps_png, out.maps_pdf],
    dpi=dpi,
    index=smk.params.example_cutout,
)
