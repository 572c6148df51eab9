# Helpers shared by all stages: input resolution, experiment settings, target lists.
# No rules here. Rules take only the config slice they use (see ARCHITECTURE.md), so an
# edit reruns only the jobs that depend on it.
from dustpred.config import resolve_experiment, velocity_label

RAW_KINDS = ("hi", "dust", "mask")
SUBSETS = ("train", "test")


def raw_input(kind):
    """Path of the raw FITS input `kind` (hi, dust, mask): a local file from config
    `data.<kind>` if set, else the synthetic or downloaded file."""
    local = config["data"][kind]
    if local:
        return local
    if config["data"]["source"] == "synthetic":
        return f"resources/synthetic/{kind}.fits"
    return download_path(kind)


def oracle_input():
    """The HI-traced part of the synthetic dust (the best any HI model can do), or []."""
    synthetic = config["data"]["source"] == "synthetic" and not config["data"]["dust"]
    return "resources/synthetic/dust_hi_traced.fits" if synthetic else []


def experiment(name):
    """Resolved settings of experiment `name` (base config + its overrides)."""
    return resolve_experiment(config, name)


def experiment_names():
    return list(config["experiments"])


def prep_of(name):
    """Preprocessing label (velocity range) that experiment `name` uses."""
    return velocity_label(experiment(name)["velocity_kms"])


def split_of(name):
    return experiment(name)["split"]


def cutout_dir(name):
    return f"results/cutouts/{prep_of(name)}/{split_of(name)}"


def seeds_of(name):
    return experiment(name)["seeds"]


def all_targets():
    """Final outputs of the workflow: what `rule all` asks for."""
    targets = []
    for name in experiment_names():
        targets.append(f"{cutout_dir(name)}/index.json")
    return targets
