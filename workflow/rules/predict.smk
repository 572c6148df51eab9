# Stage: predict. Integrated intensity, the scale-independent and scale-dependent linear
# models and the U-Net (its weights of unet.keep: best on validation, or the last epoch)
# applied to every cutout of the training and of the test subset. The U-Net runs on the
# experiment's device (unet.device), so the job asks for a GPU when that is cuda.


rule predict:
    input:
        unpack(gather_sources),
        shards=predict_shards,
        index=cutout_index,
        linear="results/models/{experiment}/linear.csv",
        linear_sd="results/models/{experiment}/linear_sd.csv",
        model="results/models/{experiment}/seed{seed}/unet.pt",
    output:
        "results/predictions/{experiment}/seed{seed}/{subset}.h5",
    log:
        "logs/predict/{experiment}/seed{seed}/{subset}.log",
    benchmark:
        "benchmarks/predict/{experiment}/seed{seed}/{subset}.tsv"
    conda:
        GPU_ENV
    threads: 4
    resources:
        gpu=unet_gpu("gpu"),
        gres=unet_gpu("gres"),
        gpu_model=unet_gpu("gpu_model"),
        # measured: 3.3 GB, 426 s for the 50,000 training cutouts (the linear models' FFTs on
        # one thread); now the linear models of 4 chunks at a time (~1 GB each).
        mem_mb=mem_mb(8000),
        runtime=runtime(120),
    params:
        device=of_experiment("unet", "device"),
        unet=of_experiment("unet"),
    script:
        "../scripts/predict.py"


# Polarisation: E/B maps of the test cutouts from the baselines, the oracle (synthetic sky)
# and the E- and B-map U-Nets of seed {seed} (dustpred.qu_evaluation.predict).
rule predict_qu:
    input:
        unpack(qu_model_inputs("test")),
        baselines="results/models/{experiment}/qu_baselines.json",
        unet_e="results/models/{experiment}/seed{seed}/unet_qu_e.pt",
        unet_b="results/models/{experiment}/seed{seed}/unet_qu_b.pt",
    output:
        "results/predictions_qu/{experiment}/seed{seed}/test.h5",
    log:
        "logs/predict_qu/{experiment}/seed{seed}.log",
    benchmark:
        "benchmarks/predict_qu/{experiment}/seed{seed}.tsv"
    conda:
        GPU_ENV
    threads: 4
    resources:
        gpu=unet_gpu("gpu"),
        gres=unet_gpu("gres"),
        gpu_model=unet_gpu("gpu_model"),
        mem_mb=mem_mb(4000, with_input=True),
        runtime=runtime(60),
    params:
        unet=qu_unet_settings,
    script:
        "../scripts/predict_qu.py"
