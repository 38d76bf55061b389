"""Lightweight decoders for masked-image objectives.

:class:`MAEDecoder` follows He et al. 2022 (MAE): a linear map from encoder to
decoder width, a shared learned mask token for every removed patch, fixed 2-D
sin-cos positions, a few transformer blocks and a linear head to the pixels of
each patch. It is used only during pretraining and is not exported.
"""

from __future__ import annotations

import torch
from torch import nn

from cxrkit.errors import ConfigError
from cxrkit.models.vision import sincos_pos_embed_2d


def check_decoder_width(decoder_dim: int, decoder_heads: int) -> None:
    """The [objective] check every MAEDecoder user shares: the width splits into heads and
    into the 4 quarters of the 2-D sin-cos table. Raises ConfigError naming the settings."""
    if decoder_dim % decoder_heads or decoder_dim % 4:
        raise ConfigError(
            f"objective.decoder_dim {decoder_dim} must be divisible by "
            f"decoder_heads ({decoder_heads}) and by 4 (sin-cos positions)"
        )


class MAEDecoder(nn.Module):
    """Reconstruct every patch from the visible-token encoding.

    Args:
        grid: (rows, cols) of the patch grid.
        encoder_dim: width of the encoder tokens.
        decoder_dim: width inside the decoder (MAE: 512).
        depth: number of transformer blocks (MAE: 8).
        num_heads: attention heads (MAE: 16).
        patch_pixels: outputs per patch, patch_size**2 * channels.
        num_prefix_tokens: leading encoder tokens that are not patches (class,
            registers); they pass through the decoder with a zero position.
    """

    def __init__(
        self,
        grid: tuple[int, int],
        encoder_dim: int,
        decoder_dim: int,
        depth: int,
        num_heads: int,
        patch_pixels: int,
        num_prefix_tokens: int = 1,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        if decoder_dim % num_heads:
            raise ValueError(f"decoder_dim {decoder_dim} is not divisible by heads {num_heads}")
        self.grid = tuple(grid)
        self.num_prefix_tokens = num_prefix_tokens
        self.embed = nn.Linear(encoder_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        # Fixed, so a buffer; not saved, as it is recomputed from the grid.
        self.register_buffer(
            "pos_embed", sincos_pos_embed_2d(decoder_dim, self.grid)[None], persistent=False
        )  # (1, L, d)
        self.blocks = nn.Sequential(
            *[
                Block(decoder_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True)
                for _ in range(depth)
            ]
        )
        self.norm = nn.LayerNorm(decoder_dim)
        self.head = nn.Linear(decoder_dim, patch_pixels)
        self._init_weights()

    def _init_weights(self) -> None:
        # MAE's choice: xavier-uniform linears, unit LayerNorms, small normal mask token.
        nn.init.normal_(self.mask_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Predict the pixels of every patch.

        Takes: latent (B, P + K, D_enc) from the encoder (P prefix tokens first,
        then the K visible patches in ``ids_keep`` order) and ids_restore (B, L).
        Returns: (B, L, patch_pixels) in the original patch order.
        """
        x = self.embed(latent)  # (B, P + K, d)
        prefix, visible = x[:, : self.num_prefix_tokens], x[:, self.num_prefix_tokens :]
        batch, num_visible, width = visible.shape
        num_patches = ids_restore.shape[1]
        fill = self.mask_token.expand(batch, num_patches - num_visible, width)
        x = torch.cat([visible, fill.to(visible.dtype)], dim=1)  # (B, L, d), shuffled order
        index = ids_restore.unsqueeze(-1).expand(-1, -1, width)
        x = torch.gather(x, 1, index)  # (B, L, d), original order
        x = x + self.pos_embed.to(x.dtype)
        x = torch.cat([prefix, x], dim=1)  # (B, P + L, d)
        x = self.norm(self.blocks(x))
        return self.head(x[:, self.num_prefix_tokens :])  # (B, L, patch_pixels)
