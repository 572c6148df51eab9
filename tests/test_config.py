"""dustpred.config: experiment resolution and canonical (order-free) config slices."""

import pytest

from dustpred.config import canonical, deep_merge, resolve_experiment, velocity_label
from dustpred.errors import ConfigError

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


def test_canonical_makes_repr_independent_of_key_order():
    a = {"b": 1, "a": {"y": [1, {"q": 1, "p": 2}], "x": 2}}
    b = {"a": {"x": 2, "y": [1, {"p": 2, "q": 1}]}, "b": 1}
    assert repr(a) != repr(b)
    assert repr(canonical(a)) == repr(canonical(b))


def test_velocity_label_is_compact():
    assert velocity_label([-64.5, 17.0]) == "v-64.5_17"
    assert velocity_label([-120, 120]) == "v-120_120"
