"""Native export: encoder directories of safetensors + config.json, loaded without pickle."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from cxrkit.config import to_dict
from cxrkit.errors import ArtifactError, InputError
from cxrkit.export import native
from cxrkit.models.checkpoint import load_image_encoder
from cxrkit.models.tower_configs import VisionConfig
from cxrkit.models.vision import build_vision_encoder

PRE = {"image_size": 64, "in_chans": 1, "mean": 0.5, "std": 0.5}


@pytest.fixture(scope="module")
def tiny_encoder():
    torch.manual_seed(0)
    cfg = VisionConfig(arch="vit_tiny_patch16_224", image_size=64, patch_size=16, depth=2)
    return build_vision_encoder(cfg).eval(), cfg


@pytest.fixture()
def encoder_dir(tmp_path, tiny_encoder):
    encoder, cfg = tiny_encoder
    return native.save_image_encoder(
        tmp_path / "image_encoder", encoder, cfg.arch, to_dict(cfg), PRE, {"checkpoint_id": "test"}
    )


def test_image_encoder_round_trips_with_identical_features(encoder_dir, tiny_encoder):
    encoder, cfg = tiny_encoder
    loaded, loaded_cfg = native.load_exported_encoder(encoder_dir, verify=False)
    images = native.normalise(native.probe_images(64), PRE)
    with torch.no_grad():
        diff = native.max_abs_diff(loaded(images), encoder(images))
    print(f"native safetensors round trip: max abs diff {diff:.3g}")
    assert diff == 0.0
    assert loaded_cfg == cfg


def test_encoder_dir_is_readable_by_cxrkit_models_loading(encoder_dir, tiny_encoder):
    encoder, _ = tiny_encoder
    loaded, cfg = load_image_encoder(encoder_dir)
    assert cfg.depth == 2
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), encoder.state_dict().values(), strict=True)
    )


def test_config_json_is_also_a_timm_config(encoder_dir):
    config = json.loads((encoder_dir / native.CONFIG).read_text())
    assert config["architecture"] == "vit_tiny_patch16_224"
    assert config["pretrained_cfg"]["input_size"] == [1, 64, 64]
    assert config["pretrained_cfg"]["mean"] == [0.5]
    assert config["pretrained_cfg"]["num_classes"] == 0
    assert config["cxrkit"]["format"] == native.ENCODER_FORMAT


def test_newer_encoder_format_is_refused(encoder_dir):
    path = encoder_dir / native.CONFIG
    config = json.loads(path.read_text())
    config["cxrkit"]["format"] = "cxrkit-encoder/2"
    path.write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="cxrkit-encoder/2"):
        native.load_exported_encoder(encoder_dir, verify=False)


def test_unknown_encoder_name_is_an_input_error(encoder_dir):
    with pytest.raises(InputError, match="text"):
        native.load_exported_encoder(encoder_dir, encoder="text", verify=False)


def test_model_args_read_from_the_live_vit(tiny_encoder):
    args = native.vit_model_args(tiny_encoder[0])
    # vit_tiny: width 192, 3 heads, MLP 4x; depth and sizes from the VisionConfig overrides
    assert args["embed_dim"] == 192 and args["num_heads"] == 3 and args["mlp_ratio"] == 4.0
    assert args["depth"] == 2 and args["img_size"] == 64 and args["patch_size"] == 16
    assert args["in_chans"] == 1 and args["num_classes"] == 0 and args["global_pool"] == "token"


def test_non_vit_encoder_is_refused():
    with pytest.raises(InputError, match="VisionTransformer"):
        native.vit_model_args(torch.nn.Linear(2, 2))


def test_other_encoder_weights_are_written_as_safetensors(tmp_path):
    tower = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 2))
    state = native.save_encoder(
        tmp_path / "text_encoder", "text", tower, {"objective": "x", "objective_config": {"a": 1}}
    )
    reread = load_file(str(tmp_path / "text_encoder" / native.WEIGHTS))
    assert reread.keys() == state.keys()
    assert all(torch.equal(reread[k], v) for k, v in state.items())
    config = json.loads((tmp_path / "text_encoder" / native.CONFIG).read_text())
    assert config["cxrkit"]["encoder"] == "text"


def test_max_abs_diff_hand_computed():
    assert native.max_abs_diff(torch.tensor([1.0, 2.0]), torch.tensor([1.5, 2.0])) == 0.5
    assert native.max_abs_diff(torch.zeros(2), torch.zeros(3)) == float("inf")


def test_probe_images_are_deterministic_and_in_unit_range():
    first, second = native.probe_images(32, batch=2), native.probe_images(32, batch=2)
    assert first.shape == (2, 1, 32, 32)
    assert torch.equal(first, second)
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0


def test_normalise_maps_unit_range_to_minus_one_one():
    out = native.normalise(torch.tensor([0.0, 0.5, 1.0]), PRE)
    assert out.tolist() == [-1.0, 0.0, 1.0]
