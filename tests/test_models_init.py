"""Initialising the 1-channel encoder from RGB weight files (timm / MAE / open_clip layouts)."""

from __future__ import annotations

import logging

import pytest
import torch

from cxrkit.errors import ConfigError, InputError
from cxrkit.models.init import load_pretrained_image_weights, read_state_dict
from cxrkit.models.tower_configs import VisionConfig
from cxrkit.models.vision import build_vision_encoder, sincos_pos_embed_2d

TINY = dict(arch="vit_tiny_patch16_224", patch_size=8, depth=2, embed_dim=32, num_heads=2)


def _rgb_reference(image_size: int = 32, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_vision_encoder(VisionConfig(**TINY, image_size=image_size, in_chans=3))
    with torch.no_grad():  # non-trivial values everywhere, position table included
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model.eval()


def _write_mae_checkpoint(reference: torch.nn.Module, path) -> None:
    # facebookresearch/mae layout: {"model": encoder keys + decoder keys}, saved with torch.save.
    state = dict(reference.state_dict())
    state["mask_token"] = torch.zeros(1, 1, 16)
    state["decoder_embed.weight"] = torch.zeros(16, 32)
    state["decoder_pos_embed"] = torch.zeros(1, 17, 16)
    torch.save({"model": state, "epoch": 799}, path)


def test_mae_rgb_weights_give_the_same_features_on_grey_images(tmp_path):
    reference = _rgb_reference()
    _write_mae_checkpoint(reference, tmp_path / "mae.pth")
    encoder = build_vision_encoder(VisionConfig(**TINY, image_size=32, in_chans=1)).eval()

    report = load_pretrained_image_weights(encoder, tmp_path / "mae.pth", source="mae")

    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        ours = encoder.forward_features(x)
        theirs = reference.forward_features(x.repeat(1, 3, 1, 1))
    assert (ours - theirs).abs().max().item() < 1e-5
    assert report.missing == [] and report.unexpected == []
    assert {"mask_token", "decoder_embed.weight", "decoder_pos_embed"} == set(report.skipped)
    assert any("3 -> 1 channels" in note for note in report.adapted)


def test_pos_embed_is_interpolated_to_a_larger_grid_and_the_class_slot_kept(tmp_path):
    reference = _rgb_reference(image_size=32)  # 4x4 grid
    _write_mae_checkpoint(reference, tmp_path / "mae.pth")
    encoder = build_vision_encoder(VisionConfig(**TINY, image_size=64, in_chans=1))  # 8x8

    report = load_pretrained_image_weights(encoder, tmp_path / "mae.pth", source="mae")

    assert encoder.pos_embed.shape == (1, 1 + 64, 32)
    assert torch.equal(encoder.pos_embed[0, 0], reference.pos_embed[0, 0])
    assert any("4x4 -> 8x8" in note for note in report.adapted)


def test_loaded_mae_sincos_table_equals_ours(tmp_path):
    # An MAE checkpoint carries its fixed table; with MAE's channel order ours is identical.
    reference = _rgb_reference()
    with torch.no_grad():
        reference.pos_embed[0, 1:] = sincos_pos_embed_2d(32, (4, 4))
    _write_mae_checkpoint(reference, tmp_path / "mae.pth")
    encoder = build_vision_encoder(VisionConfig(**TINY, image_size=32, in_chans=1))
    load_pretrained_image_weights(encoder, tmp_path / "mae.pth", source="mae")
    assert torch.equal(encoder.pos_embed[0, 1:], sincos_pos_embed_2d(32, (4, 4)))


def test_timm_safetensors_weights_load_and_the_load_is_logged(tmp_path, caplog):
    from safetensors.torch import save_file

    reference = _rgb_reference()
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    state["head.weight"] = torch.zeros(10, 32)  # a classifier the encoder does not have
    save_file(state, str(tmp_path / "vit.safetensors"))
    encoder = build_vision_encoder(VisionConfig(**TINY, image_size=32, in_chans=1))
    with caplog.at_level(logging.INFO, logger="cxrkit.models.init"):
        report = load_pretrained_image_weights(encoder, tmp_path / "vit.safetensors")
    assert report.skipped == ["head.weight"]
    assert "loaded" in caplog.text and "vit.safetensors" in caplog.text


def test_missing_keys_are_reported_and_strict_makes_them_an_error(tmp_path):
    reference = _rgb_reference()
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("norm.")}
    torch.save(state, tmp_path / "partial.pth")
    encoder = build_vision_encoder(VisionConfig(**TINY, image_size=32, in_chans=1))
    report = load_pretrained_image_weights(encoder, tmp_path / "partial.pth")
    assert report.missing == ["norm.bias", "norm.weight"]
    with pytest.raises(InputError, match="2 missing key"):
        load_pretrained_image_weights(encoder, tmp_path / "partial.pth", strict=True)


def test_a_block_of_another_width_is_an_error_naming_file_and_key(tmp_path):
    reference = _rgb_reference()
    state = dict(reference.state_dict())
    state["blocks.0.mlp.fc1.weight"] = torch.zeros(64, 32)
    torch.save(state, tmp_path / "wrong.pth")
    encoder = build_vision_encoder(VisionConfig(**TINY, image_size=32, in_chans=1))
    with pytest.raises(InputError, match=r"wrong\.pth.*blocks\.0\.mlp\.fc1\.weight"):
        load_pretrained_image_weights(encoder, tmp_path / "wrong.pth")


def test_open_clip_visual_tower_loads_into_a_timm_clip_arch(tmp_path):
    from open_clip.transformer import VisionTransformer as OpenClipViT

    torch.manual_seed(0)
    visual = OpenClipViT(
        image_size=32, patch_size=8, width=32, layers=2, heads=2, mlp_ratio=4.0, output_dim=16
    ).eval()
    with torch.no_grad():
        for param in visual.parameters():
            param.add_(0.05 * torch.randn_like(param))
    state = {f"visual.{k}": v for k, v in visual.state_dict().items()}
    state["logit_scale"] = torch.tensor(4.6)
    torch.save(state, tmp_path / "clip.pt")
    cfg = VisionConfig(
        arch="vit_base_patch16_clip_224",
        image_size=32,
        patch_size=8,
        depth=2,
        embed_dim=32,
        num_heads=2,
        in_chans=1,
    )
    encoder = build_vision_encoder(cfg).eval()

    report = load_pretrained_image_weights(encoder, tmp_path / "clip.pt", source="open_clip")

    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        ours = encoder.forward_features(x)[:, 0] @ visual.proj
        theirs = visual(x.repeat(1, 3, 1, 1))
    assert (ours - theirs).abs().max().item() < 1e-5
    assert report.missing == []
    assert {"head.weight", "head.bias"} <= set(report.skipped)


def test_missing_or_garbage_files_are_input_errors(tmp_path):
    encoder = build_vision_encoder(VisionConfig(**TINY, image_size=32, in_chans=1))
    with pytest.raises(InputError, match="nope.pth: no such weights file"):
        load_pretrained_image_weights(encoder, tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pth: cannot read weights"):
        read_state_dict(tmp_path / "junk.pth")
    with pytest.raises(ConfigError, match="unknown weights source"):
        load_pretrained_image_weights(encoder, tmp_path / "junk.pth", source="imagenet")
