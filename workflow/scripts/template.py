"""Rule template: tiles -> batched inference of both folds' models -> FITS dust template."""

from dustpred.logutil import setup_logging
from dustpred.template import Geometry, TemplateSettings, build_template

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
cfg = smk.params.settings
seeds = cfg["seeds"]
unets = {(seed, 0): path for seed, path in zip(seeds, smk.input.unets, strict=True)}
if smk.input.crossfit_unets:
    unets |= {(seed, 1): path for seed, path in zip(seeds, smk.input.crossfit_unets, strict=True)}
build_template(
    {"stack": smk.input.stack, "mask": smk.input.mask, "meta": smk.input.meta},
    unets,
    list(smk.input.linears),
    [list(smk.input.train_shards), list(smk.input.crossfit_shards)],
    smk.output[0],
    geometry=Geometry(split=cfg["split"], **cfg["cutouts"]),
    settings=TemplateSettings.from_config(cfg["template"]),
    seed=cfg["seed"],
    config_slice=cfg,
    threads=smk.threads,
)
