"""MAE: masked autoencoder pretraining of a 1-channel ViT (He et al. 2022).

The encoder (a timm ViT) sees only the visible patches; a small decoder gets
the encoded tokens plus a mask token per hidden patch and predicts every
patch's pixels; the loss is the mean squared error over the hidden patches only,
optionally against per-patch normalised pixels (``norm_pix_loss``).

``masking = "contour"`` is the context-aware masking of HD-MAE (Wang et al.,
§III-B): patches inside the chest contour are hidden at ``mask_ratio_inside``,
those outside at ``mask_ratio_outside``, with every image keeping the same
number of visible patches (rule in :mod:`cxrkit.objectives.masking`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch

from cxrkit.config import doc
from cxrkit.errors import ConfigError, InputError
from cxrkit.models.decoders import MAEDecoder, check_decoder_width
from cxrkit.models.tower_configs import VisionConfig
from cxrkit.models.vision import (
    build_vision_encoder,
    encode_visible,
    patchify,
    set_sincos_pos_embed,
    unpatchify,
)
from cxrkit.objectives.base import Objective, register
from cxrkit.objectives.capabilities import RECONSTRUCTION
from cxrkit.objectives.masking import contour_masking, grid_from_pixel_mask, random_masking

NORM_PIX_EPS = 1e-6  # MAE: (target - mean) / sqrt(var + 1e-6)


@dataclass
class MAEConfig:
    """Settings of the MAE objective (the ``[model]`` table plus ``[objective]``)."""

    model: VisionConfig = dataclasses.field(
        default_factory=VisionConfig, metadata={"help": "the image encoder (the [model] table)"}
    )
    mask_ratio: float = doc(
        "fraction of patches hidden per image; with contour masking it "
        "fixes how many stay visible (the same for every image)",
        0.75,
    )
    masking: Literal["random", "contour"] = doc(
        "random: uniform (MAE); contour: separate ratios inside/outside the chest contour "
        "(HD-MAE), needs an annotations artifact",
        "random",
    )
    mask_ratio_inside: float | None = doc(
        "contour masking: requested ratio inside the chest contour (required for contour)", None
    )
    mask_ratio_outside: float | None = doc(
        "contour masking: requested ratio outside the chest contour (required for contour)", None
    )
    norm_pix_loss: bool = doc("regress per-patch normalised pixels (mean 0, var 1 per patch)", True)
    decoder_dim: int = doc("decoder token width", 512)
    decoder_depth: int = doc("decoder transformer blocks", 8)
    decoder_heads: int = doc("decoder attention heads", 16)

    def validate(self) -> None:
        """Raise ConfigError on inconsistent settings."""
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ConfigError(f"objective.mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.masking == "contour":
            for name in ("mask_ratio_inside", "mask_ratio_outside"):
                value = getattr(self, name)
                if value is None:
                    raise ConfigError(
                        f"objective.masking = 'contour' needs objective.{name}; "
                        f"set it (e.g. --set objective.{name}=0.8) or use a preset "
                        "such as hd-mae"
                    )
                if not 0.0 <= value <= 1.0:
                    raise ConfigError(f"objective.{name} must be in [0, 1], got {value}")
        if self.decoder_depth < 1 or self.decoder_heads < 1:
            raise ConfigError("objective.decoder_depth and objective.decoder_heads must be >= 1")
        check_decoder_width(self.decoder_dim, self.decoder_heads)


def masked_patch_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix_loss: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The MAE reconstruction loss and the pixel-space MSE on masked patches.

    Takes: pred (B, L, N) and target (B, L, N) patches (N pixels each), mask
    (B, L) with 1 = masked. With ``norm_pix_loss`` each target patch is
    normalised by its own mean and unbiased variance, (t - mean) / sqrt(var + 1e-6),
    as in MAE.
    Returns: (loss, mse_pixels). loss = sum over masked patches of the per-patch
    mean squared error, divided by the number of masked patches (visible
    patches do not count). mse_pixels is the same average in the target's own
    pixel space (prediction mapped back with each patch's mean/std when
    normalised), detached.
    """
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        std = (target.var(dim=-1, keepdim=True) + NORM_PIX_EPS).sqrt()
        goal = (target - mean) / std
        pixel_pred = (pred * std + mean).detach()
    else:
        goal, pixel_pred = target, pred.detach()
    denom = mask.sum().clamp_min(1.0)
    per_patch = ((pred - goal) ** 2).mean(dim=-1)  # (B, L)
    loss = (per_patch * mask).sum() / denom
    pixel_err = ((pixel_pred - target) ** 2).mean(dim=-1)  # (B, L)
    return loss, (pixel_err * mask).sum() / denom


@register("mae")
class MAE(Objective):
    """Masked autoencoder over a timm ViT; the exported encoder is ``self.encoder``."""

    Config = MAEConfig
    image_encoder_prefix = "encoder."
    capabilities = frozenset({RECONSTRUCTION})

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        """A 2-block ViT on 32 px images with a 1-block decoder (CPU tests)."""
        model = {"arch": "vit_tiny_patch16_224", "image_size": 32, "patch_size": 8, "depth": 2}
        return {"model": model, "decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2}

    def __init__(self, config: MAEConfig | dict[str, Any]) -> None:
        super().__init__(config)
        cfg: MAEConfig = self.cfg
        self.patch_size = cfg.model.patch_size
        self.grid = cfg.model.grid_size
        self.encoder = build_vision_encoder(cfg.model)
        set_sincos_pos_embed(self.encoder)  # fixed positions, as MAE
        self.decoder = MAEDecoder(
            grid=self.grid,
            encoder_dim=self.encoder.embed_dim,
            decoder_dim=cfg.decoder_dim,
            depth=cfg.decoder_depth,
            num_heads=cfg.decoder_heads,
            patch_pixels=self.patch_size**2 * cfg.model.in_chans,
            num_prefix_tokens=self.encoder.num_prefix_tokens,
        )

    @property
    def needs(self) -> frozenset[str]:  # type: ignore[override]
        """Batch keys: the image, plus the contour mask for contour masking."""
        return frozenset({"image", "contour"} if self.cfg.masking == "contour" else {"image"})

    def image_encoder(self) -> torch.nn.Module:
        """The timm ViT (state_dict prefix ``encoder.`` in the checkpoint)."""
        return self.encoder

    def make_mask(
        self,
        batch_size: int,
        contour: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Choose the hidden patches: (ids_keep (B, K), mask (B, L), ids_restore (B, L)).

        Contour masking uses ``contour`` (B, H, W) bool at the image size; when
        it is None the masking is random at ``mask_ratio``.
        """
        cfg = self.cfg
        num_patches = self.grid[0] * self.grid[1]
        if cfg.masking == "contour" and contour is not None:
            inside = grid_from_pixel_mask(contour.to(device).bool(), self.patch_size)  # (B, L)
            return contour_masking(
                inside, cfg.mask_ratio_inside, cfg.mask_ratio_outside, cfg.mask_ratio, generator
            )
        return random_masking(batch_size, num_patches, cfg.mask_ratio, generator, device)

    def _check_images(self, images: torch.Tensor) -> None:
        size, chans = self.cfg.model.image_size, self.cfg.model.in_chans
        if images.ndim != 4 or images.shape[1:] != (chans, size, size):
            raise InputError(
                f"MAE expects images of shape (B, {chans}, {size}, {size}) "
                f"(model.image_size), got {tuple(images.shape)}; make "
                "data.image_size equal model.image_size"
            )

    def _reconstruct(
        self, images: torch.Tensor, contour: torch.Tensor | None, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode the visible patches and decode all: (pred (B, L, N), mask (B, L))."""
        self._check_images(images)
        if contour is not None and tuple(contour.shape) != (images.shape[0], *images.shape[2:]):
            raise InputError(
                f"contour mask shape {tuple(contour.shape)} does not match the "
                f"images {tuple(images.shape)}; it must be (B, H, W)"
            )
        ids_keep, mask, ids_restore = self.make_mask(
            images.shape[0], contour, generator, images.device
        )
        latent = encode_visible(self.encoder, images, ids_keep)  # (B, P + K, D)
        pred = self.decoder(latent, ids_restore)  # (B, L, p*p*C)
        return pred, mask  # mask stays float32: exact ratios under autocast

    def loss(self, batch: dict[str, Any], step: int = 0) -> dict[str, torch.Tensor]:
        """Named losses for a batch with ``image`` (B, 1, H, W) and, for contour masking, ``contour``.

        ``step`` is unused: MAE has no curriculum.

        Returns: ``loss`` (optimised), ``mse_masked`` (pixel-space MSE on masked
        patches), ``mask_ratio_actual``; with contour masking also the realised
        ``mask_ratio_inside_actual`` and ``mask_ratio_outside_actual``.
        Raises: InputError when the contour is required but missing, or shapes disagree.
        """
        images = batch["image"]
        contour = batch.get("contour")
        if self.cfg.masking == "contour" and contour is None:
            raise InputError(
                "masking = 'contour' needs the batch key 'contour'; give pretrain "
                "an annotations artifact (cxrkit annotate) or use masking = 'random'"
            )
        pred, mask = self._reconstruct(images, contour, None)
        target = patchify(images, self.patch_size)  # (B, L, p*p*C)
        loss, mse = masked_patch_loss(
            pred.float(), target.float(), mask.float(), self.cfg.norm_pix_loss
        )
        out = {"loss": loss, "mse_masked": mse, "mask_ratio_actual": mask.detach().mean()}
        if self.cfg.masking == "contour":
            inside = grid_from_pixel_mask(contour.bool(), self.patch_size).to(mask.dtype)
            hidden = mask.detach()
            out["mask_ratio_inside_actual"] = (hidden * inside).sum() / inside.sum().clamp_min(1)
            outside = 1 - inside
            out["mask_ratio_outside_actual"] = (hidden * outside).sum() / outside.sum().clamp_min(1)
        return out

    @torch.no_grad()
    def forward_reconstruction(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        contour: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruct images for a preview.

        Takes: images (B, C, H, W), an optional seeded generator (fixed masks
        across checkpoints) and optional contour (B, H, W) for contour masking.
        Returns: (pred, mask), both (B, C, H, W): every patch as the decoder
        predicts it, in the images' pixel space (with ``norm_pix_loss`` mapped
        back with the true patch's mean and std, as MAE's visualisation does),
        and 1.0 where the patch was hidden.
        """
        pred, mask = self._reconstruct(images, contour, generator)
        pred = pred.float()
        if self.cfg.norm_pix_loss:
            target = patchify(images.float(), self.patch_size)
            mean = target.mean(dim=-1, keepdim=True)
            std = (target.var(dim=-1, keepdim=True) + NORM_PIX_EPS).sqrt()
            pred = pred * std + mean
        chans = self.cfg.model.in_chans
        pixels = unpatchify(pred, self.patch_size, self.grid, chans)
        mask_patches = mask.float()[:, :, None].expand(-1, -1, pred.shape[-1])
        return pixels, unpatchify(mask_patches, self.patch_size, self.grid, chans)

    @torch.no_grad()
    def reconstruct(
        self, images: torch.Tensor, seed: int, contour: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The ``reconstruction`` capability: (images, masked input, reconstruction), (B, C, H, W).

        The mask is drawn from ``seed`` (the same patches across checkpoints);
        hidden patches are 0 in the masked input; the reconstruction shows the
        decoder's prediction on hidden patches and the input elsewhere.
        """
        generator = torch.Generator().manual_seed(int(seed))  # CPU: same masks on any device
        pred, mask = self.forward_reconstruction(images, generator=generator, contour=contour)
        return images, images * (1 - mask), pred * mask + images * (1 - mask)
