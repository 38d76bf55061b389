"""Random (MAE) and contour (HD-MAE) masking: exact counts, inverse permutation, seeding."""

from __future__ import annotations

import pytest
import torch

from cxrkit.errors import ConfigError
from cxrkit.objectives.masking import (
    contour_keep_counts,
    contour_masking,
    grid_from_pixel_mask,
    keep_count,
    random_masking,
)


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _inside(counts: list[int], length: int) -> torch.Tensor:
    """Bool (B, L) with the first counts[i] patches of row i inside, then shuffled."""
    rows = []
    for i, count in enumerate(counts):
        row = torch.zeros(length, dtype=torch.bool)
        row[:count] = True
        rows.append(row[torch.randperm(length, generator=_seeded(100 + i))])
    return torch.stack(rows)


def test_keep_count_rounds_instead_of_truncating():
    assert keep_count(196, 0.75) == 49
    assert keep_count(400, 0.9) == 40  # int(400 * (1 - 0.9)) would give 39
    assert keep_count(64, 0.75) == 16


def test_random_masking_keeps_exactly_the_requested_count():
    ids_keep, mask, ids_restore = random_masking(3, 16, 0.75, _seeded(0))
    assert ids_keep.shape == (3, 4) and mask.shape == (3, 16) and ids_restore.shape == (3, 16)
    assert mask.sum(dim=1).tolist() == [12.0, 12.0, 12.0]
    assert torch.all(torch.gather(mask, 1, ids_keep) == 0)


def test_ids_restore_puts_visible_then_mask_tokens_back_in_patch_order():
    ids_keep, mask, ids_restore = random_masking(2, 10, 0.6, _seeded(1))
    tokens = torch.arange(10.0).repeat(2, 1)  # token value = its patch index
    visible = torch.gather(tokens, 1, ids_keep)  # (2, 4)
    fill = torch.full((2, 6), -1.0)  # what the decoder's mask token stands for
    restored = torch.gather(torch.cat([visible, fill], dim=1), 1, ids_restore)
    expected = torch.where(mask.bool(), torch.tensor(-1.0), tokens)
    assert torch.equal(restored, expected)


def test_masks_are_deterministic_under_a_seeded_generator():
    first = random_masking(2, 64, 0.75, _seeded(7))
    again = random_masking(2, 64, 0.75, _seeded(7))
    other = random_masking(2, 64, 0.75, _seeded(8))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[1], other[1])
    inside = _inside([20, 40], 64)
    assert torch.equal(
        contour_masking(inside, 0.9, 0.5, 0.75, _seeded(3))[1],
        contour_masking(inside, 0.9, 0.5, 0.75, _seeded(3))[1],
    )


def test_mask_ratio_of_one_is_config_error():
    with pytest.raises(ConfigError, match="mask_ratio"):
        random_masking(1, 16, 1.0)


def test_contour_keep_counts_follow_the_fixed_k_rule_by_hand():
    # L = 64, mask_ratio 0.75 -> K = 16; r_in 0.9, r_out 0.5.
    inside = _inside([24, 48, 0, 64], 64)
    counts = contour_keep_counts(inside, 0.9, 0.5, 16)
    # 24 in: w_in = 24*0.1 = 2.4, w_out = 40*0.5 = 20 -> 16 * 2.4/22.4 = 1.71 -> 2
    # 48 in: w_in = 4.8, w_out = 16*0.5 = 8 -> 16 * 4.8/12.8 = 6
    # 0 in: all 16 outside; 64 in: all 16 inside (clipped to K)
    assert counts.tolist() == [2, 6, 0, 16]


def test_contour_masking_keeps_exactly_the_counts_inside_and_outside():
    inside = _inside([24, 48, 0, 64, 60], 64)
    expected_in = contour_keep_counts(inside, 0.9, 0.5, 16)
    ids_keep, mask, ids_restore = contour_masking(inside, 0.9, 0.5, 0.75, _seeded(0))
    visible = mask == 0
    assert ids_keep.shape == (5, 16)
    assert (visible & inside).sum(dim=1).tolist() == expected_in.tolist()
    assert (visible & ~inside).sum(dim=1).tolist() == (16 - expected_in).tolist()
    assert torch.all(torch.gather(mask, 1, ids_keep) == 0)
    assert torch.equal(torch.argsort(ids_restore, dim=1)[:, :16], ids_keep)


def test_contour_masking_gives_requested_ratios_at_the_balance_fraction():
    # (mask_ratio - r_out) / (r_in - r_out) = (0.75 - 0.5) / 0.4 = 0.625 -> 40 of 64 inside:
    # keep_in = 16 * 4 / (4 + 12) = 4 -> 36/40 = 0.9 masked inside, 12/24 = 0.5 outside.
    inside = _inside([40], 64)
    _, mask, _ = contour_masking(inside, 0.9, 0.5, 0.75, _seeded(0))
    assert mask[inside].mean().item() == pytest.approx(0.9)
    assert mask[~inside].mean().item() == pytest.approx(0.5)


def test_contour_masking_picks_uniformly_within_the_inside_region():
    # Over many draws every inside patch is kept about equally often.
    inside = _inside([32], 64).repeat(400, 1)
    _, mask, _ = contour_masking(inside, 0.8, 0.6, 0.75, _seeded(5))
    kept_rate = (1 - mask)[:, inside[0]].mean(dim=0)  # (32,)
    expected = contour_keep_counts(inside[:1], 0.8, 0.6, 16).item() / 32
    assert torch.allclose(kept_rate, torch.full_like(kept_rate, expected), atol=0.08)


def test_grid_from_pixel_mask_counts_a_patch_inside_at_half_its_pixels():
    contour = torch.zeros(1, 4, 4, dtype=torch.bool)
    contour[0, 0, 0:2] = True  # top-left patch: 2 of 4 pixels -> inside
    contour[0, 0, 2] = True  # top-right patch: 1 of 4 pixels -> outside
    contour[0, 2:, 2:] = True  # bottom-right patch: 4 of 4 -> inside
    assert grid_from_pixel_mask(contour, 2).tolist() == [[True, False, False, True]]


def test_contour_keep_counts_round_exact_halves_up():
    # 12 of 16 inside, K = 4, r_in 0.9, r_out 0.5: 4 * 1.2 / (1.2 + 2) = 1.5 -> 2 (not 1,
    # which float error in 1 - 0.9 and round-half-to-even would give).
    inside = torch.zeros(1, 16, dtype=torch.bool)
    inside[0, :12] = True
    assert contour_keep_counts(inside, 0.9, 0.5, 4).tolist() == [2]
