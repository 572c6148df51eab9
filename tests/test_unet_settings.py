"""UNetSettings: the ``unet`` config section typed once, with the schema's defaults only."""

import re
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
import yaml

from dustpred.config import schema_defaults
from dustpred.errors import ConfigError
from dustpred.models.settings import UNetSettings

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


def _schema_unet_properties():
    return yaml.safe_load(SCHEMA.read_text())["properties"]["unet"]["properties"]


def test_schema_defaults_are_the_schema_section_defaults_in_schema_order():
    properties = _schema_unet_properties()
    defaults = schema_defaults("unet")
    assert list(defaults) == [k for k, v in properties.items() if "default" in v]
    assert defaults == {k: v["default"] for k, v in properties.items() if "default" in v}


def test_an_empty_section_gets_every_default_of_the_schema():
    settings = UNetSettings.from_config({})
    for key, spec in _schema_unet_properties().items():
        expected = spec["default"]
        got = getattr(settings, key)
        assert (list(got) if key == "widths" else got) == expected, key
    assert settings.loss_lambda == 30.0 and settings.widths == (64, 128, 256, 512)


def test_values_are_typed_but_the_stored_config_keeps_them_as_given():
    section = {"loss_lambda": 10, "grad_clip": 0, "epochs": 3, "cuda_graphs": True}
    settings = UNetSettings.from_config(section)
    assert settings.loss_lambda == 10.0 and type(settings.loss_lambda) is float
    assert settings.grad_clip == 0.0 and type(settings.grad_clip) is float
    assert settings.cuda_graphs == "true"
    assert type(settings.config["loss_lambda"]) is int and settings.config["cuda_graphs"] is True
    assert list(settings.config) == list(schema_defaults("unet"))  # schema order, all keys


@pytest.mark.parametrize(
    ("value", "typed"), [("mean_abs", "mean_abs"), ("none", "none"), (250, 250.0)]
)
def test_target_scale_is_mean_abs_none_or_a_positive_number(value, typed):
    settings = UNetSettings.from_config({"target_scale": value})
    assert settings.target_scale == typed and type(settings.target_scale) is type(typed)
    assert settings.config["target_scale"] == value
    assert UNetSettings.from_config({}).target_scale == "mean_abs"  # the default


def test_settings_are_frozen():
    settings = UNetSettings.from_config({})
    with pytest.raises(FrozenInstanceError):
        settings.epochs = 3


def test_an_unknown_key_is_named():
    with pytest.raises(ConfigError, match="unknown key.*'loss_lamda'"):
        UNetSettings.from_config({"loss_lamda": 10.0})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("epochs", 0),
        ("batch_size", 0),
        ("lr_decay_every", 0),
        ("validation_fraction", 1.0),
        ("device", "tpu"),
        ("cuda_graphs", "sometimes"),
        ("variant", "big"),
        ("widths", []),
        ("lr", "1e-3"),  # YAML 1.1 reads 1e-3 (no dot) as a string
        ("compile", "fastest"),
        ("target_scale", "max"),
        ("target_scale", 0),
        ("target_scale", True),
        ("keep", "middle"),
        ("adam_reset", "yes"),
        ("precision", "fp16"),
    ],
)
def test_a_value_out_of_range_is_named_with_what_was_found(key, value):
    with pytest.raises(ConfigError, match=re.escape(f"'unet.{key}': found {value!r}")):
        UNetSettings.from_config({key: value})


def test_every_network_variant_is_an_accepted_setting():
    from dustpred.models.unet import VARIANTS

    for variant in VARIANTS:
        assert UNetSettings.from_config({"variant": variant}).variant == variant


def test_the_authors_recipe_is_a_choice_of_settings_and_the_projects_the_default():
    project = UNetSettings.from_config({})
    assert (project.keep, project.adam_reset, project.precision) == ("best", False, "bf16")
    assert (project.grad_clip, project.augment) == (1.0, True)
    authors = UNetSettings.from_config(
        {
            "keep": "last",
            "grad_clip": 0.0,
            "augment": False,
            "adam_reset": True,
            "precision": "fp32",
        }
    )
    assert (authors.keep, authors.adam_reset, authors.precision) == ("last", True, "fp32")
    assert (authors.grad_clip, authors.augment) == (0.0, False)
