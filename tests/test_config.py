"""Config layering: defaults < preset < config file < flags < --set; checked names and types."""

from __future__ import annotations

import dataclasses

import pytest

from cxrkit.config import doc, field_help, parse_override, resolve
from cxrkit.errors import ConfigError


@dataclasses.dataclass
class Optim:
    lr: float = doc("Learning rate.", 1e-3)
    betas: list[float] = doc("Adam betas.", [0.9, 0.95])


@dataclasses.dataclass
class Toy:
    name: str = doc("A name.", "x")
    steps: int = doc("Steps.", 10)
    flag: bool = doc("A flag.", False)
    size: int | None = doc("Optional size.", None)
    optim: Optim = dataclasses.field(default_factory=Optim)


def test_defaults_when_nothing_is_given():
    cfg = resolve(Toy)
    assert cfg == Toy()


def test_layers_apply_in_order(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('steps = 20\nname = "file"\n[optim]\nlr = 0.5\n')
    cfg = resolve(
        Toy,
        config_file=config,
        flags={"name": "flag", "steps": None},
        sets=["optim.lr=0.25", "flag=true"],
    )
    assert (cfg.name, cfg.steps, cfg.flag, cfg.optim.lr) == ("flag", 20, True, 0.25)


def test_set_parses_toml_values_and_bare_strings():
    assert parse_override("optim.betas=[0.9, 0.99]") == (["optim", "betas"], [0.9, 0.99])
    assert parse_override("name=vit_base_patch16_224") == (["name"], "vit_base_patch16_224")
    assert parse_override("size=3") == (["size"], 3)


def test_unknown_setting_suggests_the_close_name():
    with pytest.raises(ConfigError, match="did you mean 'steps'"):
        resolve(Toy, sets=["stepz=3"])


def test_bad_type_names_the_setting():
    with pytest.raises(ConfigError, match="optim.lr: expected a number"):
        resolve(Toy, sets=["optim.lr=fast"])


def test_a_string_setting_given_braces_says_how_to_quote_it():
    # `--set mimic_subject_format={}` reads {} as a TOML table; the message says what to type.
    with pytest.raises(
        ConfigError, match=r"name: expected a string, got \{\}.*--set 'name=\"\.\.\.\"'"
    ):
        resolve(Toy, sets=["name={}"])


def test_missing_set_value_is_a_usage_error():
    with pytest.raises(ConfigError, match="expected key=value"):
        resolve(Toy, sets=["steps"])


def test_preset_for_another_stage_is_refused(tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text('stage = "pretrain"\nsteps = 3\n')
    assert resolve(Toy, preset=str(preset), stage="pretrain").steps == 3
    with pytest.raises(ConfigError, match="is for `cxrkit pretrain`"):
        resolve(Toy, preset=str(preset), stage="ingest")


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve(Toy, preset="no-such-preset")


def test_field_help_covers_nested_fields():
    names = [name for name, _, _ in field_help(Toy)]
    assert "optim.lr" in names and "steps" in names
