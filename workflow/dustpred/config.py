"""Resolve named experiments: the base configuration with per-experiment overrides.

An experiment may override ``velocity_kms``, ``split``, ``pairing`` (``cutouts.pairing``: a
shuffled-HI null test next to the real run), ``seeds`` and any key of the ``unet`` and
``linear`` sections. Preprocessing depends only on the velocity range and cutouts on it, the
split and the pairing, so experiments that share them share those jobs.

Also the helpers that read resolved experiments to build the DAG: the settings that the
summary tables list (:func:`experiment_settings`) and the lambda sweep of Fig. 6
(:func:`find_lambda_sweep`). ``workflow/rules/common.smk`` imports only this module and
:mod:`dustpred.errors`, so building the DAG loads neither h5py, pandas nor torch; keep it so.

And the validation that the Snakefile runs before any job: the base config and each
experiment's resolved settings against ``workflow/schemas/config.schema.yaml``
(:func:`validate_config`, :func:`validate_experiments`), then the checks that span keys
(:func:`check_cross_keys`). Each raises :class:`~dustpred.errors.ConfigError` naming the keys.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from dustpred.errors import ConfigError

# Each key an experiment may override, and where its base value lives in the config.
EXPERIMENT_KEY_PATHS: dict[str, tuple[str, ...]] = {
    "velocity_kms": ("preprocess", "velocity_kms"),
    "split": ("cutouts", "split"),
    "pairing": ("cutouts", "pairing"),
    "seeds": ("seeds",),
    "unet": ("unet",),
    "linear": ("linear",),
}
EXPERIMENT_KEYS = tuple(EXPERIMENT_KEY_PATHS)


def deep_merge(base: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """Return a copy of ``base`` with ``override`` merged in (nested dicts merged key by key)."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_experiment(config: dict[str, Any], name: str) -> dict[str, Any]:
    """The settings of experiment ``name``: base config values with its overrides applied.

    Returns a dict with the keys of :data:`EXPERIMENT_KEY_PATHS`.
    """
    experiments = config["experiments"]
    if name not in experiments:
        raise ConfigError(
            f"config key 'experiments': no experiment named {name!r}; "
            f"expected one of {sorted(experiments)}"
        )
    override = experiments[name] or {}
    unknown = sorted(set(override) - set(EXPERIMENT_KEYS))
    if unknown:
        keys = ", ".join(f"'experiments.{name}.{key}'" for key in unknown)
        raise ConfigError(
            f"config key {keys}: unknown override; expected keys among {list(EXPERIMENT_KEYS)}"
        )
    return deep_merge(_base_settings(config), override)


def _base_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The base config's values of the keys an experiment may override."""
    out = {}
    for key, path in EXPERIMENT_KEY_PATHS.items():
        value: Any = config
        for part in path:
            value = value[part]
        out[key] = value
    return out


# --- validation: the schema (base and each experiment) and the checks across keys ---
# Snakefile calls validate_config before Snakemake fills in the schema defaults and
# check_config after; both raise ConfigError naming every bad key, before any job runs.


def read_schema(path: str | Path) -> dict[str, Any]:
    """The config schema (YAML) at ``path`` as a dict."""
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the
    last one silently: a second ``unet:`` block would replace the first, and every key it
    lacks would fall back to the schema defaults)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    first: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in first:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"key {key!r} given twice in one mapping (first on line {first[key]})",
                key_node.start_mark,
            )
        first[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def check_config_file(path: str | Path) -> None:
    """Raise a ConfigError naming ``path``, line and column if it is not valid YAML or gives
    a key twice in one mapping.

    Snakemake's own message ("Config file is not valid JSON or YAML") names no file, and its
    loader keeps the last of two equal keys without a word.
    """
    try:
        yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(
            f"config file {path}{where}: not valid YAML ({problem}); expected a YAML mapping "
            "with each key once"
        ) from None


def _key_name(prefix: str, path: Sequence[Any]) -> str:
    """Dotted config key of a JSON path, list items as ``[i]``: ``seeds[0]``, ``unet.lr``."""
    name = prefix
    for part in path:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name = f"{name}.{part}" if name else str(part)
    return name


def schema_errors(instance: Any, schema: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every violation of the JSON ``schema`` by ``instance``, one line each, naming the key.

    Keys are dotted paths below ``prefix`` (e.g. ``experiments.x.unet.loss_lamda``); an
    unknown or missing key is named itself rather than the section that holds it. Returns
    [] when ``instance`` is valid. Defaults are not filled in.
    """
    # Imported here: the rule scripts' environment (envs/dustpred.yaml) imports this module
    # but has no jsonschema; only the Snakemake process validates.
    from jsonschema.validators import extend, validator_for

    base = validator_for(schema)
    # JSON Schema counts 64.0 as an integer; the code then gets a float where it indexes or
    # seeds with an int (a traceback late in the run). Only a YAML integer is one here.
    strict = base.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
    )
    validator = extend(base, type_checker=strict)(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.path])
    lines = []
    for error in errors:
        key = _key_name(prefix, list(error.absolute_path))
        if error.validator == "additionalProperties" and error.validator_value is False:
            known = sorted(error.schema.get("properties", {}))
            for extra in sorted(set(error.instance) - set(known)):
                lines.append(
                    f"config key '{_key_name(key, [extra])}': unknown key; expected one of {known}"
                )
        elif error.validator == "required":
            for missing in (k for k in error.validator_value if k not in error.instance):
                lines.append(f"config key '{_key_name(key, [missing])}': missing; it is required")
        else:
            lines.append(f"config key '{key or '<top level>'}': {error.message}")
    return lines


def _raise_if(problems: list[str], what: str) -> None:
    if problems:
        raise ConfigError(f"{what}:\n  " + "\n  ".join(problems))


def string_problems(instance: Any, prefix: str = "") -> list[str]:
    """Every empty string, and every string or key with a control character, one line each.

    The schema cannot say this for every string at once: a name ending in a newline passes a
    ``^...$`` pattern (``$`` matches before a final newline) and becomes part of a path; an
    empty path (``data.dust: ''``) would read as "not set" and use the synthetic sky.
    """
    problems = []

    def visit(node: Any, path: list[Any]) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if isinstance(key, str) and any(ord(c) < 32 or ord(c) == 127 for c in key):
                    problems.append(
                        f"config key {_key_name(prefix, [*path, key])!r}: the key holds a "
                        "control character (e.g. a newline or tab); expected printable text"
                    )
                visit(value, [*path, key])
        elif isinstance(node, list):
            for i, item in enumerate(node):
                visit(item, [*path, i])
        elif isinstance(node, str):
            key = _key_name(prefix, path)
            if node == "":
                problems.append(f"config key '{key}': an empty string; expected a value or null")
            elif any(ord(c) < 32 or ord(c) == 127 for c in node):
                problems.append(
                    f"config key '{key}': {node!r} holds a control character (e.g. a newline "
                    "or tab); expected printable text"
                )

    visit(instance, [])
    return problems


def validate_config(config: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Check the base ``config`` (as read, before defaults) against ``schema``, and every
    string in it (:func:`string_problems`).

    Raises
    ------
    ConfigError
        Listing every violation, each naming its key (see :func:`schema_errors`).
    """
    _raise_if(schema_errors(config, schema) + string_problems(config), "invalid configuration")


def experiment_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The schema of an experiment's resolved settings, taken from the config ``schema``.

    Each key of :data:`EXPERIMENT_KEY_PATHS` gets the schema of its base key (e.g.
    ``split`` that of ``cutouts.split``); any other key is an error.
    """
    properties = {}
    for key, path in EXPERIMENT_KEY_PATHS.items():
        sub: Mapping[str, Any] = schema
        for part in path:
            sub = sub["properties"][part]
        properties[key] = sub
    out = {"type": "object", "additionalProperties": False, "properties": properties}
    # Keep the dialect and the shared definitions that "$ref"s point into.
    out.update({k: schema[k] for k in ("$schema", "$defs") if k in schema})
    return out


def validate_experiments(config: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Check each experiment's resolved settings (base plus overrides) against ``schema``.

    ``config`` must be valid and have its defaults filled in. The base values are valid, so
    every violation comes from an override and is named ``experiments.<name>.<key>``.

    Raises
    ------
    ConfigError
        Listing every violation of every experiment.
    """
    sub = experiment_schema(schema)
    base = _base_settings(config)
    problems = []
    for name, override in config["experiments"].items():
        resolved = deep_merge(base, override if isinstance(override, dict) else {})
        problems += schema_errors(resolved, sub, prefix=f"experiments.{name}")
    _raise_if(problems, "invalid experiment overrides")


def drop_disabled_experiments(config: dict[str, Any]) -> list[str]:
    """Remove, in place, the experiments set to ``false`` in ``config["experiments"]``.

    Config files merge key by key, so an overlay (``config/paper.yaml``) cannot delete an
    experiment of the file below it (``config/config.yaml``); ``name: false`` leaves it out.
    Returns the names removed.

    Raises
    ------
    ConfigError
        If no experiment is left.
    """
    experiments = config["experiments"]
    dropped = [name for name, value in experiments.items() if value is False]
    if dropped and len(dropped) == len(experiments):
        raise ConfigError(
            f"config key 'experiments': every experiment ({dropped}) is set to false; "
            "expected at least one enabled"
        )
    for name in dropped:
        del experiments[name]
    return dropped


def check_cross_keys(config: Mapping[str, Any]) -> None:
    """The checks beyond the schema, of the base and of every experiment, in one place.

    - each velocity range (``synthetic.velocity_kms``, ``preprocess.velocity_kms``, an
      experiment's ``velocity_kms``) is increasing: min < max (km/s);
    - ``cutouts.npix`` is divisible by ``2 ** len(unet.widths)`` (the U-Net halves the
      cutout once per level), for the base and every experiment's ``unet.widths``.

    ``config`` must be valid (:func:`validate_experiments`) with its defaults filled in.

    Raises
    ------
    ConfigError
        Listing every failed check, each naming the keys involved, found and expected.
    """
    problems = []

    def velocity(key: str, value: Sequence[float]) -> None:
        if not value[0] < value[1]:
            problems.append(
                f"config key '{key}': found [{value[0]:g}, {value[1]:g}]; "
                "expected an increasing range [min, max] in km/s"
            )

    def npix(key: str, widths: Sequence[int]) -> None:
        n, divisor = config["cutouts"]["npix"], 2 ** len(widths)
        if n % divisor:
            problems.append(
                f"config keys 'cutouts.npix' and '{key}': npix = {n} is not divisible by "
                f"2**len(widths) = {divisor} ({len(widths)} U-Net levels, each halving the "
                f"cutout); expected npix a multiple of {divisor} or fewer widths"
            )

    velocity("synthetic.velocity_kms", config["synthetic"]["velocity_kms"])
    velocity("preprocess.velocity_kms", config["preprocess"]["velocity_kms"])
    npix("unet.widths", config["unet"]["widths"])
    for name, override in config["experiments"].items():
        override = override or {}
        resolved = resolve_experiment(config, name)
        if "velocity_kms" in override:
            velocity(f"experiments.{name}.velocity_kms", resolved["velocity_kms"])
        if "widths" in (override.get("unet") or {}):
            npix(f"experiments.{name}.unet.widths", resolved["unet"]["widths"])
    _raise_if(problems, "inconsistent configuration")


def check_config(config: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """:func:`validate_experiments` then :func:`check_cross_keys` (defaults filled in)."""
    validate_experiments(config, schema)
    check_cross_keys(config)


# Columns of the summary tables that describe an experiment (see dustpred.evaluation.evaluate).
SETTING_COLUMNS = ["split", "pairing", "velocity_kms", "variant", "input_kind", "loss_lambda"]


def experiment_settings(resolved: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`SETTING_COLUMNS` of one resolved experiment (see :func:`resolve_experiment`).

    ``velocity_kms`` becomes a label such as ``'-64.5..17'`` (km/s); missing keys give None
    (``'nan..nan'`` for the velocity range).
    """
    unet = resolved.get("unet", {}) or {}
    lo, hi = resolved.get("velocity_kms", (float("nan"), float("nan")))
    return {
        "split": resolved.get("split"),
        "pairing": resolved.get("pairing"),
        "velocity_kms": f"{_exact(lo)}..{_exact(hi)}",
        "variant": unet.get("variant"),
        "input_kind": unet.get("input_kind"),
        "loss_lambda": unet.get("loss_lambda"),
    }


def find_lambda_sweep(resolved: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Experiments that form a lambda sweep (the paper's Fig. 6), sorted by lambda.

    A sweep is a group of experiments whose resolved settings are equal except for
    ``unet.loss_lambda`` (and the seed list), with at least two distinct lambdas; of
    several such groups the largest wins (ties: the one whose first experiment comes first).
    Returns [] when there is none. When two experiments of the group share a lambda, the
    first one (in ``resolved`` order) is kept.
    """
    groups: dict[str, list[str]] = {}
    for name, settings in resolved.items():
        rest = {k: v for k, v in settings.items() if k != "seeds"}
        rest["unet"] = {k: v for k, v in (settings.get("unet") or {}).items() if k != "loss_lambda"}
        groups.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append(name)
    best: list[str] = []
    for names in groups.values():
        by_lambda: dict[float, str] = {}
        for name in names:
            by_lambda.setdefault(float(resolved[name]["unet"]["loss_lambda"]), name)
        if len(by_lambda) >= 2 and len(by_lambda) > len(best):
            best = [by_lambda[lam] for lam in sorted(by_lambda)]
    return best


def canonical(value: Any) -> Any:
    """``value`` with every mapping's keys sorted, recursively.

    Snakemake compares a job's params by their ``repr``; sorting keys makes that independent
    of the key order in the YAML file, so reordering a config file reruns nothing.
    """
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


def sky_seed(seed: int, realisation: int = 0) -> int:
    """Seed of synthetic-sky realisation ``realisation``: the master seed itself for 0 (the
    default sky, byte for byte), else a 32-bit draw of ``SeedSequence([seed, realisation])``
    (independent streams for every realisation)."""
    if int(realisation) == 0:
        return int(seed)
    import numpy as np  # here, so that building the DAG loads numpy only when it is needed

    return int(np.random.SeedSequence([int(seed), int(realisation)]).generate_state(1)[0])


def _exact(value: float) -> str:
    """``value`` as short as ``%g`` writes it when that reads back exactly, else in full."""
    short = f"{value:g}"
    return short if float(short) == float(value) else repr(float(value))


def velocity_label(velocity_kms: list[float]) -> str:
    """Directory label of a velocity range, e.g. ``[-64.5, 17]`` -> ``'v-64.5_17'``.

    Distinct ranges get distinct labels: ``%g`` keeps 6 significant digits, so -64.5 and
    -64.5000001 would share a preprocess folder; such a value is written in full.
    """
    lo, hi = velocity_kms
    return f"v{_exact(lo)}_{_exact(hi)}"


def schema_defaults(section: str, schema_path: str | None = None) -> dict[str, Any]:
    """The defaults of the config schema's ``section`` (e.g. ``"unet"``), in schema order.

    The schema (``workflow/schemas/config.schema.yaml``, or ``schema_path``) is the one place
    defaults are written; library callers outside Snakemake (tests, benchmarks) get them from
    here. Keys and string values are interned, as string literals in code are: ``pickle``
    writes an object once and then refers to it, so a file that pickles these values has the
    same bytes as when the defaults were literals in code. Returns a fresh dict on each call.
    """
    # Imported here so that this helper stays self-contained (and yaml is paid for on use).
    import sys
    from pathlib import Path

    import yaml

    path = schema_path or Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
    with open(path) as f:
        properties = yaml.safe_load(f)["properties"][section]["properties"]
    defaults: dict[str, Any] = {}
    for key, spec in properties.items():
        if "default" in spec:
            value = spec["default"]
            defaults[sys.intern(key)] = sys.intern(value) if isinstance(value, str) else value
    return defaults
