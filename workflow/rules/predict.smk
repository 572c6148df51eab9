# Stage: predict. Integrated intensity, the scale-independent and scale-dependent linear
# models and the U-Net (its best-on-validation weights) applied to every cutout of the
# training and of the test subset.


rule predict:
    input:
        shards=predict_shards_input,
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
        CONDA_ENV
    threads: 4
    resources:
        mem_mb=8000,
    script:
        "../scripts/predict.py"
