# Stage: cutouts. K scatter jobs each draw, project and write shard i of the training and of
# the test subset (HDF5); a gather job checks them and writes the index. With template
# cross-fitting, the *_crossfit rules do the same for the cross-fit models' training set
# (subset crossfit: the training set's count and rules, drawn in the test region). Fig. 1 (HI spectrum of
# random unmasked pointings) comes from the raw cube. See dustpred.cutouts.extract (the stage),
# dustpred.cutouts.shards (the file format), dustpred.cutouts.sampling.


scattergather:
    cutouts=config["cutouts"]["shards"],


rule cutout_shard:
    input:
        unpack(shard_inputs),
    output:
        train="results/cutouts/{prep}/{split}/train/shard-{scatteritem}.h5",
        test="results/cutouts/{prep}/{split}/test/shard-{scatteritem}.h5",
    log:
        "logs/cutouts/{prep}/{split}/shard-{scatteritem}.log",
    benchmark:
        "benchmarks/cutout_shard/{prep}/{split}/shard-{scatteritem}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        # The memory-mapped stack plus chunk buffers.
        mem_mb=mem_mb(1024, with_input=True),
        runtime=runtime(60),
    params:
        cutouts=cutout_settings,
        seed=config["seed"],
    script:
        "../scripts/cutouts.py"


rule gather_cutouts:
    input:
        train=gather.cutouts(
            "results/cutouts/{{prep}}/{{split}}/train/shard-{scatteritem}.h5"
        ),
        test=gather.cutouts(
            "results/cutouts/{{prep}}/{{split}}/test/shard-{scatteritem}.h5"
        ),
    output:
        "results/cutouts/{prep}/{split}/index.json",
    log:
        "logs/cutouts/{prep}/{split}/gather.log",
    benchmark:
        "benchmarks/gather_cutouts/{prep}/{split}.tsv"
    conda:
        CONDA_ENV
    threads: 4
    resources:
        mem_mb=mem_mb(2000),
        runtime=runtime(30),
    params:
        cutouts=cutout_settings,
        seed=config["seed"],
    script:
        "../scripts/gather_cutouts.py"


use rule cutout_shard as cutout_shard_crossfit with:
    output:
        crossfit="results/cutouts/{prep}/{split}/crossfit/shard-{scatteritem}.h5",
    log:
        "logs/cutouts/{prep}/{split}/crossfit-shard-{scatteritem}.log",
    benchmark:
        "benchmarks/cutout_shard_crossfit/{prep}/{split}/shard-{scatteritem}.tsv"


use rule gather_cutouts as gather_cutouts_crossfit with:
    input:
        crossfit=gather.cutouts(
            "results/cutouts/{{prep}}/{{split}}/crossfit/shard-{scatteritem}.h5"
        ),
    output:
        "results/cutouts/{prep}/{split}/crossfit/index.json",
    log:
        "logs/cutouts/{prep}/{split}/gather-crossfit.log",
    benchmark:
        "benchmarks/gather_cutouts_crossfit/{prep}/{split}.tsv"


rule velocity_spectrum:
    input:
        hi=raw_input("hi"),
        mask=raw_input("mask"),
    output:
        png=report(
            "results/figures/fig1_velocity_spectrum.png",
            category="Data",
            caption="../report/fig1_velocity_spectrum.rst",
        ),
        pdf="results/figures/fig1_velocity_spectrum.pdf",
        csv="results/tables/fig1_velocity_spectrum.csv",
    log:
        "logs/figures/fig1_velocity_spectrum.log",
    benchmark:
        "benchmarks/velocity_spectrum.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        # 10000 pointings read from the raw HI cube.
        mem_mb=mem_mb(4000),
        runtime=runtime(60),
    params:
        n_pointings=config["cutouts"]["spectrum_pointings"],
        velocity_kms=config["preprocess"]["velocity_kms"],
        mask_field=config["preprocess"]["mask_field"],
        hi_column=config["preprocess"]["hi_column"],
        coordsys_if_missing=config["data"]["coordsys_if_missing"],
        seed=config["seed"],
        dpi=config["plots"]["dpi"],
    script:
        "../scripts/velocity_spectrum.py"


# Polarisation: the Q/U of every cutout of a subset, rotated into the cutout frame
# (dustpred.polarisation.qu_cutouts); cutout i lines up with shard cutout i.
rule cutouts_qu:
    input:
        unpack(qu_cutout_inputs),
    output:
        "results/cutouts_qu/{experiment}/{subset}.h5",
    log:
        "logs/cutouts_qu/{experiment}/{subset}.log",
    benchmark:
        "benchmarks/cutouts_qu/{experiment}/{subset}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb(2000, with_input=True),
        runtime=runtime(30),
    script:
        "../scripts/cutouts_qu.py"
