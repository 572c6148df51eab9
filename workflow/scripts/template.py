"""Rule template: tiles -> batched inference of every fold's models -> FITS dust template."""

from dustpred.cutouts.shards import check_against_index
from dustpred.devices import check_gpu_job, requested_gpus
from dustpred.logutil import setup_logging
from dustpred.template.build import Fold, Geometry, TemplateSettings, build_template
from dustpred.template.fitsfile import git_commit
from dustpred.template.uncertainty import ErrorSettings

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
cfg = smk.params.settings
gpus = requested_gpus(smk.resources.get("gpu"), smk.resources.get("gres"))
check_gpu_job(cfg["template"]["device"], gpus, key="template.device")
for k in smk.params.folds:
    check_against_index(smk.input[f"shards_{k}"], smk.input[f"index_{k}"], threads=smk.threads)
folds = [
    Fold(
        unets=dict(zip(cfg["seeds"], smk.input[f"unets_{k}"], strict=True)),
        linear=smk.input[f"linear_{k}"],
        shards=list(smk.input[f"shards_{k}"]),
        unet_settings=smk.params.unet_settings[k],
    )
    for k in smk.params.folds
]
build_template(
    {"stack": smk.input.stack, "mask": smk.input.mask, "meta": smk.input.meta},
    folds,
    smk.output[0],
    geometry=Geometry(split=cfg["split"], **cfg["cutouts"]),
    settings=TemplateSettings.from_config(cfg["template"]),
    errors=ErrorSettings(**cfg["template"]["errors"]),
    seed=cfg["seed"],
    config_slice=cfg,
    threads=smk.threads,
    commit=git_commit(smk.scriptdir),
)
