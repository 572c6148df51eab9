"""Rules ``predict``, ``evaluate`` and ``summary`` (``predict.smk``, ``evaluate.smk``).

- ``predict``       every model applied to the shards: prediction files (rule ``predict``)
- ``tables``        the tables' vocabulary: model names and labels, columns, CSV/Parquet I/O
- ``resampling``    block bootstrap/jackknife errors over sky regions, win fractions
- ``evaluate``      r50/r150 per cutout, mean r(ell), wins (rule ``evaluate``)
- ``summary``       summaries across experiments, seeds and skies (rule ``summary``)
- ``realisations``  ``make realisations``: the workflow on several synthetic skies
"""
