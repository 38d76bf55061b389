"""Train/eval transforms: determinism, image-mask alignment, letterbox geometry, scaling."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cxrkit.config import from_dict
from cxrkit.errors import ConfigError, InputError
from cxrkit.vision.normalise import CXR_MEAN, CXR_STD
from cxrkit.vision.transforms import (
    AugmentConfig,
    EvalTransform,
    TrainTransform,
    _box_reduce,
    to_unit,
)

# Geometry only: no photometric jitter, so an image equal to the mask stays binary.
NO_JITTER = AugmentConfig(brightness=0.0, contrast=0.0)
# Letterbox only: the train transform then reduces to the eval geometry.
IDENTITY = AugmentConfig(
    scale_min=1.0, ratio_min=1.0, ratio_max=1.0, rotate_deg=0.0, translate=0.0,
    brightness=0.0, contrast=0.0,
)  # fmt: skip


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _blob_mask(height: int, width: int) -> torch.Tensor:
    """An off-centre ellipse plus a bar: asymmetric, so misalignment would show."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ellipse = ((ys - 0.4 * height) / (0.25 * height)) ** 2 + (
        (xs - 0.35 * width) / (0.2 * width)
    ) ** 2 < 1
    bar = (ys > 0.7 * height) & (ys < 0.8 * height) & (xs > 0.5 * width)
    return ellipse | bar


def test_constants_map_unit_range_to_minus_one_one():
    assert (0.0 - CXR_MEAN) / CXR_STD == -1.0
    assert (1.0 - CXR_MEAN) / CXR_STD == 1.0


def test_same_seed_gives_same_output():
    image = torch.randint(0, 256, (120, 90), dtype=torch.uint8)
    mask = _blob_mask(120, 90)
    transform = TrainTransform(AugmentConfig(), 48)
    first, first_mask = transform(image, mask, _gen(3))
    second, second_mask = transform(image, mask, _gen(3))
    assert torch.equal(first, second)
    assert torch.equal(first_mask, second_mask)


def test_different_seeds_give_different_outputs():
    image = torch.randint(0, 256, (120, 90), dtype=torch.uint8)
    transform = TrainTransform(AugmentConfig(), 48)
    first, _ = transform(image, None, _gen(1))
    second, _ = transform(image, None, _gen(2))
    assert not torch.equal(first, second)


@pytest.mark.parametrize("shape", [(300, 220), (180, 260), (64, 64)])
def test_mask_stays_aligned_with_image(shape):
    mask = _blob_mask(*shape)
    image = mask.to(torch.uint8) * 255  # the image *is* the mask
    transform = TrainTransform(dataclasses.replace(NO_JITTER, rotate_deg=25.0), 64)
    for seed in range(8):
        out, out_mask = transform(image, mask, _gen(seed))
        from_image = out[0] > 0.0  # mid-grey threshold of the bilinear image
        agreement = (from_image == out_mask).float().mean().item()
        assert agreement > 0.98, (seed, agreement)
        assert out_mask.any()


def test_identity_augment_matches_eval_letterbox():
    # 160 x 96 -> 40 x 24 content padded by 8 columns each side: whole pixels both ways
    mask = _blob_mask(160, 96)
    image = mask.to(torch.uint8) * 200 + 20
    train_out, train_mask = TrainTransform(IDENTITY, 40)(image, mask, _gen(0))
    eval_out, eval_mask = EvalTransform(40)(image, mask)
    padding = torch.cat([train_out[0, :, :8], train_out[0, :, 32:]], dim=1)
    assert torch.allclose(padding, torch.full_like(padding, -1.0), atol=1e-6)
    assert (train_mask == eval_mask).float().mean().item() > 0.995
    assert (train_out - eval_out).abs().mean().item() < 0.05


def test_hflip_is_off_by_default():
    assert AugmentConfig().hflip is False
    image = torch.zeros(64, 64, dtype=torch.uint8)
    image[:, :32] = 255  # bright left half
    transform = TrainTransform(AugmentConfig(), 32)
    for seed in range(20):
        out, _ = transform(image, None, _gen(seed))
        assert out[0, :, :16].mean() > out[0, :, 16:].mean()


def test_hflip_on_flips_about_half_the_time():
    image = torch.zeros(64, 64, dtype=torch.uint8)
    image[:, :32] = 255
    transform = TrainTransform(dataclasses.replace(NO_JITTER, hflip=True), 32)
    flipped = 0
    for seed in range(40):
        out, _ = transform(image, None, _gen(seed))
        flipped += int(out[0, :, :16].mean() < out[0, :, 16:].mean())
    assert 8 <= flipped <= 32


def test_train_output_shape_range_and_dtype():
    image = torch.randint(0, 65536, (200, 160), dtype=torch.int32).to(torch.uint16)
    out, out_mask = TrainTransform(AugmentConfig(), 40)(image, _blob_mask(200, 160), _gen(0))
    assert out.shape == (1, 40, 40) and out.dtype == torch.float32
    assert out.min() >= -1.0 and out.max() <= 1.0
    assert out_mask.shape == (40, 40) and out_mask.dtype == torch.bool


def test_train_without_contour_returns_none():
    _, out_mask = TrainTransform(AugmentConfig(), 16)(
        torch.zeros(20, 20, dtype=torch.uint8), None, _gen(0)
    )
    assert out_mask is None


def test_uint16_is_scaled_by_65535():
    full = torch.full((40, 40), 65535, dtype=torch.int32).to(torch.uint16)
    half = torch.full((40, 40), 32768, dtype=torch.int32).to(torch.uint16)
    assert EvalTransform(16)(full)[0].min().item() == pytest.approx(1.0)
    assert EvalTransform(16)(half)[0].mean().item() == pytest.approx(
        32768 / 65535 * 2 - 1, abs=1e-5
    )
    unit = to_unit(np.array([[0, 65535]], dtype=np.uint16))
    assert unit.tolist() == [[0.0, 1.0]]


def test_uint8_is_scaled_by_255():
    unit = to_unit(torch.tensor([[0, 51, 255]], dtype=torch.uint8))
    assert unit[0].tolist() == pytest.approx([0.0, 0.2, 1.0])


def test_eval_pads_non_square_input_with_black():
    image = torch.full((100, 50), 255, dtype=torch.uint8)  # tall: 32 x 16 after the resize
    mask = torch.ones(100, 50, dtype=torch.bool)
    out, out_mask = EvalTransform(32)(image, mask)
    assert out.shape == (1, 32, 32)
    assert torch.allclose(out[0, :, 8:24], torch.ones(32, 16))  # content centred: columns 8..23
    assert torch.all(out[0, :, :8] == -1.0) and torch.all(out[0, :, 24:] == -1.0)
    assert out_mask[:, 8:24].all() and not out_mask[:, :8].any() and not out_mask[:, 24:].any()


def test_eval_keeps_aspect_of_wide_input():
    image = torch.full((30, 90), 255, dtype=torch.uint8)  # wide: 10 x 30 after the resize
    out, _ = EvalTransform(30)(image)
    assert torch.allclose(out[0, 10:20, :], torch.ones(10, 30))
    assert torch.all(out[0, :10, :] == -1.0) and torch.all(out[0, 20:, :] == -1.0)


def test_eval_ignores_the_generator():
    image = torch.randint(0, 256, (50, 40), dtype=torch.uint8)
    first, _ = EvalTransform(24)(image, None, _gen(1))
    second, _ = EvalTransform(24)(image, None, _gen(2))
    assert torch.equal(first, second)


def test_jitter_keeps_padding_black():
    image = torch.full((100, 50), 128, dtype=torch.uint8)
    cfg = dataclasses.replace(IDENTITY, brightness=0.5, contrast=0.5)
    for seed in range(5):
        out, _ = TrainTransform(cfg, 32)(image, None, _gen(seed))
        assert torch.all(out[0, :, :6] == -1.0) and torch.all(out[0, :, 26:] == -1.0)


def test_brightness_jitter_changes_the_content():
    image = torch.full((64, 64), 128, dtype=torch.uint8)
    cfg = dataclasses.replace(IDENTITY, brightness=0.2)
    means = {
        round(TrainTransform(cfg, 16)(image, None, _gen(s))[0][0, 4:12, 4:12].mean().item(), 3)
        for s in range(6)
    }
    assert len(means) > 3
    assert all(abs(m - (128 / 255 * 2 - 1)) <= 0.4 + 1e-6 for m in means)  # +-0.2 in [0, 1] units


def test_box_reduce_hand_computed():
    values = torch.tensor(
        [[0.0, 2.0, 4.0, 6.0, 9.0], [2.0, 4.0, 6.0, 8.0, 9.0], [1.0, 1.0, 3.0, 3.0, 9.0]]
    )
    # 2x2 blocks; the odd last row and column are dropped
    assert _box_reduce(values, 2, 0.5).tolist() == [[1.0, 3.0]]


def test_float_input_is_clamped_and_nan_is_black():
    image = torch.tensor([[float("nan"), -1.0], [0.5, 2.0]])
    assert to_unit(image).tolist() == [[0.0, 0.0], [0.5, 1.0]]


def test_unsupported_dtype_raises_input_error():
    with pytest.raises(InputError, match="uint8 or uint16"):
        EvalTransform(8)(torch.zeros(10, 10, dtype=torch.int32))


def test_mismatched_contour_raises_input_error():
    with pytest.raises(InputError, match="does not match"):
        TrainTransform(AugmentConfig(), 8)(
            torch.zeros(10, 10, dtype=torch.uint8), torch.zeros(9, 10, dtype=torch.bool), _gen(0)
        )


def test_colour_image_raises_input_error():
    with pytest.raises(InputError, match=r"\(H, W\)"):
        EvalTransform(8)(torch.zeros(3, 10, 10, dtype=torch.uint8))


def test_bad_augment_values_raise_config_error():
    with pytest.raises(ConfigError, match="scale_min"):
        AugmentConfig(scale_min=0.9, scale_max=0.5)
    with pytest.raises(ConfigError, match="rotate_deg"):
        from_dict(AugmentConfig, {"rotate_deg": -5})


def test_every_augment_field_is_documented():
    assert all(f.metadata.get("help") for f in dataclasses.fields(AugmentConfig))


def test_theta_of_a_quarter_turn_is_hand_computed():
    cfg = AugmentConfig(scale_min=1.0, ratio_min=1.0, ratio_max=1.0, rotate_deg=90.0, translate=0.1)
    transform = TrainTransform(cfg, 8)
    # draws: area, ratio, angle=+90 deg, shift x=+0.2, shift y=-0.2, flip, contrast,
    # brightness, placement x, placement y (no room to place a full-size crop)
    theta = transform._theta(100, 50, [0.0, 0.5, 1.0, 1.0, 0.0, 0.0, 0.5, 0.5, 1.0, 1.0])
    # frame: the long side (100 rows) spans [-1, 1], so x is stretched by 100 / 50 = 2
    expected = [[0.0, -2.0, 0.4], [1.0, 0.0, -0.2]]
    for row, want in zip(theta, expected, strict=True):
        assert row == pytest.approx(want, abs=1e-9)


def test_small_crop_is_placed_inside_the_image():
    cfg = AugmentConfig(
        scale_min=0.25, scale_max=0.25, ratio_min=1.0, ratio_max=1.0, rotate_deg=0.0,
        translate=0.0,
    )  # fmt: skip
    transform = TrainTransform(cfg, 8)
    # a half-size crop (half-extent 0.5) of a square image may move +-0.5: here to the corner
    theta = transform._theta(64, 64, [0.0, 0.5, 0.5, 0.5, 0.5, 0.0, 0.5, 0.5, 1.0, 0.0])
    assert theta[0] == pytest.approx([0.5, 0.0, 0.5])
    assert theta[1] == pytest.approx([0.0, 0.5, -0.5])
