"""Resolve named experiments: the base configuration with per-experiment overrides.

An experiment may override ``velocity_kms``, ``split``, ``seeds`` and any key of the
``unet`` and ``linear`` sections. Preprocessing and cutouts depend only on the velocity
range and the split, so experiments that share them share those jobs.

Also the helpers that read resolved experiments to build the DAG: the settings that the
summary tables list (:func:`experiment_settings`) and the lambda sweep of Fig. 6
(:func:`find_lambda_sweep`). ``workflow/rules/common.smk`` imports only this module and
:mod:`dustpred.errors`, so building the DAG loads neither h5py, pandas nor torch; keep it so.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from dustpred.errors import ConfigError

EXPERIMENT_KEYS = ("velocity_kms", "split", "seeds", "unet", "linear")


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

    Returns a dict with keys ``velocity_kms``, ``split``, ``seeds``, ``unet``, ``linear``.
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
        raise ConfigError(
            f"config key 'experiments.{name}': unknown override(s) {unknown}; "
            f"expected keys among {list(EXPERIMENT_KEYS)}"
        )
    base = {
        "velocity_kms": config["preprocess"]["velocity_kms"],
        "split": config["cutouts"]["split"],
        "seeds": config["seeds"],
        "unet": config["unet"],
        "linear": config["linear"],
    }
    return deep_merge(base, override)


# Columns of the summary tables that describe an experiment (see dustpred.evaluation).
SETTING_COLUMNS = ["split", "velocity_kms", "input_kind", "loss_lambda"]


def experiment_settings(resolved: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`SETTING_COLUMNS` of one resolved experiment (see :func:`resolve_experiment`).

    ``velocity_kms`` becomes a label such as ``'-64.5..17'`` (km/s); missing keys give None
    (``'nan..nan'`` for the velocity range).
    """
    unet = resolved.get("unet", {}) or {}
    lo, hi = resolved.get("velocity_kms", (float("nan"), float("nan")))
    return {
        "split": resolved.get("split"),
        "velocity_kms": f"{lo:g}..{hi:g}",
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


def velocity_label(velocity_kms: list[float]) -> str:
    """Directory label of a velocity range, e.g. ``[-64.5, 17]`` -> ``'v-64.5_17'``."""
    lo, hi = velocity_kms
    return f"v{lo:g}_{hi:g}"


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
