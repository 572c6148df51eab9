# Stage: preprocess -> per velocity range {prep}: the pixel-major stack (HI channels then
# dust), the mask (1 = masked) and meta.json; oracle.npy (the HI-traced dust filtered like
# the dust) only for the synthetic sky, by its own rule so the real-data DAG never asks
# for it.


rule preprocess:
    input:
        hi=raw_input("hi"),
        dust=raw_input("dust"),
        mask=raw_input("mask"),
    output:
        stack="results/preprocess/{prep}/stack.npy",
        mask="results/preprocess/{prep}/mask.npy",
        meta="results/preprocess/{prep}/meta.json",
    log:
        "logs/preprocess/{prep}.log",
    benchmark:
        "benchmarks/preprocess/{prep}.tsv"
    conda:
        CONDA_ENV
    threads: 16
    resources:
        # The Nside-1024 stack (3.3 GB, memory-mapped) plus four transforms at a time;
        # measured: 3.3 GB, 44 s (the real Commander map at Nside 2048 needs more).
        mem_mb=mem_mb(8000),
        runtime=runtime(120),
    params:
        settings=preprocess_settings,
        inputs=input_settings(),
    script:
        "../scripts/preprocess.py"


rule preprocess_oracle:
    input:
        oracle=oracle_raw,
    output:
        "results/preprocess/{prep}/oracle.npy",
    log:
        "logs/preprocess_oracle/{prep}.log",
    benchmark:
        "benchmarks/preprocess_oracle/{prep}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=runtime(30),
    params:
        settings=filter_settings(),
    script:
        "../scripts/preprocess_oracle.py"


# Polarisation (config polarisation.enabled): Q/U in COSMO (dustpred.inputs.stokes_maps),
# low-pass filtered and resampled like the dust, as E and B.
rule preprocess_qu:
    input:
        qu=qu_raw,
    output:
        qu="results/preprocess_qu/qu.npy",
        meta="results/preprocess_qu/qu_meta.json",
    log:
        "logs/preprocess_qu/qu.log",
    benchmark:
        "benchmarks/preprocess_qu/qu.tsv"
    conda:
        CONDA_ENV
    threads: 4
    resources:
        mem_mb=mem_mb(4000),
        runtime=runtime(30),
    params:
        settings=filter_settings(),
        read=qu_read_settings(),
    script:
        "../scripts/preprocess_qu.py"


use rule preprocess_qu as preprocess_qu_oracle with:
    input:
        qu=qu_oracle_raw,
    output:
        qu="results/preprocess_qu/qu_oracle.npy",
        meta="results/preprocess_qu/qu_oracle_meta.json",
    log:
        "logs/preprocess_qu/qu_oracle.log",
    benchmark:
        "benchmarks/preprocess_qu/qu_oracle.tsv"
    params:
        settings=filter_settings(),
        read=SYNTHETIC_QU_READ,
