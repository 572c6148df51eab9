"""Rule train_unet_qu: the U-Net of the E or the B maps of the training cutouts' Q/U."""

from dustpred.cutouts.shards import check_against_index
from dustpred.devices import check_gpu_job, requested_gpus
from dustpred.logutil import setup_logging
from dustpred.training.job import train_unet

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
gpus = requested_gpus(smk.resources.get("gpu"), smk.resources.get("gres"))
check_gpu_job(smk.params.unet["device"], gpus, key="unet.device")
check_against_index(smk.input.shards, smk.input.index, threads=smk.threads)
mode = smk.wildcards.mode
train_unet(
    list(smk.input.shards),
    smk.output.model,
    smk.output.table,
    params=dict(smk.params.unet),
    seed=int(smk.wildcards.seed),
    resume_path=smk.params.resume,
    threads=smk.threads,
    gpus=gpus,
    log_path=smk.log[0],
    target=(smk.input.qu, mode, -1 if mode == "b" else 1),
)
