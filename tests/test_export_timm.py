"""timm export: plain timm.create_model loads the 1-channel encoder with cxrkit's features."""

from __future__ import annotations

import logging

import pytest
import timm
import torch
from timm.models import adapt_input_conv

from cxrkit.config import to_dict
from cxrkit.export import native, timm_format
from cxrkit.models.tower_configs import VisionConfig
from cxrkit.models.vision import build_vision_encoder

PRE = {"image_size": 64, "in_chans": 1, "mean": 0.5, "std": 0.5}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(1)
    cfg = VisionConfig(arch="vit_tiny_patch16_224", image_size=64, patch_size=16, depth=2)
    encoder = build_vision_encoder(cfg).eval()
    out = tmp_path_factory.mktemp("timm") / "image_encoder"
    native.save_image_encoder(out, encoder, cfg.arch, to_dict(cfg), PRE, {})
    return out, encoder


@torch.no_grad()
def test_create_model_with_file_overlay_gives_cxrkit_features(exported):
    out, encoder = exported
    model = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(out / "model.safetensors")),
        in_chans=1,
        num_classes=0,
        img_size=64,
        patch_size=16,
        depth=2,
    ).eval()
    images = native.normalise(native.probe_images(64), PRE)
    diff = native.max_abs_diff(model(images), encoder(images))
    print(f"timm create_model(pretrained_cfg_overlay=file): max abs diff {diff:.3g}")
    assert diff <= 1e-5


@torch.no_grad()
def test_local_dir_route_gives_cxrkit_features(exported):
    out, encoder = exported
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    images = native.normalise(native.probe_images(64), PRE)
    assert (
        native.max_abs_diff(model.forward_features(images), encoder.forward_features(images))
        <= 1e-5
    )


def test_verify_records_both_routes_and_identical_weights(exported):
    out, encoder = exported
    result = timm_format.verify(out, encoder, native.normalise(native.probe_images(64), PRE))
    assert set(result["max_abs_diff_by_route"]) == {"overlay", "local_dir"}
    assert result["weights_identical"] is True
    assert result["in_chans"] == 1 and result["adapt_input_conv_noop"] is True


def test_one_channel_checkpoint_loads_without_channel_warning(exported, caplog):
    out, _ = exported
    with caplog.at_level(logging.WARNING, logger="timm"):
        timm_format.load_with_timm(out)
    assert not [r for r in caplog.records if "channels" in r.getMessage()]


def test_adapt_input_conv_leaves_one_channel_weight_unchanged():
    weight = torch.arange(8.0).reshape(2, 1, 2, 2)
    assert torch.equal(adapt_input_conv(1, weight.clone(), base_chans=1), weight)
    assert timm_format.adapt_input_conv_is_noop(weight)


def test_adapt_input_conv_sums_rgb_into_one_channel():
    # hand-computed: channels 1, 2, 3 summed -> 6 (what happens to ImageNet RGB weights)
    weight = torch.tensor([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1)
    assert adapt_input_conv(1, weight, base_chans=3).flatten().tolist() == [6.0]


def test_snippet_names_every_needed_keyword(exported):
    out, _ = exported
    code = timm_format.snippet("image_encoder", out)
    for needle in (
        "in_chans=1",
        "num_classes=0",
        "img_size=64",
        "patch_size=16",
        "depth=2",
        "image_encoder/model.safetensors",
        "local-dir:image_encoder",
    ):
        assert needle in code
