# Stage: models. The linear weights (one fit per experiment: the scale-independent and the
# scale-dependent model from the same normal equations) and the U-Net (one training run
# per experiment and seed) from the training shards; integrated intensity needs no fit.
# Training writes a resume state every epoch to results/models/{experiment}/seed{seed}/resume/
# (not an output: Snakemake leaves it in place when a job fails, so rerunning the job continues
# from the last epoch; the trainer deletes it after success). See dustpred.training.job.
# The *_crossfit rules are the same fits, on the crossfit cutouts (drawn in the test region),
# for fold 1 of the template (common.smk: folds).


rule fit_linear:
    input:
        unpack(fold_inputs(0)),
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
        # measured: 1.0 GB, 340 s on one thread (50,000 cutouts); now 8 threads.
        mem_mb=mem_mb(2048),
        runtime=runtime(60),
    params:
        linear=of_experiment("linear"),
    script:
        "../scripts/fit_linear.py"


# The U-Net on the experiment's GPUs (common.smk gpu_request: one with unet.device: cuda, as
# gpu or gres per cluster.gpu_request; none with auto or cpu; a job that asked for a GPU and
# sees no CUDA stops: dustpred.devices); gpu=N (e.g.
# `--set-resources train_unet:gpu=2`) trains on N GPUs of one node: the job launches one
# process per GPU itself (torchrun --standalone), no extra srun tasks. The prepared training
# set is held in host memory while it is moved to the GPU (about the shards' size).
rule train_unet:
    input:
        unpack(fold_inputs(0)),
    output:
        model="results/models/{experiment}/seed{seed}/unet.pt",
        table="results/models/{experiment}/seed{seed}/training.csv",
    log:
        "logs/train_unet/{experiment}/seed{seed}.log",
    benchmark:
        "benchmarks/train_unet/{experiment}/seed{seed}.tsv"
    conda:
        GPU_ENV
    threads: 8
    resources:
        gpu=unet_gpu("gpu"),
        gres=unet_gpu("gres"),
        gpu_model=unet_gpu("gpu_model"),
        cpus_per_gpu=8,
        mem_mb=mem_mb(3072, with_input=True),
        runtime=runtime(120, doubling=True),
    params:
        unet=of_experiment("unet"),
        resume=resume_state(0),
    script:
        "../scripts/train_unet.py"


use rule fit_linear as fit_linear_crossfit with:
    input:
        unpack(fold_inputs(1)),
    output:
        linear="results/models/{experiment}/crossfit/linear.csv",
        linear_sd="results/models/{experiment}/crossfit/linear_sd.csv",
    log:
        "logs/fit_linear_crossfit/{experiment}.log",
    benchmark:
        "benchmarks/fit_linear_crossfit/{experiment}.tsv"


use rule train_unet as train_unet_crossfit with:
    input:
        unpack(fold_inputs(1)),
    output:
        model="results/models/{experiment}/seed{seed}/crossfit/unet.pt",
        table="results/models/{experiment}/seed{seed}/crossfit/training.csv",
    log:
        "logs/train_unet_crossfit/{experiment}/seed{seed}.log",
    benchmark:
        "benchmarks/train_unet_crossfit/{experiment}/seed{seed}.tsv"
    params:
        unet=of_experiment("unet"),
        resume=resume_state(1),


# Polarisation: the HI-orientation baselines' fractions on the training cutouts
# (dustpred.polarisation.baselines).
rule fit_qu_baselines:
    input:
        unpack(qu_model_inputs("train")),
    output:
        "results/models/{experiment}/qu_baselines.json",
    log:
        "logs/fit_qu_baselines/{experiment}.log",
    benchmark:
        "benchmarks/fit_qu_baselines/{experiment}.tsv"
    conda:
        CONDA_ENV
    threads: 4
    resources:
        mem_mb=mem_mb(4000, with_input=True),
        runtime=runtime(60),
    params:
        fwhm_pix=config["polarisation"]["orientation_fwhm_pix"],
    script:
        "../scripts/fit_qu_baselines.py"


# Polarisation: the U-Net of Q/U is two networks of the experiment's recipe (variant
# polarisation.unet), trained with the paper's loss on the E ({mode} e) or B ({mode} b)
# maps of the training cutouts' Q/U; the B map changes sign in a mirrored augmentation.
rule train_unet_qu:
    input:
        unpack(qu_model_inputs("train")),
    output:
        model="results/models/{experiment}/seed{seed}/unet_qu_{mode}.pt",
        table="results/models/{experiment}/seed{seed}/training_qu_{mode}.csv",
    log:
        "logs/train_unet_qu/{experiment}/seed{seed}/{mode}.log",
    benchmark:
        "benchmarks/train_unet_qu/{experiment}/seed{seed}/{mode}.tsv"
    wildcard_constraints:
        mode="e|b",
    conda:
        GPU_ENV
    threads: 8
    resources:
        gpu=unet_gpu("gpu"),
        gres=unet_gpu("gres"),
        gpu_model=unet_gpu("gpu_model"),
        cpus_per_gpu=8,
        mem_mb=mem_mb(3072, with_input=True),
        runtime=runtime(120, doubling=True),
    params:
        unet=qu_unet_settings,
        resume=qu_resume_state,
    script:
        "../scripts/train_unet_qu.py"
