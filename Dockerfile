# dustpred's software as one image, for `snakemake --sdm apptainer` on clusters whose nodes
# have no internet (README.md, "Running in a container"). Pinned as `make` pins .venv: the
# base image by its exact Python, every package by constraints.txt (on Linux, PyPI's
# torch==2.13.0 is the CUDA build, so the image runs the GPU rules; give apptainer --nv).
# The workflow files (Snakefile, rules, scripts) come from your checkout at run time; the
# image holds the interpreter, the pinned packages and the `dustpred` library.
#
# On a machine with internet and docker:
#   docker build -t dustpred:0.1.0 .
#   apptainer build dustpred-0.1.0.sif docker-daemon://dustpred:0.1.0
# (or `docker save dustpred:0.1.0 -o dustpred.tar` and, where apptainer is,
#  `apptainer build dustpred-0.1.0.sif docker-archive://dustpred.tar`). Copy the .sif to the
# cluster and run:
#   snakemake --profile profiles/slurm --configfile config/paper.yaml --sdm apptainer \
#     --apptainer-args "--nv" --config container=/path/to/dustpred-0.1.0.sif
FROM python:3.11.7-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLBACKEND=Agg

WORKDIR /opt/dustpred
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY workflow/dustpred workflow/dustpred
# The library and the workflow tools (snakemake, the Slurm plugin, jsonschema), exactly the
# versions of constraints.txt; no test or lint tools.
RUN pip install --constraint constraints.txt ".[workflow]" \
    && python -c "import dustpred, healpy, ducc0, astropy, h5py, torch, snakemake"

LABEL org.opencontainers.image.title="dustpred" \
      org.opencontainers.image.description="Predict the Planck dust foreground from HI4PI with a U-Net" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="0.1.0"
