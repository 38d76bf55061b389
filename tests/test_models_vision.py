"""The 1-channel timm ViT encoder and the helpers masked objectives use."""

from __future__ import annotations

import math

import pytest
import timm
import torch

from cxrkit.errors import ConfigError
from cxrkit.models.tower_configs import VisionConfig
from cxrkit.models.vision import (
    build_vision_encoder,
    encode_visible,
    patchify,
    set_sincos_pos_embed,
    sincos_pos_embed_2d,
    unpatchify,
)

TINY = dict(arch="vit_tiny_patch16_224", image_size=64, patch_size=8, depth=2)


def test_patchify_cuts_row_major_patches_hand_checked():
    image = torch.tensor([[1.0, 2, 5, 6], [3, 4, 7, 8], [9, 10, 13, 14], [11, 12, 15, 16]])
    patches = patchify(image[None, None], 2)
    assert patches.shape == (1, 4, 4)
    assert patches[0].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]


def test_patchify_unpatchify_round_trip_non_square_two_channels():
    images = torch.randn(2, 2, 12, 20)
    patches = patchify(images, 4)  # (2, 15, 32)
    assert patches.shape == (2, 15, 32)
    assert torch.equal(unpatchify(patches, 4, grid=(3, 5), chans=2), images)


def test_sincos_pos_embed_hand_values():
    # embed_dim 4 -> one frequency (1.0) per axis; columns encoded first, then rows (MAE).
    table = sincos_pos_embed_2d(4, (2, 3))
    assert table.shape == (6, 4)
    s1, c1, s2, c2 = math.sin(1), math.cos(1), math.sin(2), math.cos(2)
    assert torch.allclose(table[4], torch.tensor([s1, c1, s1, c1]))  # row 1, col 1
    assert torch.allclose(table[2], torch.tensor([s2, c2, 0.0, 1.0]))  # row 0, col 2
    assert torch.allclose(table[3], torch.tensor([0.0, 1.0, s1, c1]))  # row 1, col 0


def test_sincos_pos_embed_matches_mae_layout_d8_2x2():
    # MAE util/pos_embed.py: grid = meshgrid(w, h), emb_h from grid[0] (the column) fills
    # channels 0..3, emb_w from grid[1] (the row) fills 4..7; each half is
    # [sin(p w0), sin(p w1), cos(p w0), cos(p w1)] with w0 = 1, w1 = 1 / 10000 ** (1/2) = 0.01.
    s, c = math.sin, math.cos
    expected = torch.tensor(
        [
            [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0],  # patch 0: row 0, col 0
            [s(1), s(0.01), c(1), c(0.01), 0.0, 0.0, 1.0, 1.0],  # patch 1: row 0, col 1
            [0.0, 0.0, 1.0, 1.0, s(1), s(0.01), c(1), c(0.01)],  # patch 2: row 1, col 0
            [s(1), s(0.01), c(1), c(0.01), s(1), s(0.01), c(1), c(0.01)],  # patch 3: row 1, col 1
        ]
    )
    assert torch.allclose(sincos_pos_embed_2d(8, (2, 2)), expected, atol=1e-7)


def test_one_channel_encoder_at_64px_patch8_gives_65_tokens():
    encoder = build_vision_encoder(VisionConfig(**TINY))
    out = encoder.forward_features(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 1 + 64, 192)
    assert encoder.patch_embed.proj.in_channels == 1


def test_hd_encoder_at_1280px_patch64_gives_400_patches():
    cfg = VisionConfig(
        arch="vit_large_patch16_224",
        image_size=1280,
        patch_size=64,
        depth=1,
        embed_dim=64,
        num_heads=4,
    )
    encoder = build_vision_encoder(cfg)
    assert cfg.num_patches == 400
    with torch.no_grad():
        out = encoder.forward_features(torch.randn(1, 1, 1280, 1280))
    assert out.shape == (1, 401, 64)


def test_encode_all_visible_equals_timm_forward_features():
    encoder = build_vision_encoder(VisionConfig(**TINY)).eval()
    set_sincos_pos_embed(encoder)
    images = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(
            encode_visible(encoder, images), encoder.forward_features(images), atol=1e-6
        )


@pytest.mark.parametrize(
    "variant",
    [
        dict(no_embed_class=True, reg_tokens=2),
        dict(class_token=False, global_pool="avg"),
        dict(reg_tokens=1),
    ],
)
def test_encode_all_visible_matches_timm_pos_embed_variants(variant):
    encoder = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=0,
        img_size=32,
        patch_size=8,
        in_chans=1,
        depth=1,
        **variant,
    ).eval()
    images = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(
            encode_visible(encoder, images), encoder.forward_features(images), atol=1e-6
        )


def test_encode_shuffled_visible_set_permutes_timm_tokens():
    # Positions are added before the gather, so keeping every patch in a shuffled
    # order must give timm's tokens in that order (attention is order-free).
    encoder = build_vision_encoder(VisionConfig(**TINY)).eval()
    images = torch.randn(2, 1, 64, 64)
    order = torch.stack(
        [torch.randperm(64, generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
    )  # (2, 64)
    with torch.no_grad():
        full = encoder.forward_features(images)  # (2, 65, 192)
        shuffled = encode_visible(encoder, images, order)
    expected = torch.gather(full[:, 1:], 1, order[..., None].expand(-1, -1, 192))
    assert torch.allclose(shuffled[:, 1:], expected, atol=1e-5)
    assert torch.allclose(shuffled[:, :1], full[:, :1], atol=1e-5)


def test_sincos_encoder_pos_embed_is_fixed_with_zero_class_slot():
    encoder = build_vision_encoder(VisionConfig(**TINY))
    set_sincos_pos_embed(encoder)
    assert not encoder.pos_embed.requires_grad
    assert torch.count_nonzero(encoder.pos_embed[0, 0]) == 0
    assert torch.allclose(encoder.pos_embed[0, 1:], sincos_pos_embed_2d(192, (8, 8)))


def test_image_size_not_multiple_of_patch_is_config_error():
    with pytest.raises(ConfigError, match="multiple"):
        build_vision_encoder(VisionConfig(arch="vit_tiny_patch16_224", image_size=60, patch_size=8))


def test_unknown_arch_is_config_error():
    with pytest.raises(ConfigError, match="not a timm model"):
        build_vision_encoder(VisionConfig(arch="vit_nonexistent_patch3", image_size=64))


def test_non_vit_arch_is_config_error():
    with pytest.raises(ConfigError, match="VisionTransformer"):
        build_vision_encoder(VisionConfig(arch="resnet18", image_size=64))
