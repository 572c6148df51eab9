"""Rule template_r_ell: sphere r_ell per hemisphere of the template and the baselines."""

from dustpred.logutil import setup_logging
from dustpred.template.sphere import write_sphere_r_ell

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
cfg = smk.params.settings
write_sphere_r_ell(
    smk.input.template,
    {"stack": smk.input.stack, "mask": smk.input.mask, "meta": smk.input.meta},
    smk.input.oracle or None,
    (smk.output.csv, smk.output.parquet),
    split=cfg["split"],
    ell_cutoff=cfg["ell_cutoff"],
    validation=cfg["validation"],
    nthreads=smk.threads,
)
