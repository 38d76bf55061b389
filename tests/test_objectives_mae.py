"""The MAE objective: hand-computed loss, contour batches, learning, checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cxrkit import load
from cxrkit.errors import ArtifactError, ConfigError, InputError
from cxrkit.models.checkpoint import load_image_encoder
from cxrkit.objectives.base import build_objective
from cxrkit.objectives.loading import load_objective, save_objective
from cxrkit.objectives.mae import MAE, masked_patch_loss
from cxrkit.objectives.masking import grid_from_pixel_mask

TINY_MODEL = {"arch": "vit_tiny_patch16_224", "image_size": 32, "patch_size": 8, "depth": 2}
TINY_DECODER = {"decoder_dim": 64, "decoder_depth": 1, "decoder_heads": 4}

# 1-channel 4x4 image, patch 2 -> patches [1,2,3,4], [5,6,7,8], [9..12], [13..16].
TOY = torch.tensor([[1.0, 2, 5, 6], [3, 4, 7, 8], [9, 10, 13, 14], [11, 12, 15, 16]])[None, None]


def _tiny(**objective) -> MAE:
    return build_objective("mae", {"model": dict(TINY_MODEL), **TINY_DECODER, **objective})


def _real_batch(count: int = 4, size: int = 32) -> torch.Tensor:
    """Real pediatric chest X-rays, grey, resized, normalised to [-1, 1]: (B, 1, S, S)."""
    from cxrkit.io.bundled import pediatric_jpegs

    images = []
    for path in pediatric_jpegs()[:count]:
        grey = Image.open(path).convert("L").resize((size, size), Image.BILINEAR)
        images.append(torch.from_numpy(np.asarray(grey, dtype=np.float32) / 255.0))
    return ((torch.stack(images) - 0.5) / 0.5)[:, None]


def test_masked_loss_equals_hand_computation_without_norm_pix():
    target = torch.tensor([[[1.0, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]])
    pred = torch.zeros(1, 4, 4)
    pred[0, 1] = 100.0  # visible patches must not count, however wrong
    mask = torch.tensor([[1.0, 0, 1, 0]])
    loss, mse = masked_patch_loss(pred, target, mask, norm_pix_loss=False)
    # patch 0: (1+4+9+16)/4 = 7.5; patch 2: (81+100+121+144)/4 = 111.5; mean = 59.5
    assert loss.item() == pytest.approx(59.5)
    assert mse.item() == pytest.approx(59.5)


def test_masked_loss_equals_hand_computation_with_norm_pix():
    target = torch.tensor([[[1.0, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]])
    pred = torch.zeros(1, 4, 4)
    pred[0, 3] = 100.0
    mask = torch.tensor([[1.0, 0, 1, 0]])
    loss, mse = masked_patch_loss(pred, target, mask, norm_pix_loss=True)
    # each patch: mean +2.5 offsets (-1.5,-.5,.5,1.5), unbiased var 5/3; a zero prediction
    # costs mean(offsets^2) / (var + 1e-6) = 1.25 / (5/3 + 1e-6); in pixels: 1.25.
    assert loss.item() == pytest.approx(1.25 / (5 / 3 + 1e-6), rel=1e-6)
    assert mse.item() == pytest.approx(1.25, rel=1e-5)


def test_objective_patchifies_the_toy_image_as_the_hand_computation():
    model = {"arch": "vit_tiny_patch16_224", "image_size": 4, "patch_size": 2, "depth": 1}
    mae = build_objective(
        "mae", {"model": model, "norm_pix_loss": False, "mask_ratio": 0.5, **TINY_DECODER}
    )
    pred, mask = mae.forward_reconstruction(TOY, torch.Generator().manual_seed(0))
    assert pred.shape == mask.shape == (1, 1, 4, 4)
    # The mask image is constant over each 2x2 patch and hides exactly 2 of 4 patches.
    per_patch = mask[0, 0, ::2, ::2]
    assert per_patch.sum().item() == 2 and torch.equal(mask[0, 0, 1::2, 1::2], per_patch)


def test_loss_returns_named_values_and_trains_encoder_and_decoder():
    mae = _tiny()
    out = mae.loss({"image": _real_batch(2)})
    assert set(out) == {"loss", "mse_masked", "mask_ratio_actual"}
    assert out["mask_ratio_actual"].item() == pytest.approx(0.75)
    out["loss"].backward()
    assert mae.encoder.patch_embed.proj.weight.grad.abs().sum() > 0
    assert mae.decoder.head.weight.grad.abs().sum() > 0
    assert mae.encoder.pos_embed.grad is None  # fixed sin-cos, as MAE


def test_needs_depends_on_the_masking():
    assert _tiny().needs == {"image"}
    contour = _tiny(masking="contour", mask_ratio_inside=0.9, mask_ratio_outside=0.5)
    assert contour.needs == {"image", "contour"}


def test_contour_masking_without_ratios_is_config_error():
    with pytest.raises(ConfigError, match="mask_ratio_inside"):
        _tiny(masking="contour")


def test_unknown_objective_setting_is_config_error():
    with pytest.raises(ConfigError, match="mask_ration"):
        _tiny(mask_ration=0.5)


def test_contour_batch_without_contour_is_input_error():
    mae = _tiny(masking="contour", mask_ratio_inside=0.9, mask_ratio_outside=0.5)
    with pytest.raises(InputError, match="contour"):
        mae.loss({"image": _real_batch(1)})


def test_contour_loss_reports_realised_inside_and_outside_ratios():
    mae = _tiny(masking="contour", mask_ratio_inside=1.0, mask_ratio_outside=0.0, mask_ratio=0.5)
    contour = torch.zeros(2, 32, 32, dtype=torch.bool)
    contour[:, :16] = True  # top half inside: 8 of 16 patches
    out = mae.loss({"image": _real_batch(2), "contour": contour})
    # K = 8 visible; inside weight 0 -> all 8 kept outside: inside fully masked, outside visible.
    assert out["mask_ratio_inside_actual"].item() == 1.0
    assert out["mask_ratio_outside_actual"].item() == 0.0
    assert grid_from_pixel_mask(contour, 8)[0].sum().item() == 8


def test_wrong_image_size_is_input_error():
    with pytest.raises(InputError, match="image_size"):
        _tiny().loss({"image": torch.zeros(1, 1, 64, 64)})


def test_hd_mae_at_1280px_patch64_runs_with_contour_masking():
    model = {
        "arch": "vit_large_patch16_224",
        "image_size": 1280,
        "patch_size": 64,
        "depth": 1,
        "embed_dim": 64,
        "num_heads": 4,
    }
    mae = build_objective(
        "mae",
        {
            "model": model,
            "masking": "contour",
            "mask_ratio": 0.75,
            "mask_ratio_inside": 0.85,
            "mask_ratio_outside": 0.55,
            **TINY_DECODER,
        },
    )
    contour = torch.zeros(1, 1280, 1280, dtype=torch.bool)
    contour[:, 200:1100, 150:1130] = True
    with torch.no_grad():
        out = mae.loss({"image": torch.randn(1, 1, 1280, 1280), "contour": contour})
        pred, mask = mae.forward_reconstruction(torch.randn(1, 1, 1280, 1280), contour=contour)
    assert pred.shape == mask.shape == (1, 1, 1280, 1280)
    assert out["mask_ratio_actual"].item() == pytest.approx(300 / 400)


def test_a_few_steps_on_a_fixed_real_batch_reduce_the_loss():
    torch.manual_seed(0)
    mae = _tiny(norm_pix_loss=False)
    images = _real_batch(4)
    optim = torch.optim.AdamW(mae.param_groups(0.05), lr=1e-3, betas=(0.9, 0.95))
    losses = []
    for _ in range(25):
        loss = mae.loss({"image": images})["loss"]
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_checkpoint_round_trip_rebuilds_objective_and_encoder(tmp_path):
    mae = _tiny().eval()
    save_objective(mae, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["objective"] == "mae" and config["image_encoder_prefix"] == "encoder."
    assert config["preprocessing"]["image_size"] == 32
    loaded = load_objective(tmp_path)
    for key, value in mae.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    encoder, vision_cfg = load_image_encoder(tmp_path)
    images = _real_batch(2)
    with torch.no_grad():
        assert torch.equal(encoder.forward_features(images), mae.encoder.forward_features(images))
    assert vision_cfg.patch_size == 8
    assert isinstance(load(tmp_path, verify=False), MAE)  # a bare folder: no manifest to check


def test_export_dir_with_encoder_weights_loads_the_encoder(tmp_path):
    from safetensors.torch import save_file

    mae = _tiny().eval()
    encoder_dir = tmp_path / "image_encoder"  # the layout of `cxrkit export`
    encoder_dir.mkdir()
    save_file(mae.encoder.state_dict(), str(encoder_dir / "model.safetensors"))
    (encoder_dir / "config.json").write_text(json.dumps({"model": mae.config["model"]}))
    with pytest.raises(ArtifactError, match="no manifest.json"):  # nothing to verify against
        load(tmp_path)
    encoder = load(tmp_path, verify=False)
    images = _real_batch(1)
    with torch.no_grad():
        assert torch.equal(encoder.forward_features(images), mae.encoder.forward_features(images))


def test_missing_or_corrupt_checkpoint_files_are_artifact_errors(tmp_path):
    with pytest.raises(ArtifactError, match="config.json"):
        load_objective(tmp_path)
    save_objective(_tiny(), tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ArtifactError, match="corrupt"):
        load_objective(tmp_path)
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(ArtifactError, match="unreadable"):
        load(tmp_path, verify=False)


def test_weights_of_another_model_are_artifact_error(tmp_path):
    save_objective(_tiny(), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["objective_config"]["decoder_depth"] = 2
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="do not fit"):
        load_objective(tmp_path)


def test_realised_ratios_stay_exact_under_bf16_autocast():
    mae = _tiny(masking="contour", mask_ratio_inside=0.9, mask_ratio_outside=0.5)
    contour = torch.zeros(2, 32, 32, dtype=torch.bool)
    contour[:, :24] = True  # 12 of 16 patches inside; K = 4 -> keep 2 inside (1.5 rounds up)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mae.loss({"image": _real_batch(2), "contour": contour})
    assert out["mask_ratio_actual"].dtype == torch.float32
    assert out["mask_ratio_inside_actual"].item() == pytest.approx(10 / 12)
    assert out["mask_ratio_outside_actual"].item() == pytest.approx(2 / 4)
