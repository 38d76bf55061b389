"""Named model configs: shipped as JSON, typed, listable, buildable at test size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cxrkit.cli import app
from cxrkit.config import to_dict
from cxrkit.errors import ConfigError
from cxrkit.models.registry import (
    ModelConfig,
    build_towers,
    get_model_config,
    list_model_configs,
    resolve_model_config,
)

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def test_the_promised_configs_ship():
    assert {
        "tiny-minilm",
        "tiny-bert",
        "tiny-clip",
        "maco-vitb16-bert",
        "clip-vitb16",
    } <= set(list_model_configs())


def test_pyproject_ships_the_json_configs_in_the_wheel():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"cxrkit.models" = ["configs/*.json"]' in pyproject


@pytest.mark.parametrize("name", list_model_configs())
def test_every_shipped_config_is_typed_and_valid(name):
    cfg = get_model_config(name)
    assert isinstance(cfg, ModelConfig) and cfg.name == name
    assert cfg.description and cfg.notes  # every config says what it is and where it comes from
    assert cfg.image.in_chans == 1
    assert cfg.embed_dim > 0


@pytest.mark.parametrize("name", ["tiny-minilm", "tiny-bert", "tiny-clip"])
def test_tiny_configs_build_and_run_on_cpu(name):
    cfg = get_model_config(name)
    image_encoder, text_tower = build_towers(cfg)
    size = cfg.image.image_size
    with torch.no_grad():
        image_tokens = image_encoder.forward_features(torch.rand(2, 1, size, size))
        batch = text_tower.tokenizer()(["Heart size normal.", "Small right effusion."])
        text = text_tower.eval()(batch["input_ids"], batch["attention_mask"])
    assert image_tokens.shape[:2] == (2, 1 + cfg.image.num_patches)
    assert text.tokens.shape == (2, cfg.text.context_length, text_tower.width)
    assert text.pooled.shape == (2, text_tower.width)


def test_maco_config_follows_methods_md():
    cfg = get_model_config("maco-vitb16-bert")
    assert (cfg.image.arch, cfg.image.image_size, cfg.image.patch_size) == (
        "vit_base_patch16_224",
        224,
        16,
    )
    assert (cfg.text.kind, cfg.text.width) == ("bert", 768)
    assert cfg.embed_dim == 768


@pytest.mark.slow
def test_full_size_text_towers_have_the_named_widths():
    maco = build_towers(get_model_config("maco-vitb16-bert"))[1]
    clip = build_towers(get_model_config("clip-vitb16"))[1]
    assert maco.width == 768 and len(maco.model.encoder.layer) == 12
    assert clip.width == 512 and clip.transformer.transformer.layers == 12


def test_unknown_name_gets_a_did_you_mean():
    with pytest.raises(ConfigError, match="did you mean tiny-minilm"):
        get_model_config("tiny-minlm")


def test_a_json_file_is_a_config_and_typos_in_it_are_caught(tmp_path):
    good = tmp_path / "mine.json"
    good.write_text(json.dumps({"embed_dim": 32, "image": {"image_size": 32, "patch_size": 8}}))
    cfg = get_model_config(str(good))
    assert cfg.embed_dim == 32 and cfg.image.image_size == 32 and cfg.text.kind == "hf"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"embed_dimm": 32}))
    with pytest.raises(ConfigError, match="did you mean 'embed_dim'"):
        get_model_config(str(bad))
    nested = tmp_path / "nested.json"
    nested.write_text(json.dumps({"text": {"kind": "bert", "widht": 8}}))
    with pytest.raises(ConfigError, match="model.text.widht"):
        get_model_config(str(nested))


def test_shipped_name_plus_overrides_merges_tower_tables():
    cfg = resolve_model_config({"name": "tiny-bert", "text": {"context_length": 16}})
    assert cfg.text.context_length == 16
    assert cfg.text.width == 64  # the rest of the shipped text table is kept
    assert cfg.image == get_model_config("tiny-bert").image
    assert resolve_model_config("tiny-clip") == get_model_config("tiny-clip")


def test_cli_models_lists_names_towers_and_embed_dims():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    for name in list_model_configs():
        assert name in result.stdout
    assert "768" in result.stdout and "open_clip" in result.stdout


def test_cli_models_json_round_trips():
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [c["name"] for c in listed] == list_model_configs()
    assert listed[0] == to_dict(get_model_config(listed[0]["name"]))
    one = json.loads(runner.invoke(app, ["models", "tiny-bert"]).stdout)
    assert one["text"]["kind"] == "bert" and one["notes"]


def test_cli_unknown_model_exits_2():
    result = runner.invoke(app, ["models", "vit-huge-bert"])
    assert result.exit_code == 2
    assert "unknown model config 'vit-huge-bert'" in result.output


def test_cli_models_build_reports_sizes():
    result = runner.invoke(app, ["models", "tiny-bert", "--build", "--json"])
    assert result.exit_code == 0, result.output
    built = json.loads(result.stdout)
    assert built["text_width"] == 64 and built["image_width"] == 192
    assert built["text_vocab_size"] == 30522 and built["image_parameters"] > 0


def test_cli_models_build_with_a_missing_text_path_exits_3(tmp_path):
    config = tmp_path / "mine.json"
    config.write_text(json.dumps({"text": {"kind": "hf", "path": str(tmp_path / "no-model")}}))
    result = runner.invoke(app, ["models", str(config), "--build"])
    assert result.exit_code == 3
    assert "no-model: no such model directory" in result.output
