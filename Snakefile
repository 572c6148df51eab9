# dustpred: predict the Planck thermal-dust foreground from the HI4PI velocity cube.
# Data flow: raw FITS -> preprocessed HEALPix stack -> HDF5 cutout shards -> models
# -> predictions -> r(ell) tables -> figures and report; full-sky template. See README.md.
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

# The rule scripts and this file import the `dustpred` library from workflow/dustpred, also
# when it is not pip-installed (e.g. snakemake run from a conda base environment).
sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from dustpred.config import (
    canonical,
    check_config,
    check_config_file,
    drop_disabled_experiments,
    read_schema,
    validate_config,
)

# Snakemake's YAML parse error names no file: name it (files given with --configfile are
# parsed before this file runs; see config/README.md).
if Path("config/config.yaml").exists():
    check_config_file("config/config.yaml")


configfile: "config/config.yaml"


# Validation, before any job: the config as given (every bad key named, as a ConfigError),
# Snakemake's pass that fills in the schema defaults, then (experiments set to false left
# out) each experiment's resolved settings and the checks across keys (dustpred.config).
SCHEMA = "workflow/schemas/config.schema.yaml"
_schema = read_schema(Path(workflow.basedir) / SCHEMA)
validate_config(config, _schema)
validate(config, SCHEMA, set_default=True)
drop_disabled_experiments(config)
check_config(config, _schema)

# Sorted keys: rules compare params by repr, so key order in the YAML must not matter.
_canonical_config = canonical(config)
config.clear()
config.update(_canonical_config)


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


# One definition per wildcard, for every rule (the patterns are in common.smk).
wildcard_constraints:
    filename=download_filenames(),
    prep=prep_constraint(),
    split=SPLIT_PATTERN,
    experiment=EXPERIMENT_PATTERN,
    seed=SEED_PATTERN,
    subset=SUBSET_PATTERN,


include: "workflow/rules/sky.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/cutouts.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/template.smk"


rule all:
    default_target: True
    input:
        all_targets(),
