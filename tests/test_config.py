"""dustpred.config: experiment resolution, the helpers that build the DAG, and canonical
(order-free) config slices."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dustpred.config import (
    SETTING_COLUMNS,
    canonical,
    deep_merge,
    experiment_settings,
    find_lambda_sweep,
    resolve_experiment,
    velocity_label,
)
from dustpred.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
# Modules that building the DAG must not load: slow to import, and not needed to plan jobs.
HEAVY = ("h5py", "pandas", "torch")

BASE = {
    "preprocess": {"velocity_kms": [-64.5, 17.0]},
    "cutouts": {"split": "north_south"},
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
    with pytest.raises(ConfigError, match=r"experiments\.bad.*unet_lambda"):
        resolve_experiment(cfg, "bad")


def test_experiment_settings_are_the_summary_setting_columns():
    settings = experiment_settings(resolve_experiment(BASE, "lam60"))
    assert list(settings) == SETTING_COLUMNS
    assert settings == {
        "split": "north_south",
        "velocity_kms": "-64.5..17",
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
    assert {"h5py", "pandas"} <= set(heavy_modules_after("import dustpred.evaluation"))


def test_canonical_makes_repr_independent_of_key_order():
    a = {"b": 1, "a": {"y": [1, {"q": 1, "p": 2}], "x": 2}}
    b = {"a": {"x": 2, "y": [1, {"p": 2, "q": 1}]}, "b": 1}
    assert repr(a) != repr(b)
    assert repr(canonical(a)) == repr(canonical(b))


def test_velocity_label_is_compact():
    assert velocity_label([-64.5, 17.0]) == "v-64.5_17"
    assert velocity_label([-120, 120]) == "v-120_120"


def test_sky_seed_of_realisation_0_is_the_master_seed_and_others_differ():
    from dustpred.config import sky_seed

    assert sky_seed(20190430, 0) == 20190430
    seeds = {sky_seed(20190430, k) for k in range(1, 6)}
    assert len(seeds) == 5 and 20190430 not in seeds
    assert sky_seed(20190430, 2) == sky_seed(20190430, 2)
