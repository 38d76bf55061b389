"""open_clip export: local-dir write + create_model_and_transforms load, exact timm ViT mapping."""

from __future__ import annotations

import pytest
import timm
import torch
from open_clip.model import CustomTextCLIP
from test_export_helpers import TINY_MAE, TINY_VIT

from cxrkit.errors import InputError
from cxrkit.export import native, open_clip_format
from cxrkit.objectives.base import build_objective

TINY_CLIP_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 16, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 12, "width": 32, "heads": 2, "layers": 1},
    "custom_text": True,
}
PRE = {"image_size": 32, "in_chans": 1, "mean": 0.5, "std": 0.5}


@torch.no_grad()
def test_open_clip_model_from_tiny_config_round_trips(tmp_path):
    torch.manual_seed(3)
    cfg = {k: v for k, v in TINY_CLIP_CFG.items() if k != "custom_text"}
    model = CustomTextCLIP(**cfg).eval()
    out = open_clip_format.write_open_clip(
        tmp_path / "open_clip",
        TINY_CLIP_CFG,
        model.state_dict(),
        open_clip_format.preprocess_cfg(PRE),
    )
    loaded, preprocess, tokenizer = open_clip_format.load_open_clip(out)
    images = torch.rand(2, 3, 32, 32)
    tokens = tokenizer(["no acute disease", "pleural effusion"])
    image_diff = native.max_abs_diff(loaded.encode_image(images), model.encode_image(images))
    text_diff = native.max_abs_diff(loaded.encode_text(tokens), model.encode_text(tokens))
    print(f"open_clip tiny round trip: image {image_diff:.3g}, text {text_diff:.3g}")
    assert image_diff == 0.0 and text_diff == 0.0
    assert tokens.shape == (2, 12)


def test_loaded_transform_uses_cxr_normalisation(tmp_path):
    cfg = {k: v for k, v in TINY_CLIP_CFG.items() if k != "custom_text"}
    out = open_clip_format.write_open_clip(
        tmp_path / "oc",
        TINY_CLIP_CFG,
        CustomTextCLIP(**cfg).state_dict(),
        open_clip_format.preprocess_cfg(PRE),
    )
    _, preprocess, _ = open_clip_format.load_open_clip(out)
    normalize = [t for t in preprocess.transforms if type(t).__name__ == "Normalize"][0]
    assert list(normalize.mean) == [0.5, 0.5, 0.5] and list(normalize.std) == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("pool", ["token", "avg"])
@torch.no_grad()
def test_one_channel_timm_vit_maps_exactly_onto_open_clip_visual(pool):
    torch.manual_seed(4)
    vit = timm.create_model(
        "vit_tiny_patch16_224", num_classes=0, in_chans=1, img_size=32, depth=2, global_pool=pool
    ).eval()
    projection = torch.randn(192, 16) * 192**-0.5  # (D, E), open_clip's init scale
    vision_cfg, state = open_clip_format.vit_to_open_clip_visual(vit, projection)
    clip = CustomTextCLIP(
        embed_dim=16, vision_cfg=vision_cfg, text_cfg=TINY_CLIP_CFG["text_cfg"]
    ).eval()
    missing = clip.load_state_dict(state, strict=False)
    assert not missing.unexpected_keys
    assert not [k for k in missing.missing_keys if k.startswith("visual.")]
    grey = torch.rand(2, 1, 32, 32) * 2 - 1
    expected = vit(grey) @ projection  # (B, E)
    got = clip.encode_image(grey.expand(-1, 3, -1, -1))  # grey repeated as RGB
    diff = native.max_abs_diff(got, expected)
    print(f"timm ViT ({pool} pool) -> open_clip visual: max abs diff {diff:.3g}")
    assert diff <= 1e-5


def test_vit_with_register_tokens_is_refused():
    vit = timm.create_model(
        "vit_tiny_patch16_224", num_classes=0, in_chans=1, img_size=32, depth=1, reg_tokens=2
    )
    with pytest.raises(InputError, match="class token"):
        open_clip_format.vit_to_open_clip_visual(vit, torch.zeros(192, 4))


def test_image_only_objective_is_skipped_with_reason():
    mae = build_objective("mae", TINY_MAE)
    reason = open_clip_format.skip_reason(mae)
    assert reason is not None and "image-only" in reason and "'mae'" in reason


def test_text_tower_without_open_clip_mapping_is_skipped():
    class TextOnlyHalfway(torch.nn.Module):
        name = "halfway"
        capabilities = frozenset({"image_text"})

        def text_encoder(self):
            return torch.nn.Linear(2, 2)

    reason = open_clip_format.skip_reason(TextOnlyHalfway())
    assert reason is not None and "does not declare the open_clip export" in reason


def test_image_text_objective_is_accepted():
    tiny = build_objective("test-tiny-clip", {"model": TINY_VIT})
    assert open_clip_format.skip_reason(tiny) is None
