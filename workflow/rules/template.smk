# Stage: template -> the full-sky HEALPix dust template of an experiment
# (results/template/{experiment}/dust_template.fits), its sphere r_ell table and figures.
# Cross-fitting (config template.cross_fit): the models of fold 1 (a second U-Net per seed and
# a second linear fit, trained on the crossfit cutouts, n_train of them in the test region,
# south or west, by the *_crossfit rules of models.smk) provide the pixels of the training
# region (north or east);
# the experiment's own models (fold 0) provide the rest. See dustpred.template.


# U-Net inference of every tile in batches on template.device (a GPU with cuda); tiles cut
# from the memory-mapped stack, reassembly at the output Nside (~0.6 GB of full-sky arrays at
# Nside 1024).
rule template:
    input:
        unpack(template_inputs),
    output:
        "results/template/{experiment}/dust_template.fits",
    log:
        "logs/template/{experiment}.log",
    benchmark:
        "benchmarks/template/{experiment}.tsv"
    conda:
        GPU_ENV
    threads: 2
    resources:
        gpu=template_gpu("gpu"),
        gres=template_gpu("gres"),
        gpu_model=template_gpu("gpu_model"),
        cpus_per_gpu=2,
        mem_mb=mem_mb(4096, with_input=True),
        runtime=runtime(60),
    params:
        settings=template_params,
        folds=folds(),
        unet_settings=template_unet_settings,
    script:
        "../scripts/template.py"


rule template_r_ell:
    input:
        unpack(experiment_stack_and_oracle),
        template="results/template/{experiment}/dust_template.fits",
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
        # measured: 5.0 GB, 163 s on one thread (healpy, smoothing at lmax 3071); now ducc0
        # on 8 threads with the smoothing band-limited by its beam.
        mem_mb=mem_mb(4096, with_input=True),
        runtime=runtime(30),
    params:
        settings=template_validation_params,
    script:
        "../scripts/template_r_ell.py"


# The coverage of I_ERR and I_ERR_1DEG on the pixels that did not calibrate them.
rule template_coverage:
    input:
        unpack(experiment_stack),
        template="results/template/{experiment}/dust_template.fits",
    output:
        csv=report(
            "results/tables/{experiment}/template_coverage.csv",
            caption="../report/template_coverage_table.rst",
            category="{experiment}",
            subcategory="full-sky template",
            labels={"table": "coverage of the template's error"},
        ),
        parquet="results/tables/{experiment}/template_coverage.parquet",
    log:
        "logs/template_coverage/{experiment}.log",
    benchmark:
        "benchmarks/template_coverage/{experiment}.tsv"
    conda:
        CONDA_ENV
    threads: 4
    resources:
        mem_mb=mem_mb(4096, with_input=True),
        runtime=runtime(30),
    params:
        settings=template_coverage_params,
    script:
        "../scripts/template_coverage.py"


rule plot_template_maps:
    input:
        unpack(experiment_stack),
        template="results/template/{experiment}/dust_template.fits",
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
        mem_mb=mem_mb(4096, with_input=True),
        runtime=runtime(20),
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
        mem_mb=mem_mb(2000),
        runtime=runtime(10),
    params:
        dpi=config["plots"]["dpi"],
    script:
        "../scripts/plot_template_r_ell.py"


rule plot_template_coverage:
    input:
        coverage="results/tables/{experiment}/template_coverage.csv",
        r_ell="results/tables/{experiment}/template_r_ell.csv",
    output:
        png=report(
            "results/figures/{experiment}/template_coverage.png",
            caption="../report/template_coverage.rst",
            category="{experiment}",
            subcategory="full-sky template",
            labels={"figure": "coverage and residual power of the template"},
        ),
        pdf="results/figures/{experiment}/template_coverage.pdf",
    log:
        "logs/plot_template_coverage/{experiment}.log",
    benchmark:
        "benchmarks/plot_template_coverage/{experiment}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=runtime(10),
    params:
        dpi=config["plots"]["dpi"],
    script:
        "../scripts/plot_template_coverage.py"
