# Stage: models. The linear weights (one fit per experiment: the scale-independent and the
# scale-dependent model from the same normal equations) and the U-Net (one training run
# per experiment and seed) from the training shards; integrated intensity needs no fit.
# Training writes a resume state every epoch to results/models/{experiment}/seed{seed}/resume/
# (not an output: Snakemake leaves it in place when a job fails, so rerunning the job continues
# from the last epoch; the trainer deletes it after success). See dustpred.training.


rule fit_linear:
    input:
        shards=train_shards,
        index=cutout_index,
    output:
        linear="results/models/{experiment}/linear.csv",
        linear_sd="results/models/{experiment}/linear_sd.csv",
    log:
        "logs/fit_linear/{experiment}.log",
    benchmark:
        "benchmarks/fit_linear/{experiment}.tsv"
    conda:
        CONDA_ENV
    threads: 8
    resources:
        mem_mb=2048,
    params:
        linear=linear_params,
    script:
        "../scripts/fit_linear.py"


# gpu=1: a Slurm profile sends the job to a GPU node; with no GPU it trains on the CPU.
# Give it gpu=N (e.g. `--set-resources train_unet:gpu=2`) to train on N GPUs of one node: the
# job launches one process per GPU itself (torchrun --standalone), no extra srun tasks.
rule train_unet:
    input:
        shards=train_shards,
        index=cutout_index,
    output:
        model="results/models/{experiment}/seed{seed}/unet.pt",
        table="results/models/{experiment}/seed{seed}/training.csv",
    log:
        "logs/train_unet/{experiment}/seed{seed}.log",
    benchmark:
        "benchmarks/train_unet/{experiment}/seed{seed}.tsv"
    conda:
        CONDA_ENV
    threads: 8
    resources:
        gpu=1,
        mem_mb=train_mem_mb,
        runtime=120,
    params:
        unet=unet_params,
        seed=train_seed,
        resume=resume_state,
    script:
        "../scripts/train_unet.py"
