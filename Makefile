# Two commands: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CORES ?= all
CONFIG ?= config/config.yaml
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: run test lint report dry-run clean realisations

# Create .venv if missing and install the pinned environment (constraints.txt is the lock file;
# torch==2.13.0 there makes pip take the CPU build instead of gigabytes of CUDA packages).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[workflow,test]"
	touch $@

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG)
	@cat results/summary.txt

# N synthetic skies (realisation 0 = `make run`'s), each a full run in runs/realisation-<k>/;
# runs/realisations.txt: each model's gain over integrated, mean and spread over skies and seeds.
N ?= 3
realisations: $(STAMP)
	$(BIN)/python -m dustpred.realisations.runs $(N) --configfile $(CONFIG) -- --cores $(CORES)

dry-run: $(STAMP)
	$(BIN)/snakemake -n --configfile $(CONFIG)

report: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG)
	$(BIN)/snakemake --configfile $(CONFIG) --report results/report.zip

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check .
	$(BIN)/snakemake --lint --configfile config/config.yaml

# Three worker processes on two cores: the Slurm test's run mostly waits on the scheduler.
# Whole test files per worker, the longest first (tests/conftest.py). OpenMP threads wait
# passively, as in the workflow's jobs (workflow/Snakefile): the workers share the cores.
test: $(STAMP) lint
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -ra -n 3 --durations 15

clean:
	rm -rf results .snakemake runs
