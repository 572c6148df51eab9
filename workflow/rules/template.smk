# Stage: template -> the full-sky HEALPix dust template of an experiment
# (results/template/{experiment}/dust_template.fits), its sphere r_ell table and figures.
# Cross-fitting (config template.cross_fit): a second U-Net per seed and a second linear fit,
# trained on the experiment's test subset (south or west) with the same settings, provide the
# pixels of the training region (north or east); the experiment's own models provide the
# rest. See dustpred.template, dustpred.fullsky.


rule fit_linear_crossfit:
    input:
        shards=crossfit_shards,
        index=cutout_index,
    output:
        linear="results/models/{experiment}/crossfit/linear.csv",
        linear_sd="results/models/{experiment}/crossfit/linear_sd.csv",
    log:
        "logs/fit_linear_crossfit/{experiment}.log",
    benchmark:
        "benchmarks/fit_linear_crossfit/{experiment}.tsv"
    conda:
        CONDA_ENV
    threads: 8
    resources:
        mem_mb=2048,
    params:
        linear=linear_params,
    script:
        "../scripts/fit_linear.py"


# The same training as train_unet (resources, resuming) on the test subset's cutouts.
rule train_unet_crossfit:
    input:
        shards=crossfit_shards,
        index=cutout_index,
    output:
        model="results/models/{experiment}/seed{seed}/crossfit/unet.pt",
        table="results/models/{experiment}/seed{seed}/crossfit/training.csv",
    log:
        "logs/train_unet_crossfit/{experiment}/seed{seed}.log",
    benchmark:
        "benchmarks/train_unet_crossfit/{experiment}/seed{seed}.tsv"
    conda:
        CONDA_ENV
    threads: 8
    resources:
        gpu=1,
        mem_mb=train_mem_mb,
        runtime=120,
    params:
        unet=crossfit_unet_params,
        seed=train_seed,
        resume=crossfit_resume_state,
    script:
        "../scripts/train_unet.py"


# gpu=1: U-Net inference of every tile in batches (on the CPU when no GPU is visible).
rule template:
    input:
        stack=template_stack,
        mask=template_mask,
        meta=template_meta,
        unets=template_unets,
        crossfit_unets=template_crossfit_unets,
        linears=template_linears,
        train_shards=train_shards,
        crossfit_shards=template_crossfit_shards,
        index=cutout_index,
    output:
        "results/template/{experiment}/dust_template.fits",
    log:
        "logs/template/{experiment}.log",
    benchmark:
        "benchmarks/template/{experiment}.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        gpu=1,
        mem_mb=template_mem_mb,
        runtime=60,
    params:
        settings=template_params,
    script:
        "../scripts/template.py"


rule template_r_ell:
    input:
        template="results/template/{experiment}/dust_template.fits",
        stack=template_stack,
        mask=template_mask,
        meta=template_meta,
        oracle=template_oracle,
    output:
        csv=report(
            "results/tables/{experiment}/template_r_ell.csv",
            caption="../report/template_r_ell_table.rst",
            category="{experiment}",
            subcategory="full-sky template",
            labels={"table": "sphere r(ell) of the template"},
        ),
        parquet="results/tables/{experiment}/template_r_ell.parquet",
    log:
        "logs/template_r_ell/{experiment}.log",
    benchmark:
        "benchmarks/template_r_ell/{experiment}.tsv"
    conda:
        CONDA_ENV
    threads: 8
    resources:
        mem_mb=template_mem_mb,
    params:
        settings=template_validation_params,
    script:
        "../scripts/template_r_ell.py"


rule plot_template_maps:
    input:
        template="results/template/{experiment}/dust_template.fits",
        stack=template_stack,
        mask=template_mask,
        meta=template_meta,
    output:
        png=report(
            "results/figures/{experiment}/template_maps.png",
            caption="../report/template_maps.rst",
            category="{experiment}",
            subcategory="full-sky template",
            labels={"figure": "template maps"},
        ),
        pdf="results/figures/{experiment}/template_maps.pdf",
    log:
        "logs/plot_template_maps/{experiment}.log",
    benchmark:
        "benchmarks/plot_template_maps/{experiment}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=template_mem_mb,
    params:
        dpi=config["plots"]["dpi"],
    script:
        "../scripts/plot_template_maps.py"


rule plot_template_r_ell:
    input:
        r_ell="results/tables/{experiment}/template_r_ell.csv",
    output:
        png=report(
            "results/figures/{experiment}/template_r_ell.png",
            caption="../report/template_r_ell.rst",
            category="{experiment}",
            subcategory="full-sky template",
            labels={"figure": "sphere r(ell) of the template"},
        ),
        pdf="results/figures/{experiment}/template_r_ell.pdf",
    log:
        "logs/plot_template_r_ell/{experiment}.log",
    benchmark:
        "benchmarks/plot_template_r_ell/{experiment}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=2000,
    params:
        dpi=config["plots"]["dpi"],
    script:
        "../scripts/plot_template_r_ell.py"
