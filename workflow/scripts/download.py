"""Rule download: fetch one input product (resumable, sha256-checked, atomic)."""

from dustpred.inputs.download import download
from dustpred.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821
spec = snakemake.params.spec  # noqa: F821
download(spec["url"], snakemake.output[0], sha256=spec.get("sha256"), size=spec.get("size"))  # noqa: F821
