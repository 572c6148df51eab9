# Stage: evaluate -> tables, figures and the summary across experiments and seeds.
# Per experiment and seed: r50/r150 per cutout, mean r(ell), wins over integrated intensity
# (results/tables/...), Fig. 3-5 and training curves (results/figures/...). Each plot rule
# takes only the plot settings it uses, so a plot edit reruns plots, not the evaluation.


rule evaluate:
    input:
        train="results/predictions/{experiment}/seed{seed}/train.h5",
        test="results/predictions/{experiment}/seed{seed}/test.h5",
    output:
        per_cutout=report(
            "results/tables/{experiment}/seed{seed}/per_cutout.csv",
            caption="../report/per_cutout.rst",
            category="{experiment}",
            subcategory="seed {seed}: tables",
            labels={"table": "r50, r150 per cutout"},
        ),
        per_cutout_parquet="results/tables/{experiment}/seed{seed}/per_cutout.parquet",
        r_ell=report(
            "results/tables/{experiment}/seed{seed}/r_ell.csv",
            caption="../report/r_ell.rst",
            category="{experiment}",
            subcategory="seed {seed}: tables",
            labels={"table": "mean r(ell)"},
        ),
        r_ell_parquet="results/tables/{experiment}/seed{seed}/r_ell.parquet",
        wins=report(
            "results/tables/{experiment}/seed{seed}/wins.csv",
            caption="../report/wins.rst",
            category="{experiment}",
            subcategory="seed {seed}: tables",
            labels={"table": "wins over integrated intensity"},
        ),
        wins_parquet="results/tables/{experiment}/seed{seed}/wins.parquet",
    log:
        "logs/evaluate/{experiment}/seed{seed}.log",
    benchmark:
        "benchmarks/evaluate/{experiment}/seed{seed}.tsv"
    conda:
        CONDA_ENV
    threads: 8
    resources:
        # measured: 0.8 GB, 244 s on one thread (r(ell) of six models on 51,000 cutouts,
        # bootstrap errors); now 8 chunks at a time.
        mem_mb=mem_mb(4000),
        runtime=runtime(60),
    params:
        errors=error_settings(),
    script:
        "../scripts/evaluate.py"


rule plot_example:
    input:
        test="results/predictions/{experiment}/seed{seed}/test.h5",
    output:
        png=report(
            "results/figures/{experiment}/seed{seed}/fig3_example.png",
            caption="../report/fig3.rst",
            category="{experiment}",
            subcategory="seed {seed}: figures",
            labels={"figure": "Fig. 3: example cutout"},
        ),
        pdf="results/figures/{experiment}/seed{seed}/fig3_example.pdf",
    log:
        "logs/plot_example/{experiment}/seed{seed}.log",
    benchmark:
        "benchmarks/plot_example/{experiment}/seed{seed}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=runtime(20),
    params:
        example_cutout=config["plots"]["example_cutout"],
        cmap=config["plots"]["cmap"],
        dpi=config["plots"]["dpi"],
    script:
        "../scripts/plot_example.py"


rule plot_per_cutout:
    input:
        per_cutout="results/tables/{experiment}/seed{seed}/per_cutout.csv",
        wins="results/tables/{experiment}/seed{seed}/wins.csv",
    output:
        png=report(
            "results/figures/{experiment}/seed{seed}/fig4_per_cutout.png",
            caption="../report/fig4.rst",
            category="{experiment}",
            subcategory="seed {seed}: figures",
            labels={"figure": "Fig. 4: r50, r150 per cutout"},
        ),
        pdf="results/figures/{experiment}/seed{seed}/fig4_per_cutout.pdf",
    log:
        "logs/plot_per_cutout/{experiment}/seed{seed}.log",
    benchmark:
        "benchmarks/plot_per_cutout/{experiment}/seed{seed}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=runtime(20),
    params:
        dpi=config["plots"]["dpi"],
    script:
        "../scripts/plot_per_cutout.py"


rule plot_r_ell:
    input:
        r_ell="results/tables/{experiment}/seed{seed}/r_ell.csv",
    output:
        png=report(
            "results/figures/{experiment}/seed{seed}/fig5_r_ell.png",
            caption="../report/fig5.rst",
            category="{experiment}",
            subcategory="seed {seed}: figures",
            labels={"figure": "Fig. 5: mean r(ell)"},
        ),
        pdf="results/figures/{experiment}/seed{seed}/fig5_r_ell.pdf",
    log:
        "logs/plot_r_ell/{experiment}/seed{seed}.log",
    benchmark:
        "benchmarks/plot_r_ell/{experiment}/seed{seed}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=runtime(20),
    params:
        split=of_experiment("split"),
        dpi=config["plots"]["dpi"],
    script:
        "../scripts/plot_r_ell.py"


rule plot_training:
    input:
        training="results/models/{experiment}/seed{seed}/training.csv",
    output:
        png=report(
            "results/figures/{experiment}/seed{seed}/training_curves.png",
            caption="../report/training.rst",
            category="{experiment}",
            subcategory="seed {seed}: figures",
            labels={"figure": "training curves"},
        ),
        pdf="results/figures/{experiment}/seed{seed}/training_curves.pdf",
    log:
        "logs/plot_training/{experiment}/seed{seed}.log",
    benchmark:
        "benchmarks/plot_training/{experiment}/seed{seed}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb(1000),
        runtime=runtime(10),
    params:
        dpi=config["plots"]["dpi"],
    script:
        "../scripts/plot_training.py"


rule plot_seed_ensemble:
    input:
        unpack(seed_ensemble_inputs),
    output:
        png=report(
            "results/figures/{experiment}/seed_ensemble.png",
            caption="../report/seed_ensemble.rst",
            category="{experiment}",
            subcategory="all seeds",
            labels={"figure": "seed ensemble"},
        ),
        pdf="results/figures/{experiment}/seed_ensemble.pdf",
    log:
        "logs/plot_seed_ensemble/{experiment}.log",
    benchmark:
        "benchmarks/plot_seed_ensemble/{experiment}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=runtime(20),
    params:
        seeds=of_experiment("seeds"),
        dpi=config["plots"]["dpi"],
    script:
        "../scripts/plot_seed_ensemble.py"


rule plot_lambda_sweep:
    input:
        unpack(lambda_sweep_inputs),
    output:
        png=report(
            "results/figures/fig6_lambda_sweep.png",
            caption="../report/fig6.rst",
            category="summary",
            labels={"figure": "Fig. 6: lambda sweep"},
        ),
        pdf="results/figures/fig6_lambda_sweep.pdf",
    log:
        "logs/plot_lambda_sweep.log",
    benchmark:
        "benchmarks/plot_lambda_sweep.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=runtime(20),
    params:
        lambdas=lambda_sweep_lambdas(),
        dpi=config["plots"]["dpi"],
    script:
        "../scripts/plot_lambda_sweep.py"


rule plot_east_west:
    input:
        east_west_inputs,
    output:
        png=report(
            "results/figures/fig7_east_west.png",
            caption="../report/fig7.rst",
            category="summary",
            labels={"figure": "Fig. 7: east/west split"},
        ),
        pdf="results/figures/fig7_east_west.pdf",
    log:
        "logs/plot_east_west.log",
    benchmark:
        "benchmarks/plot_east_west.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=runtime(20),
    params:
        experiment=east_west_experiment(),
        dpi=config["plots"]["dpi"],
    script:
        "../scripts/plot_east_west.py"


rule summary:
    input:
        run_tables(runs_of(EXPERIMENTS), "per_cutout"),
    output:
        csv=report(
            "results/tables/summary.csv",
            caption="../report/summary_table.rst",
            category="summary",
            labels={"table": "all experiments and seeds"},
        ),
        parquet="results/tables/summary.parquet",
        by_experiment=report(
            "results/tables/summary_by_experiment.csv",
            caption="../report/summary_by_experiment.rst",
            category="summary",
            labels={"table": "mean and spread over seeds"},
        ),
        by_experiment_parquet="results/tables/summary_by_experiment.parquet",
        txt=report(
            "results/summary.txt",
            caption="../report/summary_text.rst",
            category="summary",
            labels={"table": "text summary"},
        ),
    log:
        "logs/summary.log",
    benchmark:
        "benchmarks/summary.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=runtime(10),
    params:
        runs=runs_of(EXPERIMENTS),
        settings=summary_settings(),
        errors=error_settings(),
    script:
        "../scripts/summary.py"


# Polarisation: r^EE / r^BB per test cutout, their means, gains and wins over the best
# HI-orientation baseline, per seed of the U-Net (dustpred.qu_evaluation.tables).
rule evaluate_qu:
    input:
        "results/predictions_qu/{experiment}/seed{seed}/test.h5",
    output:
        per_cutout="results/tables/{experiment}/seed{seed}/qu_per_cutout.csv",
        per_cutout_parquet="results/tables/{experiment}/seed{seed}/qu_per_cutout.parquet",
        r_ell="results/tables/{experiment}/seed{seed}/qu_r_ell.csv",
        r_ell_parquet="results/tables/{experiment}/seed{seed}/qu_r_ell.parquet",
        summary=report(
            "results/tables/{experiment}/seed{seed}/qu_summary.csv",
            caption="../report/qu_summary.rst",
            category="{experiment}",
            subcategory="seed {seed}: polarisation",
            labels={"table": "r^EE, r^BB: means, gains, wins"},
        ),
        summary_parquet="results/tables/{experiment}/seed{seed}/qu_summary.parquet",
        text="results/tables/{experiment}/seed{seed}/qu_summary.txt",
    log:
        "logs/evaluate_qu/{experiment}/seed{seed}.log",
    benchmark:
        "benchmarks/evaluate_qu/{experiment}/seed{seed}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb(4000),
        runtime=runtime(60),
    params:
        settings=qu_evaluation_settings,
    script:
        "../scripts/evaluate_qu.py"


rule plot_qu:
    input:
        r_ell="results/tables/{experiment}/seed{seed}/qu_r_ell.csv",
        predictions="results/predictions_qu/{experiment}/seed{seed}/test.h5",
    output:
        r_ell_png=report(
            "results/figures/{experiment}/seed{seed}/qu_r_ell.png",
            caption="../report/qu_r_ell.rst",
            category="{experiment}",
            subcategory="seed {seed}: polarisation",
            labels={"figure": "r_ell^EE, r_ell^BB"},
        ),
        r_ell_pdf="results/figures/{experiment}/seed{seed}/qu_r_ell.pdf",
        maps_png=report(
            "results/figures/{experiment}/seed{seed}/qu_eb_maps.png",
            caption="../report/qu_eb_maps.rst",
            category="{experiment}",
            subcategory="seed {seed}: polarisation",
            labels={"figure": "E and B maps of a test cutout"},
        ),
        maps_pdf="results/figures/{experiment}/seed{seed}/qu_eb_maps.pdf",
    log:
        "logs/plot_qu/{experiment}/seed{seed}.log",
    benchmark:
        "benchmarks/plot_qu/{experiment}/seed{seed}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=runtime(20),
    params:
        dpi=config["plots"]["dpi"],
        example_cutout=config["plots"]["example_cutout"],
    script:
        "../scripts/plot_qu.py"
