"""Rule template_coverage: coverage of the template's calibrated errors on held-out pixels."""

from dustpred.logutil import setup_logging
from dustpred.template.uncertainty import write_coverage

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
cfg = smk.params.settings
write_coverage(
    smk.input.template,
    {"stack": smk.input.stack, "mask": smk.input.mask, "meta": smk.input.meta},
    (smk.output.csv, smk.output.parquet),
    split=cfg["split"],
    validation=cfg["validation"],
    nthreads=smk.threads,
)
