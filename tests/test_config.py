"""dustpred.config: experiment resolution, the helpers that build the DAG, canonical
(order-free) config slices, and the validation that runs before any job (schema, experiment
overrides, checks across keys, YAML parse errors)."""

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import job_counts, snakemake_cli
from snakemake.utils import validate

from dustpred.config import (
    SETTING_COLUMNS,
    canonical,
    check_config,
    check_config_file,
    check_cross_keys,
    deep_merge,
    drop_disabled_experiments,
    experiment_settings,
    find_lambda_sweep,
    read_schema,
    resolve_experiment,
    validate_config,
    validate_experiments,
    velocity_label,
)
from dustpred.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "workflow" / "schemas" / "config.schema.yaml"
SCHEMA = read_schema(SCHEMA_PATH)
# Modules that building the DAG must not load: slow to import, and not needed to plan jobs.
HEAVY = ("h5py", "pandas", "torch")

BASE = {
    "preprocess": {"velocity_kms": [-64.5, 17.0]},
    "cutouts": {"split": "north_south", "pairing": "matched"},
    "seeds": [0],
    "unet": {"loss_lambda": 30.0, "widths": [8, 16]},
    "linear": {"ridge": 0.0},
    "experiments": {
        "baseline": {},
        "lam60": {"unet": {"loss_lambda": 60.0}},
        "eastwest": {"split": "east_west", "seeds": [0, 1]},
        "empty": None,
    },
}


def test_experiment_without_overrides_is_the_base():
    exp = resolve_experiment(BASE, "baseline")
    assert exp == {
        "velocity_kms": [-64.5, 17.0],
        "split": "north_south",
        "pairing": "matched",
        "seeds": [0],
        "unet": {"loss_lambda": 30.0, "widths": [8, 16]},
        "linear": {"ridge": 0.0},
    }


def test_null_experiment_is_the_base():
    assert resolve_experiment(BASE, "empty") == resolve_experiment(BASE, "baseline")


def test_nested_override_changes_only_its_key():
    exp = resolve_experiment(BASE, "lam60")
    assert exp["unet"] == {"loss_lambda": 60.0, "widths": [8, 16]}
    assert BASE["unet"]["loss_lambda"] == 30.0  # the base is not mutated


def test_top_level_overrides_replace_values():
    exp = resolve_experiment(BASE, "eastwest")
    assert exp["split"] == "east_west"
    assert exp["seeds"] == [0, 1]


def test_unknown_experiment_names_the_key():
    with pytest.raises(ConfigError, match="experiments.*'nope'"):
        resolve_experiment(BASE, "nope")


def test_unknown_override_key_names_the_experiment():
    cfg = deep_merge(BASE, {"experiments": {"bad": {"unet_lambda": 3}}})
    with pytest.raises(ConfigError, match=r"'experiments\.bad\.unet_lambda': unknown override"):
        resolve_experiment(cfg, "bad")


def test_experiment_settings_are_the_summary_setting_columns():
    settings = experiment_settings(resolve_experiment(BASE, "lam60"))
    assert list(settings) == SETTING_COLUMNS
    assert settings == {
        "split": "north_south",
        "pairing": "matched",
        "velocity_kms": "-64.5..17",
        "variant": None,
        "input_kind": None,
        "loss_lambda": 60.0,
    }


def _exp(lam, split="north_south", seeds=(0,), widths=(8, 16)):
    return {
        "split": split,
        "velocity_kms": [-64.5, 17.0],
        "seeds": list(seeds),
        "unet": {"loss_lambda": lam, "widths": list(widths)},
        "linear": {"ridge": 0.0},
    }


def test_lambda_sweep_is_the_largest_group_differing_only_in_lambda():
    resolved = {
        "baseline": _exp(30.0),
        "lam0": _exp(0.0, seeds=(0, 1)),  # a different seed list still belongs to the sweep
        "lam120": _exp(120.0),
        "eastwest": _exp(30.0, split="east_west"),
        "ew0": _exp(0.0, split="east_west"),
        "wide": _exp(60.0, widths=(16, 32)),
        "dup30": _exp(30.0),  # same lambda as baseline: baseline (first) is kept
    }
    assert find_lambda_sweep(resolved) == ["lam0", "baseline", "lam120"]


def test_no_lambda_sweep_without_two_lambdas():
    assert find_lambda_sweep({"a": _exp(30.0), "b": _exp(30.0, split="east_west")}) == []
    assert find_lambda_sweep({"a": _exp(30.0)}) == []


def heavy_modules_after(code: str) -> list[str]:
    """The names of :data:`HEAVY` in ``sys.modules`` after running ``code`` in a fresh
    interpreter with this worktree's library first on the path."""
    probe = f"{code}\nimport sys\nprint(*[m for m in {HEAVY!r} if m in sys.modules])"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "workflow"), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def workflow_imports() -> list[str]:
    """The top-level import statements of the Snakefile and the rule files (a parenthesised
    one spans lines), less snakemake's own: snakemake itself imports pandas; what matters is
    what the workflow adds."""
    files = [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
    statements, open_statement = [], None
    for line in (line for f in files for line in f.read_text().splitlines()):
        if open_statement is None and re.match(r"(import|from) ", line):
            open_statement = [line]
        elif open_statement is not None:
            open_statement.append(line)
        if open_statement is not None:
            text = "\n".join(open_statement)
            if text.count("(") == text.count(")"):
                statements.append(text)
                open_statement = None
    return [s for s in statements if not re.match(r"from snakemake\b", s)]


def test_importing_config_loads_no_heavy_module():
    assert heavy_modules_after("import dustpred.config") == []


def test_the_workflow_files_import_no_heavy_module():
    imports = workflow_imports()
    assert any("dustpred.config" in line for line in imports), imports
    assert heavy_modules_after("\n".join(imports)) == []


def test_the_import_probe_sees_heavy_modules():
    # The evaluation tables need h5py and pandas: the probe must see them, else the two
    # tests above could not fail.
    assert {"h5py", "pandas"} <= set(heavy_modules_after("import dustpred.evaluation.evaluate"))


def test_canonical_makes_repr_independent_of_key_order():
    a = {"b": 1, "a": {"y": [1, {"q": 1, "p": 2}], "x": 2}}
    b = {"a": {"x": 2, "y": [1, {"p": 2, "q": 1}]}, "b": 1}
    assert repr(a) != repr(b)
    assert repr(canonical(a)) == repr(canonical(b))


def test_velocity_label_is_compact():
    assert velocity_label([-64.5, 17.0]) == "v-64.5_17"
    assert velocity_label([-120, 120]) == "v-120_120"


def test_velocity_ranges_equal_to_six_digits_get_their_own_labels():
    close = velocity_label([-64.5000001, 17.0])
    assert close != velocity_label([-64.5, 17.0]) and close == "v-64.5000001_17"


# --- validation before any job (what the Snakefile runs) ---


def read_config(*names: str) -> dict:
    """The files ``names`` (relative to the repository) merged in order, as Snakemake does."""
    config: dict = {}
    for name in names:
        config = deep_merge(config, yaml.safe_load((ROOT / name).read_text()))
    return config


def with_defaults(config: dict) -> dict:
    """``config`` after the Snakefile's first two steps: checked, schema defaults filled in."""
    config = copy.deepcopy(config)
    validate_config(config, SCHEMA)
    validate(config, str(SCHEMA_PATH), set_default=True)
    return config


def with_experiment(override) -> dict:
    """The default config, defaults filled in, with the one experiment ``x: override``."""
    config = with_defaults(read_config("config/config.yaml"))
    config["experiments"] = {"x": override}
    return config


@pytest.mark.parametrize(
    "files",
    [
        ["config/config.yaml"],
        ["config/config.yaml", "config/paper.yaml"],
        ["config/config.yaml", "tests/configs/tiny.yaml"],
        ["config/config.yaml", "config/paper.yaml", "config/own-files.yaml"],
    ],
)
def test_shipped_configs_pass_every_check(files):
    config = with_defaults(read_config(*files))
    check_config(config, SCHEMA)  # raises on any problem


def test_default_config_trains_the_residual_and_the_paper_unet_on_the_same_cutouts():
    config = with_defaults(read_config("config/config.yaml"))
    assert drop_disabled_experiments(config) == []
    resolved = {name: resolve_experiment(config, name) for name in config["experiments"]}
    assert {name: r["unet"]["variant"] for name, r in resolved.items()} == {
        "baseline": "residual",
        "paper_unet": "paper",
    }
    shared = {(tuple(r["velocity_kms"]), r["split"]) for r in resolved.values()}
    assert len(shared) == 1  # one preprocessing, one set of cutouts


def test_an_experiment_set_to_false_is_left_out():
    config = with_defaults(read_config("config/config.yaml", "config/paper.yaml"))
    assert drop_disabled_experiments(config) == ["paper_unet"]
    assert "paper_unet" not in config["experiments"]
    variants = {resolve_experiment(config, n)["unet"]["variant"] for n in config["experiments"]}
    assert variants == {"paper"}  # paper.yaml configures no residual U-Net


def test_every_experiment_set_to_false_is_refused():
    config = with_defaults(read_config("config/config.yaml"))
    config["experiments"] = {"baseline": False, "paper_unet": False}
    with pytest.raises(ConfigError, match=r"'experiments': every experiment .* false"):
        drop_disabled_experiments(config)


def test_the_removed_scale_dependent_switch_is_refused_by_name():
    config = read_config("config/config.yaml")
    config["linear"]["scale_dependent"] = True  # both linear models are always fitted now
    with pytest.raises(ConfigError, match=r"'linear\.scale_dependent': unknown key"):
        validate_config(config, SCHEMA)


def test_base_typo_names_the_key():
    config = read_config("config/config.yaml")
    config["unet"]["loss_lamda"] = 0.0
    with pytest.raises(ConfigError, match=r"'unet\.loss_lamda': unknown key; expected one of \["):
        validate_config(config, SCHEMA)


def object_sections(schema: dict, prefix: str = "") -> list[str]:
    """Dotted keys of every object section of ``schema`` that lists its properties."""
    keys = []
    for name, sub in schema.get("properties", {}).items():
        sub = SCHEMA["$defs"]["download_spec"] if "$ref" in sub else sub
        if sub.get("type") == "object" and "properties" in sub:
            keys.append(f"{prefix}{name}")
            keys.extend(object_sections(sub, f"{prefix}{name}."))
    return keys


def test_the_sections_are_those_the_schema_lists():
    # The parametrisation below must cover the schema; a new section joins it by itself.
    assert {"data", "unet", "linear", "plots", "download.hi"} <= set(object_sections(SCHEMA))


@pytest.mark.parametrize("section", ["", *object_sections(SCHEMA)])
def test_every_section_refuses_an_unknown_key(section):
    config = read_config("config/config.yaml")
    config["download"] = {"hi": {"url": "https://example.org/hi.fits", "filename": "hi.fits"}}
    node = config
    for part in filter(None, section.split(".")):
        node = node.setdefault(part, {})
    node["typo_key"] = 1
    key = f"{section}.typo_key" if section else "typo_key"
    with pytest.raises(ConfigError, match=rf"'{re.escape(key)}': unknown key"):
        validate_config(config, SCHEMA)


def test_missing_required_key_is_named():
    config = read_config("config/config.yaml")
    del config["seed"]
    with pytest.raises(ConfigError, match=r"'seed': missing; it is required"):
        validate_config(config, SCHEMA)


def test_every_bad_key_is_listed_at_once():
    config = read_config("config/config.yaml")
    config["seeds"] = [0, 0]
    config["cutouts"]["split"] = "nope"
    with pytest.raises(ConfigError) as raised:
        validate_config(config, SCHEMA)
    assert "'cutouts.split': 'nope' is not one of" in str(raised.value)
    assert "'seeds': [0, 0] has non-unique elements" in str(raised.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"unet": {"loss_lamda": 0.0}}, r"'experiments\.x\.unet\.loss_lamda': unknown key"),
        ({"linear": {"rigde": 1.0}}, r"'experiments\.x\.linear\.rigde': unknown key"),
        ({"unet_lambda": 3}, r"'experiments\.x\.unet_lambda': unknown key"),
        ({"seeds": 3}, r"'experiments\.x\.seeds': 3 is not of type 'array'"),
        ({"seeds": [-1]}, r"'experiments\.x\.seeds\[0\]': -1 is less than the minimum of 0"),
        ({"seeds": [1, 1]}, r"'experiments\.x\.seeds': \[1, 1\] has non-unique elements"),
        ({"seeds": [0.5]}, r"'experiments\.x\.seeds\[0\]': 0\.5 is not of type 'integer'"),
        ({"velocity_kms": [-10]}, r"'experiments\.x\.velocity_kms': \[-10\] is too short"),
        ({"split": "nope"}, r"'experiments\.x\.split': 'nope' is not one of"),
        ({"unet": 3}, r"'experiments\.x\.unet': 3 is not of type 'object'"),
        ({"unet": {"dropout": 2.0}}, r"'experiments\.x\.unet\.dropout': 2\.0 is greater than"),
    ],
)
def test_bad_experiment_override_names_its_key(override, message):
    with pytest.raises(ConfigError, match=message):
        validate_experiments(with_experiment(override), SCHEMA)


def test_valid_overrides_pass_the_schema():
    validate_experiments(with_experiment({"unet": {"loss_lambda": 0.0}, "seeds": [2, 0]}), SCHEMA)


@pytest.mark.parametrize("key", ["preprocess.velocity_kms", "synthetic.velocity_kms"])
@pytest.mark.parametrize("found", [[17.0, -64.5], [5.0, 5.0]])
def test_base_velocity_range_must_increase(key, found):
    config = with_defaults(read_config("config/config.yaml"))
    section, name = key.split(".")
    config[section][name] = found
    with pytest.raises(ConfigError, match=rf"'{key}': found \[{found[0]:g}, {found[1]:g}\]; "):
        check_cross_keys(config)


def test_experiment_velocity_range_must_increase():
    config = with_experiment({"velocity_kms": [10.0, -10.0]})
    with pytest.raises(ConfigError, match=r"'experiments\.x\.velocity_kms': found \[10, -10\]"):
        check_cross_keys(config)


def test_npix_must_be_divisible_by_two_to_the_levels():
    config = with_defaults(read_config("config/config.yaml"))
    config["unet"]["widths"] = [8, 16, 32, 64]  # 4 levels: 2**4 = 16
    config["cutouts"]["npix"] = 72  # 72 = 4.5 * 16
    message = r"'cutouts\.npix' and 'unet\.widths': npix = 72 is not divisible by .* = 16"
    with pytest.raises(ConfigError, match=message):
        check_cross_keys(config)
    config["cutouts"]["npix"] = 80  # 5 * 16
    check_cross_keys(config)


def test_experiment_widths_must_divide_npix():
    config = with_experiment({"unet": {"widths": [4, 8, 16, 32, 64, 128, 256]}})  # 2**7 = 128
    assert config["cutouts"]["npix"] == 64
    message = r"'cutouts\.npix' and 'experiments\.x\.unet\.widths': npix = 64 .* = 128"
    with pytest.raises(ConfigError, match=message):
        check_cross_keys(config)


def test_yaml_parse_error_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\nunet: {loss_lambda: [1, 2\nfoo: bar\n")
    message = rf"config file {re.escape(str(bad))}, line 3, column 4: not valid YAML"
    with pytest.raises(ConfigError, match=message):
        check_config_file(bad)


def test_a_key_given_twice_is_refused_with_the_file_and_line(tmp_path):
    twice = tmp_path / "twice.yaml"
    twice.write_text("seed: 1\nunet:\n  lr: 0.1\nplots: {dpi: 60}\nunet:\n  epochs: 2\n")
    message = rf"config file {re.escape(str(twice))}, line 5, column 1: .*key 'unet' given twice"
    with pytest.raises(ConfigError, match=message):
        check_config_file(twice)


def test_a_key_given_twice_inside_an_experiment_is_refused(tmp_path):
    twice = tmp_path / "twice.yaml"
    twice.write_text("experiments:\n  x:\n    unet: {loss_lambda: 1.0, loss_lambda: 2.0}\n")
    with pytest.raises(ConfigError, match=r"line 3, .*'loss_lambda' given twice"):
        check_config_file(twice)


@pytest.mark.workflow
def test_an_overlay_with_a_key_given_twice_stops_the_workflow(tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("unet:\n  lr: 0.1\nunet:\n  epochs: 2\n")
    files = [ROOT / "config/config.yaml", ROOT / "tests/configs/tiny.yaml", overlay]
    done = snakemake_cli(tmp_path, args=("-n",), configfiles=files)
    assert done.returncode != 0
    assert f"config file {overlay}, line 3, column 1" in done.stdout + done.stderr
    assert not (tmp_path / "results").exists()


def test_valid_yaml_file_passes():
    check_config_file(ROOT / "config" / "config.yaml")


@pytest.mark.workflow
def test_bad_override_stops_the_workflow_before_any_job(tmp_path):
    extra = {"experiments": {"x": {"unet": {"loss_lamda": 0.0}}}}
    done = snakemake_cli(tmp_path, args=("-n",), extra_config=extra)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "ConfigError" in output
    assert "'experiments.x.unet.loss_lamda': unknown key" in output
    assert job_counts(output) == {}
    assert not (tmp_path / "results").exists()


@pytest.mark.workflow
def test_broken_default_config_file_is_named_by_the_workflow(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("seed: [1\n")
    done = snakemake_cli(tmp_path, args=("-n",), configfiles=[ROOT / "tests/configs/tiny.yaml"])
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "config file config/config.yaml, line 2, column 1: not valid YAML" in output


def test_sky_seed_of_realisation_0_is_the_master_seed_and_others_differ():
    from dustpred.config import sky_seed

    assert sky_seed(20190430, 0) == 20190430
    seeds = {sky_seed(20190430, k) for k in range(1, 6)}
    assert len(seeds) == 5 and 20190430 not in seeds
    assert sky_seed(20190430, 2) == sky_seed(20190430, 2)


# --- schema gaps (issue 27, item 8): each class of bad value gets its own error ---


def _refused(edit, message: str) -> None:
    config = read_config("config/config.yaml")
    edit(config)
    with pytest.raises(ConfigError, match=message):
        validate_config(config, SCHEMA)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [("cutouts", "npix", 64.0), ("unet", "epochs", 3.0), ("", "seed", 42.0)],
)
def test_a_float_where_an_integer_belongs_is_refused(section, key, value):
    name = f"{section}.{key}" if section else key

    def edit(config):
        (config.setdefault(section, {}) if section else config)[key] = value

    _refused(edit, rf"'{re.escape(name)}': {value} is not of type 'integer'")


def test_a_float_seed_in_the_seed_list_is_refused():
    _refused(lambda c: c.update(seeds=[1.0]), r"'seeds\[0\]': 1\.0 is not of type 'integer'")


def test_a_boolean_is_not_an_integer():
    _refused(lambda c: c["cutouts"].update(shards=True), r"'cutouts\.shards': True is not of type")


def test_an_experiment_name_ending_in_a_newline_is_refused():
    _refused(
        lambda c: c["experiments"].update({"run\n": {}}),
        r"'experiments\.run\\n'.*control character",
    )


def test_a_value_with_a_control_character_is_refused():
    _refused(
        lambda c: c["preprocess"].update(dust_column="I_ML_FULL\t"),
        r"'preprocess\.dust_column': 'I_ML_FULL\\t' holds a control character",
    )


@pytest.mark.parametrize("key", ["hi", "dust", "mask"])
def test_an_empty_path_is_refused_not_read_as_unset(key):
    _refused(
        lambda c: c["data"].update({key: ""}),
        rf"'data\.{key}': an empty string; expected a value or null",
    )


@pytest.mark.parametrize("nside", [100, 3, 0])
def test_a_template_nside_that_is_not_a_power_of_two_is_refused(nside):
    _refused(lambda c: c["template"].update(nside=nside), rf"'template\.nside': {nside} is not")


def test_a_seed_above_two_to_the_32_is_refused():
    _refused(
        lambda c: c.update(seed=2**63), r"'seed': \d+ is greater than the maximum of 4294967295"
    )


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("cutouts", "n_train", 50_000_000),
        ("cutouts", "shards", 100_000),
        ("unet", "widths", [64, 128000]),
        ("unet", "batch_size", 10**7),
        ("unet", "epochs", 10**6),
        ("evaluation", "n_boot", 10**9),
    ],
)
def test_a_size_above_its_upper_bound_is_refused(section, key, value):
    _refused(lambda c: c.setdefault(section, {}).update({key: value}), r"is greater than the max")


def test_the_upper_bounds_say_why_for_the_costly_sizes():
    cutouts, unet = SCHEMA["properties"]["cutouts"], SCHEMA["properties"]["unet"]
    assert "terabytes" in cutouts["properties"]["n_train"]["description"]
    assert "hundreds of GB" in unet["properties"]["widths"]["description"]


@pytest.mark.parametrize("filename", [".", "..", "sub/dir.fits", "a.fits\n"])
def test_a_download_file_name_that_is_not_a_plain_name_is_refused(filename):
    def edit(config):
        config["download"]["hi"]["filename"] = filename

    _refused(edit, r"'download\.hi\.filename'")


def test_a_plain_download_file_name_passes():
    config = read_config("config/config.yaml")
    config["download"]["hi"]["filename"] = "..hidden.fits"
    validate_config(config, SCHEMA)
