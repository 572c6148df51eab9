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


# Polarised dust (config polarisation.enabled): Q/U of the same sky and their HI-traced part,
# in the layout of Planck's polarised products (Q_STOKES, U_STOKES, POLCCONV = 'COSMO').
rule simulate_polarisation:
    output:
        qu="resources/synthetic/dust_qu.fits",
        oracle="resources/synthetic/dust_qu_hi_traced.fits",
    log:
        "logs/simulate_polarisation.log",
    benchmark:
        "benchmarks/simulate_polarisation.tsv"
    conda:
        CONDA_ENV
    threads: 16
    resources:
        # The intensity sky's components plus four spin-1 syntheses.
        mem_mb=mem_mb(8000),
        runtime=runtime(30),
    params:
        synthetic=sky_settings(),
        polarisation=config["synthetic"]["polarisation"],
        seed=sky_seed(config["seed"], config["synthetic"]["realisation"]),
    script:
        "../scripts/simulate_polarisation.py"
