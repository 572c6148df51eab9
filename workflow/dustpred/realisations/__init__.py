"""``make realisations``: the whole workflow on several synthetic skies, and the spread of
the results across them (above every stage: it runs the DAG).

- ``runs``    one Snakemake run per realisation, each in its own working directory
- ``spread``  each model's gain, mean and sd over skies and seeds, beside the within-sky error
"""
