"""Vision encoders: a 1-channel timm ViT plus the helpers MAE-style objectives need.

The encoder is a plain ``timm`` ``VisionTransformer`` built with ``num_classes=0``
and never pretrained from a hub, so an exported state_dict loads straight back
into ``timm.create_model(arch, img_size=..., patch_size=..., in_chans=1)``.
Masked objectives run the same modules on the visible tokens only
(:func:`encode_visible`); with every token visible that equals timm's own
``forward_features`` (tested).

Patch order everywhere is row-major over the patch grid: patch ``i`` sits at
grid row ``i // grid_w`` and column ``i % grid_w``, as timm's ``PatchEmbed``
flattens it. Inside a patch, pixels are row-major then channel:
``(p_row, p_col, channel)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from cxrkit.errors import ConfigError

if TYPE_CHECKING:
    from cxrkit.models.tower_configs import VisionConfig


def build_vision_encoder(cfg: VisionConfig) -> nn.Module:
    """Build the timm ViT described by ``cfg`` (random init, no classifier head).

    Takes: a VisionConfig. Returns: a ``timm.models.VisionTransformer`` whose
    ``forward_features`` maps (B, in_chans, S, S) to (B, prefix + L, D).
    Raises: ConfigError for an unknown arch, an arch that is not a plain ViT,
    or sizes timm rejects.
    """
    import timm
    from timm.models.vision_transformer import VisionTransformer

    cfg.validate()
    overrides = {
        k: getattr(cfg, k)
        for k in ("depth", "embed_dim", "num_heads")
        if getattr(cfg, k) is not None
    }
    if not timm.is_model(cfg.arch):
        close = timm.list_models(f"*{cfg.arch.split('_')[0]}*")[:5]
        raise ConfigError(f"model.arch {cfg.arch!r} is not a timm model; e.g. {', '.join(close)}")
    try:
        model = timm.create_model(
            cfg.arch,
            pretrained=False,
            num_classes=0,
            img_size=cfg.image_size,
            patch_size=cfg.patch_size,
            in_chans=cfg.in_chans,
            drop_path_rate=cfg.drop_path_rate,
            **overrides,
        )
    except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
        raise ConfigError(
            f"model.arch {cfg.arch!r}: timm cannot build it with {cfg} ({exc}); model.arch "
            "must name a timm VisionTransformer (vit_*) that accepts img_size and patch_size"
        ) from exc
    if not isinstance(model, VisionTransformer):
        raise ConfigError(
            f"model.arch {cfg.arch!r} is a {type(model).__name__}, not a plain "
            "timm VisionTransformer; masked objectives need one (vit_*)"
        )
    if getattr(model, "dynamic_img_size", False):
        raise ConfigError(f"model.arch {cfg.arch!r} uses dynamic image size; not supported")
    return model


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images into flattened patches.

    Takes: (B, C, H, W) with H and W multiples of ``patch_size``.
    Returns: (B, L, patch_size**2 * C), patches row-major over the grid, pixels
    ordered (p_row, p_col, channel).
    """
    batch, chans, height, width = images.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"image {height}x{width} is not a multiple of patch {patch_size}")
    rows, cols = height // patch_size, width // patch_size
    x = images.reshape(batch, chans, rows, patch_size, cols, patch_size)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, rows, cols, p, p, C)
    return x.reshape(batch, rows * cols, patch_size * patch_size * chans)


def unpatchify(
    patches: torch.Tensor, patch_size: int, grid: tuple[int, int] | None = None, chans: int = 1
) -> torch.Tensor:
    """Inverse of :func:`patchify`.

    Takes: (B, L, patch_size**2 * chans) and the (rows, cols) grid (square when None).
    Returns: (B, chans, rows * patch_size, cols * patch_size).
    """
    batch, length, width = patches.shape
    if width != patch_size * patch_size * chans:
        raise ValueError(f"patch width {width} != {patch_size}^2 * {chans}")
    if grid is None:
        side = int(round(length**0.5))
        grid = (side, side)
    rows, cols = grid
    if rows * cols != length:
        raise ValueError(f"{length} patches do not fill a {rows}x{cols} grid")
    x = patches.reshape(batch, rows, cols, patch_size, patch_size, chans)
    x = x.permute(0, 5, 1, 3, 2, 4)  # (B, C, rows, p, cols, p)
    return x.reshape(batch, chans, rows * patch_size, cols * patch_size)


def sincos_pos_embed_2d(embed_dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embeddings (as in MAE), one row per patch.

    Channel order is MAE's (``util/pos_embed.py`` in facebookresearch/mae): the
    first half of the channels encodes the grid COLUMN (x), the second half the
    row (y), so that MAE and ImageNet-MAE weights see the positions they were
    trained with. Each half is [sin(pos * w_k), cos(pos * w_k)] with
    w_k = 1 / 10000 ** (k / (embed_dim / 4)), k = 0 .. embed_dim/4 - 1.
    Takes: ``embed_dim`` divisible by 4 and the (rows, cols) grid.
    Returns: float32 (rows * cols, embed_dim), row-major over the grid.
    """
    if embed_dim % 4:
        raise ValueError(f"sin-cos position embedding needs embed_dim % 4 == 0, got {embed_dim}")
    rows, cols = grid
    quarter = embed_dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    row_pos = torch.arange(rows, dtype=torch.float64).repeat_interleave(cols)  # (L,)
    col_pos = torch.arange(cols, dtype=torch.float64).repeat(rows)  # (L,)

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos[:, None] * omega[None, :]  # (L, D/4)
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # (L, D/2)

    return torch.cat([encode(col_pos), encode(row_pos)], dim=1).float()  # column first, as MAE


def set_sincos_pos_embed(encoder: nn.Module, freeze: bool = True) -> None:
    """Overwrite a timm ViT's learned position embedding with fixed 2-D sin-cos.

    MAE uses fixed sin-cos embeddings in the encoder; prefix tokens (class,
    registers) that carry a position slot get zeros. The parameter stays in the
    state_dict, so the exported timm model still loads with its usual keys.
    """
    pos_embed = getattr(encoder, "pos_embed", None)
    if pos_embed is None:
        return
    grid = tuple(encoder.patch_embed.grid_size)
    table = sincos_pos_embed_2d(pos_embed.shape[-1], grid)  # (L, D)
    num_slots = pos_embed.shape[1]
    prefix_slots = num_slots - table.shape[0]
    with torch.no_grad():
        pos_embed.zero_()
        pos_embed[0, prefix_slots:] = table.to(pos_embed.dtype)
    pos_embed.requires_grad_(not freeze)


def _patch_and_prefix_pos(encoder: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Split timm's pos_embed into the prefix-token part and the patch part.

    timm has two layouts: by default pos_embed has a slot per prefix token
    (class, registers) and is added after concatenation; with ``no_embed_class``
    it covers patches only and prefix tokens get no position.
    """
    pos_embed = encoder.pos_embed
    if pos_embed is None:
        return None, None
    if encoder.no_embed_class:
        return None, pos_embed  # (1, L, D)
    prefix = encoder.num_prefix_tokens
    return pos_embed[:, :prefix], pos_embed[:, prefix:]  # (1, P, D), (1, L, D)


def prefix_tokens(encoder: nn.Module, batch: int) -> torch.Tensor | None:
    """The class / register tokens of a timm ViT with their positions, or None: (B, P, D)."""
    tokens = []
    if encoder.cls_token is not None:
        tokens.append(encoder.cls_token.expand(batch, -1, -1))
    if getattr(encoder, "reg_token", None) is not None:
        tokens.append(encoder.reg_token.expand(batch, -1, -1))
    if not tokens:
        return None
    prefix = torch.cat(tokens, dim=1)  # (B, P, D)
    prefix_pos, _ = _patch_and_prefix_pos(encoder)
    return prefix + prefix_pos if prefix_pos is not None else prefix


def encode_visible(
    encoder: nn.Module, images: torch.Tensor, ids_keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Run a timm ViT on the visible patches only (MAE encoder pass).

    Takes: the encoder, images (B, C, H, W) at the encoder's size, and ids_keep
    (B, K) patch indices to keep (None = all patches, in order).
    Returns: (B, P + K, D) normed tokens, the P prefix tokens first. With
    ids_keep None this equals ``encoder.forward_features(images)``.
    """
    x = encoder.patch_embed(images)
    if x.ndim == 4:  # patch embed that keeps the grid: (B, rows, cols, D)
        x = x.flatten(1, 2)
    _, patch_pos = _patch_and_prefix_pos(encoder)
    if patch_pos is not None:
        x = x + patch_pos  # (B, L, D)
    if ids_keep is not None:
        index = ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1])
        x = torch.gather(x, 1, index)  # (B, K, D)
    prefix = prefix_tokens(encoder, x.shape[0])
    if prefix is not None:
        x = torch.cat([prefix, x], dim=1)  # (B, P + K, D)
    # patch_drop is left out on purpose: the masking above replaces it.
    x = encoder.pos_drop(x)
    x = encoder.norm_pre(x)
    x = encoder.blocks(x)
    return encoder.norm(x)
