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


# --- evaluation, figures and summary (stage evaluate; helper D) ---

EXPERIMENT_PATTERN = "[A-Za-z0-9_-]+"
SEED_PATTERN = r"\d+"


def evaluation_targets():
    """Tables and figures of every experiment and seed, and the summary."""
    targets = []
    for name in experiment_names():
        for seed in seeds_of(name):
            for path in (
                "results/tables/{experiment}/seed{seed}/{table}.csv",
                "results/tables/{experiment}/seed{seed}/{table}.parquet",
            ):
                targets.extend(
                    expand(
                        path,
                        experiment=name,
                        seed=seed,
                        table=["per_cutout", "r_ell", "wins"],
                    )
                )
            targets.extend(
                expand(
                    "results/figures/{experiment}/seed{seed}/{figure}.{ext}",
                    experiment=name,
                    seed=seed,
                    figure=[
                        "fig3_example",
                        "fig4_per_cutout",
                        "fig5_r_ell",
                        "training_curves",
                    ],
                    ext=["png", "pdf"],
                )
            )
    targets.extend(
        [
            "results/tables/summary.csv",
            "results/tables/summary.parquet",
            "results/summary.txt",
        ]
    )
    return targets


def summary_runs():
    """(experiment, seed) of every run, in the order of summary_inputs()."""
    return [[name, seed] for name in experiment_names() for seed in seeds_of(name)]


def summary_inputs(wildcards):
    return [
        f"results/tables/{name}/seed{seed}/per_cutout.csv"
        for name, seed in summary_runs()
    ]


def split_of_wildcards(wildcards):
    return split_of(wildcards.experiment)
