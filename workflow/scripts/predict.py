"""Rule predict: integrated, linear (both) and U-Net (best weights) maps for one subset."""

from dustpred.cutouts.shards import check_against_index
from dustpred.devices import check_gpu_job, requested_gpus
from dustpred.evaluation.predict import predict_shards
from dustpred.logutil import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
gpus = requested_gpus(smk.resources.get("gpu"), smk.resources.get("gres"))
check_gpu_job(smk.params.device, gpus, key="unet.device")
check_against_index(smk.input.shards, smk.input.index, threads=smk.threads)
predict_shards(
    list(smk.input.shards),
    smk.input.linear,
    smk.input.model,
    smk.output[0],
    linear_sd_csv=smk.input.linear_sd,
    threads=smk.threads,
    device=smk.params.device,
    unet_settings=smk.params.unet,
)
