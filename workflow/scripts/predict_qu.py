"""Rule predict_qu: E/B maps of the test cutouts from every polarisation model."""

from dustpred.cutouts.shards import check_against_index
from dustpred.devices import check_gpu_job, requested_gpus
from dustpred.logutil import setup_logging
from dustpred.qu_evaluation.predict import predict_qu

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
unet = smk.params.unet
check_gpu_job(
    unet["device"],
    requested_gpus(smk.resources.get("gpu"), smk.resources.get("gres")),
    key="unet.device",
)
check_against_index(smk.input.shards, smk.input.index, threads=smk.threads)
models = predict_qu(
    list(smk.input.shards),
    smk.input.qu,
    smk.input.baselines,
    smk.output[0],
    unets={"e": smk.input.unet_e, "b": smk.input.unet_b},
    unet_settings=unet,
    threads=smk.threads,
    device=unet["device"],
)
log.info("predicted the test cutouts' E/B maps: %s", models)
