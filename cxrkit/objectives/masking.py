"""Which patches a masked-image objective hides.

Both functions return the MAE triple:

- ``ids_keep`` (B, K) long: indices of the visible patches, fed to the encoder;
- ``mask`` (B, L) float: 1 = masked (to reconstruct), 0 = visible;
- ``ids_restore`` (B, L) long: the permutation that puts [visible, masked]
  tokens back in patch order (``gather(shuffled, 1, ids_restore)``).

K is the same for every image of a batch, so the encoder runs batched
attention without padding.

Random masking (He et al. 2022, MAE §3 "Masking", "MAE encoder"): sort uniform
noise per image and keep the patches with the smallest noise.

Contour masking (HD-MAE, Wang et al., §III-B "Context-Aware Masking"): tokens
inside the chest contour are masked "with a higher probability" than those
outside. The paper gives no numbers and does not say how it keeps batches
rectangular, so cxrkit fixes the rule (see :func:`contour_keep_counts`).
"""

from __future__ import annotations

import torch

from cxrkit.errors import ConfigError


def keep_count(num_patches: int, mask_ratio: float) -> int:
    """Visible patches for a mask ratio: round(L * (1 - mask_ratio)), at least 1.

    Rounding (not truncation) so that e.g. 400 * (1 - 0.9) gives 40, not 39 from
    floating-point error.
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ConfigError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    return max(1, min(num_patches, round(num_patches * (1.0 - mask_ratio))))


def _noise(
    shape: tuple[int, int], generator: torch.Generator | None, device: torch.device | str | None
) -> torch.Tensor:
    # Draw on the generator's device so a CPU generator gives the same masks on any device.
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def _from_keep_order(
    order: torch.Tensor, num_keep: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids_keep, mask, ids_restore) from a per-image ordering with the kept patches first."""
    batch, num_patches = order.shape
    ids_restore = torch.argsort(order, dim=1)  # (B, L)
    ids_keep = order[:, :num_keep]  # (B, K)
    mask = torch.ones(batch, num_patches, device=order.device)
    mask[:, :num_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)  # (B, L), back in patch order
    return ids_keep, mask, ids_restore


def random_masking(
    batch_size: int,
    num_patches: int,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask ``mask_ratio`` of the patches of each image uniformly at random.

    Takes: batch size B, patches per image L, the ratio in [0, 1), an optional
    seeded generator (same seed -> same masks) and the output device.
    Returns: (ids_keep (B, K), mask (B, L), ids_restore (B, L)),
    K = :func:`keep_count` (L, mask_ratio).
    Raises: ConfigError for a ratio outside [0, 1).
    """
    num_keep = keep_count(num_patches, mask_ratio)
    noise = _noise((batch_size, num_patches), generator, device)  # (B, L)
    order = torch.argsort(noise, dim=1)  # smallest noise first = kept
    return _from_keep_order(order, num_keep)


def contour_keep_counts(
    inside: torch.Tensor, ratio_inside: float, ratio_outside: float, num_keep: int
) -> torch.Tensor:
    """Visible patches inside the contour per image under cxrkit's fixed-K rule.

    Rule: every image keeps exactly ``num_keep`` = K patches (from the overall
    ``mask_ratio``), so the batch stays rectangular. They are split between the
    n_in inside and n_out outside patches in proportion to the keep rates the
    two ratios ask for:

        keep_in = round_half_up(K * n_in (1 - r_in) / (n_in (1 - r_in) + n_out (1 - r_out)))

    clipped to what exists, max(0, K - n_out) <= keep_in <= min(n_in, K); the
    rest, K - keep_in, is kept outside. An inside patch thus stays visible
    (1 - r_in) / (1 - r_out) times as often as an outside one, and the realised
    ratios equal the requested ones exactly when the contour covers the
    fraction (mask_ratio - r_out) / (r_in - r_out) of the patches. An image with
    no contour (all False) falls back to random masking with K visible.
    Takes: inside bool (B, L). Returns: long (B,) visible-inside counts.
    """
    n_in = inside.sum(dim=1).to(torch.float64)  # (B,)
    n_out = inside.shape[1] - n_in
    weight_in = n_in * (1.0 - ratio_inside)
    weight_out = n_out * (1.0 - ratio_outside)
    total = weight_in + weight_out
    # Both weights zero (e.g. everything inside with r_in = 1): split by area instead.
    share = torch.where(total > 0, weight_in / total.clamp_min(1e-12), n_in / inside.shape[1])
    # Round half up, with a little slack so that float error in (1 - r) cannot
    # turn an exact half (e.g. 1.5) into 1.4999999 and flip the result.
    keep_in = torch.floor(num_keep * share + 0.5 + 1e-9)
    low = (num_keep - n_out).clamp_min(0)
    high = n_in.clamp_max(num_keep)
    return torch.minimum(torch.maximum(keep_in, low), high).long()


def _rank_within(noise: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """Rank (0 = smallest noise) of each member patch among the members of its image."""
    key = noise + 2.0 * (~members).to(noise.dtype)  # non-members sort after all members
    return torch.argsort(torch.argsort(key, dim=1), dim=1)  # (B, L)


def contour_masking(
    inside: torch.Tensor,
    ratio_inside: float,
    ratio_outside: float,
    mask_ratio: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask patches inside and outside the chest contour at different rates.

    Takes: inside bool (B, L), True for patches in the contour (a patch is
    inside when >= half its pixels are); ratio_inside / ratio_outside in
    [0, 1]; mask_ratio in [0, 1) fixing the visible count K for the whole
    batch; an optional seeded generator.
    Returns: (ids_keep (B, K), mask (B, L), ids_restore (B, L)) as
    :func:`random_masking`; per image exactly ``contour_keep_counts`` patches
    are visible inside and K minus that outside, chosen uniformly within each region.
    Raises: ConfigError for ratios out of range.
    """
    for name, value in (("mask_ratio_inside", ratio_inside), ("mask_ratio_outside", ratio_outside)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name} must be in [0, 1], got {value}")
    inside = inside.bool()
    num_patches = inside.shape[1]
    num_keep = keep_count(num_patches, mask_ratio)
    keep_in = contour_keep_counts(inside, ratio_inside, ratio_outside, num_keep)  # (B,)
    keep_out = num_keep - keep_in
    noise = _noise(tuple(inside.shape), generator, inside.device)  # (B, L)
    visible = torch.where(
        inside,
        _rank_within(noise, inside) < keep_in[:, None],
        _rank_within(noise, ~inside) < keep_out[:, None],
    )  # (B, L)
    # Kept patches first (ordered by noise), then masked ones.
    order = torch.argsort(noise + 2.0 * (~visible).to(noise.dtype), dim=1)
    return _from_keep_order(order, num_keep)


def grid_from_pixel_mask(contour: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Downsample a pixel contour mask to the patch grid.

    A patch counts as inside when at least half of its pixels are (the same
    rule as ``cxrkit.vision.masks.mask_to_grid``).
    Takes: bool (B, H, W). Returns: bool (B, L), row-major over the grid.
    """
    batch, height, width = contour.shape
    rows, cols = height // patch_size, width // patch_size
    blocks = contour[:, : rows * patch_size, : cols * patch_size].float()
    blocks = blocks.reshape(batch, rows, patch_size, cols, patch_size)
    return (blocks.mean(dim=(2, 4)) >= 0.5).reshape(batch, rows * cols)
