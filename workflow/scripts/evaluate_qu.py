"""Rule evaluate_qu: r^EE / r^BB per test cutout, their means, gains and wins."""

from dustpred.atomic import atomic_write
from dustpred.evaluation.resampling import ErrorSettings
from dustpred.evaluation.tables import write_table
from dustpred.logutil import setup_logging
from dustpred.polarisation.baselines import BASELINES
from dustpred.qu_evaluation.predict import read_qu_predictions
from dustpred.qu_evaluation.tables import per_cutout_qu, summary_lines, summary_qu

log = setup_logging(snakemake.log[0])  # noqa: F821
out = snakemake.output  # noqa: F821
params = snakemake.params.settings  # noqa: F821
errors = ErrorSettings.from_config(params["evaluation"], params["seed"])
data, predictions = read_qu_predictions(snakemake.input[0])  # noqa: F821
per_cutout, r_ell = per_cutout_qu(data, predictions, side_deg=params["side_deg"])
summary = summary_qu(per_cutout, list(BASELINES), errors)
write_table(per_cutout, out.per_cutout, out.per_cutout_parquet)
write_table(r_ell, out.r_ell, out.r_ell_parquet)
write_table(summary, out.summary, out.summary_parquet)
lines = summary_lines(summary, params["sky"])
atomic_write(out.text, lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
for line in lines:
    log.info(line)
