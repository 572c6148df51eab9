# Stage: sky -> the built-in synthetic sky (data.source: synthetic): HI cube, dust map,
# LR masks and the HI-traced dust alone (the "oracle"), in the layouts of the real products.


rule simulate_sky:
    output:
        hi="resources/synthetic/hi.fits",
        dust="resources/synthetic/dust.fits",
        mask="resources/synthetic/mask.fits",
        oracle="resources/synthetic/dust_hi_traced.fits",
    log:
        "logs/simulate_sky.log",
    benchmark:
        "benchmarks/simulate_sky.tsv"
    conda:
        CONDA_ENV
    threads: 16
    resources:
        # measured: 4.0 GB, 55 s (Nside 1024)
        mem_mb=mem_mb(6000),
        runtime=runtime(30),
    params:
        synthetic=sky_settings(),
        seed=sky_seed(config["seed"], config["synthetic"]["realisation"]),
    script:
        "../scripts/simulate_sky.py"
