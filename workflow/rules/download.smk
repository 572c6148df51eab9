# Stage: download -> the real inputs (data.source: download): HI4PI, Planck Commander dust
# and the Planck LR mask, streamed to resources/download/, resumable and sha256-checked.


rule download:
    output:
        "resources/download/{filename}",
    log:
        "logs/download/{filename}.log",
    benchmark:
        "benchmarks/download/{filename}.tsv"
    retries: 2
    conda:
        CONDA_ENV
    threads: 1
    resources:
        downloads=1,
        mem_mb=mem_mb(1000),
        # Streams one file; the HI4PI cube is ~35 GB, so allow for a slow link.
        runtime=runtime(480),
    params:
        spec=download_spec,
    script:
        "../scripts/download.py"
