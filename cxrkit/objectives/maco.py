"""MaCo: masked contrastive image-report pretraining (Huang et al., Nat. Commun. 2024).

One step, as the released code (SZUHvern/MaCo ``model_MaCo.py``) does it:

1. Hide ``mask_ratio`` of the patches at random; the ViT encodes the visible ones.
2. Reconstruction: an MAE decoder rebuilds every patch of the *target* image
   (``target_size``; the code rebuilds the 448-px image with 32-px patches from a
   224-px encoder input, so each of the 14 x 14 tokens predicts a 32 x 32 patch);
   L_rec = mean squared error over the hidden patches (raw pixels: norm_pix off).
3. Contrast: image vector v_i = W_img · mean(visible patch tokens of image i)
   (class token excluded), text vector t_i = W_txt · pooled(text tower), and
   S = τ · cos(v, t) (N x N, rows = images) over the batch gathered from every
   process (with gradient). τ is a plain learnable multiplier, initialised to
   1 / temperature (the code's ``Tpar``), not a log.
4. Correlation weight per image: w_i = softplus(aᵀ m_i + b), m_i ∈ {0,1}^L the
   visible-patch indicator (1 = visible), a ∈ R^L and b initialised to 0, so
   w = log 2 at the start.
5. L_con = ¼ [CE(w ⊙ S) + CE(w ⊙ Sᵀ) + CE_w(S) + CE_w(Sᵀ)], see
   :func:`maco_contrastive_loss` for exactly what is applied where.
6. Total: ``loss_weighting = "paper"``: λ·L_rec + (1 − λ)·L_con (λ = ``rec_weight``,
   0.9 in the paper); ``"code_sum"``: L_rec + L_con, what the released
   ``engine_pretrain.py`` optimises (it passes λ to the model but never uses it).

Where cxrkit differs from the code (each a setting or documented choice):
- 1-channel images and cxrkit's normalisation (the code repeats grey to RGB).
- The text tower is any cxrkit text tower with a linear projection to
  ``embed_dim``; the code uses a 6-layer 384-d BERT's pooler output directly.
- Zero-shot and retrieval use :meth:`MaCo.encode_image`: the projection of the mean
  of *all* patch tokens of an unmasked pass, as the code's zero-shot model does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from cxrkit.config import doc, to_dict
from cxrkit.errors import ConfigError, InputError
from cxrkit.io.tokens import TokenizeText
from cxrkit.models.decoders import MAEDecoder, check_decoder_width
from cxrkit.models.text import build_text_tower
from cxrkit.models.tower_configs import TextConfig, VisionConfig
from cxrkit.models.vision import (
    build_vision_encoder,
    encode_visible,
    patchify,
    set_sincos_pos_embed,
    unpatchify,
)
from cxrkit.objectives.base import Objective, register
from cxrkit.objectives.capabilities import IMAGE_TEXT, OPEN_CLIP, RECONSTRUCTION
from cxrkit.objectives.contrastive import correlation_weight, gather_batch, maco_contrastive_loss
from cxrkit.objectives.mae import masked_patch_loss
from cxrkit.objectives.masking import random_masking


@dataclass
class MaCoConfig:
    """Settings of the MaCo objective (the ``[model]`` table plus ``[objective]``)."""

    model: VisionConfig = dataclasses.field(
        default_factory=VisionConfig, metadata={"help": "the image encoder (the [model] table)"}
    )
    text: TextConfig = dataclasses.field(
        default_factory=TextConfig, metadata={"help": "the text tower ([objective.text])"}
    )
    image_init: str | None = doc(
        "weights file to start the image encoder from (the code: ImageNet MAE ViT-B/16, "
        "mae_pretrain_vit_base.pth); read once when training starts; checkpoints hold the "
        "trained weights, so their config records none",
        None,
    )
    image_init_source: Literal["mae", "timm", "open_clip"] = doc(
        "layout of image_init: mae (facebookresearch/mae), timm or open_clip", "mae"
    )
    embed_dim: int = doc("width of the shared image-text embedding", 768)
    mask_ratio: float = doc("fraction of patches hidden per image (released code: 0.5)", 0.5)
    target_size: int | None = doc(
        "side of the reconstruction target image in pixels; the batch images come at this "
        "size (data.image_size) and are resized (bicubic) to model.image_size for the "
        "encoder; each token predicts a target_size / grid patch. none = model.image_size",
        None,
    )
    norm_pix_loss: bool = doc("regress per-patch normalised pixels (off in MaCo's code)", False)
    decoder_dim: int = doc("decoder token width", 768)
    decoder_depth: int = doc("decoder transformer blocks", 4)
    decoder_heads: int = doc("decoder attention heads", 6)
    temperature: float = doc("initial temperature; the logit scale starts at 1 / temperature", 0.03)
    learn_temperature: bool = doc("learn the logit scale (a plain multiplier, not a log)", True)
    max_logit_scale: float | None = doc(
        "clamp the logit scale at this value in the loss (CLIP uses 100); none = no clamp, "
        "as the released code",
        None,
    )
    correlation_weighting: bool = doc(
        "weight the contrastive terms by w = softplus(a·m + b) of the visible-patch "
        "indicator m (off: plain symmetric InfoNCE, for ablations)",
        True,
    )
    rec_weight: float = doc(
        "λ: weight of the reconstruction loss, (1 - λ) on the contrastive loss (paper 0.9)", 0.9
    )
    loss_weighting: Literal["paper", "code_sum"] = doc(
        "paper: λ·L_rec + (1-λ)·L_con; code_sum: L_rec + L_con (released engine_pretrain.py)",
        "paper",
    )
    image_projection_bias: bool = doc("the image projection has a bias (the code's img_mlp)", True)
    text_augment: Literal["none", "sentence_sample"] = doc(
        "report augmentation in the loader workers: none, or sentence_sample (the released "
        "code's util/pretrain_datasets.py: split at '.', shuffle, keep a random 1..n of the "
        "sentences, lower-case); the paper does not describe one",
        "none",
    )
    gather_negatives: bool = doc(
        "contrast against the batch gathered from every process (with gradient)", True
    )

    def validate(self) -> None:
        """Raise ConfigError on inconsistent settings."""
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ConfigError(f"objective.mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if not 0.0 <= self.rec_weight <= 1.0:
            raise ConfigError(f"objective.rec_weight must be in [0, 1], got {self.rec_weight}")
        if self.temperature <= 0:
            raise ConfigError(f"objective.temperature must be > 0, got {self.temperature}")
        if self.embed_dim < 1:
            raise ConfigError(f"objective.embed_dim must be >= 1, got {self.embed_dim}")
        if self.decoder_depth < 1 or self.decoder_heads < 1:
            raise ConfigError("objective.decoder_depth and objective.decoder_heads must be >= 1")
        check_decoder_width(self.decoder_dim, self.decoder_heads)
        rows, _ = self.model.grid_size
        if self.target_size is not None and (
            self.target_size < self.model.image_size or self.target_size % rows
        ):
            raise ConfigError(
                f"objective.target_size {self.target_size} must be >= model.image_size "
                f"({self.model.image_size}) and a multiple of the {rows}-patch grid side "
                "(e.g. 448 for 224 px with 16-px patches: 32-px target patches)"
            )

    @property
    def target_patch_size(self) -> int:
        """Side of one target patch in pixels (target_size / grid side)."""
        rows, _ = self.model.grid_size
        return (self.target_size or self.model.image_size) // rows


def sample_sentences(text: str, seed: int) -> str:
    """The released code's report augmentation, seeded: a random subset of shuffled sentences.

    Splits at '.', drops empty and 'none' pieces, shuffles, keeps the first k of them
    (k uniform in 1..n) and lower-cases, each sentence ending in '. '. Takes the
    report and a seed (the loader's per-sample seed, so resume stays exact).
    Returns the new text; a text without sentences comes back unchanged.
    """
    import random

    sentences = [p.strip() for p in text.split(".")]
    sentences = [p for p in sentences if p and p.lower() != "none"]
    if not sentences:
        return text
    rng = random.Random(seed)
    rng.shuffle(sentences)
    keep = rng.randint(1, len(sentences))
    return "".join(f"{p.lower()}. " for p in sentences[:keep]).strip()


class SampleSentences(TokenizeText):
    """TokenizeText after :func:`sample_sentences` (MaCo's ``text_augment = sentence_sample``)."""

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        text = sample_sentences(sample["text"], int(sample.get("seed", 0)))
        return super().__call__({**sample, "text": text})


@register("maco")
class MaCo(Objective):
    """Masked contrastive image-report objective; exported encoder is ``self.encoder``."""

    Config = MaCoConfig
    image_encoder_prefix = "encoder."
    needs = frozenset({"image", "text"})
    capabilities = frozenset({IMAGE_TEXT, OPEN_CLIP, RECONSTRUCTION})
    weights_settings = ("image_init",)

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        """A 1-block ViT on 32 px, 1-block decoder, the shipped MiniLM text tower (CPU tests)."""
        model = {"arch": "vit_tiny_patch16_224", "image_size": 32, "patch_size": 8, "depth": 1}
        return {
            "model": model,
            "text": {"context_length": 24, "pooling": "mean"},
            "embed_dim": 32,
            "decoder_dim": 32,
            "decoder_depth": 1,
            "decoder_heads": 2,
        }

    def __init__(self, config: MaCoConfig | dict[str, Any]) -> None:
        super().__init__(config)
        cfg: MaCoConfig = self.cfg
        cfg.validate()
        self.grid = cfg.model.grid_size
        self.num_patches = cfg.model.num_patches
        self.encoder = build_vision_encoder(cfg.model)
        set_sincos_pos_embed(self.encoder)  # fixed positions, as MAE and MaCo
        if cfg.image_init:
            from cxrkit.models.init import load_pretrained_image_weights

            load_pretrained_image_weights(self.encoder, cfg.image_init, cfg.image_init_source)
        width = self.encoder.embed_dim
        self.decoder = MAEDecoder(
            grid=self.grid,
            encoder_dim=width,
            decoder_dim=cfg.decoder_dim,
            depth=cfg.decoder_depth,
            num_heads=cfg.decoder_heads,
            patch_pixels=cfg.target_patch_size**2 * cfg.model.in_chans,
            num_prefix_tokens=self.encoder.num_prefix_tokens,
        )
        self.text_tower = build_text_tower(cfg.text)
        if cfg.image_init or cfg.text.weights:
            # The weights now live in this module (both towers train); a checkpoint rebuilt
            # from its config must not need the files again (the run's manifest records
            # them, by content and path).
            text = dataclasses.replace(cfg.text, weights=None)
            self.cfg = dataclasses.replace(cfg, image_init=None, text=text)
            self.config = to_dict(self.cfg)
        self.image_projection = nn.Linear(width, cfg.embed_dim, bias=cfg.image_projection_bias)
        self.text_projection = nn.Linear(self.text_tower.width, cfg.embed_dim, bias=False)
        for layer in (self.image_projection, self.text_projection):  # the code's xavier init
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        self.correlation = nn.Linear(self.num_patches, 1)  # a (weight), b (bias)
        nn.init.zeros_(self.correlation.weight)  # the code: a = 0 "only for softplus"
        nn.init.zeros_(self.correlation.bias)
        self.logit_scale_value = nn.Parameter(
            torch.tensor(1.0 / cfg.temperature), requires_grad=cfg.learn_temperature
        )

    # -- capabilities --------------------------------------------------------------

    def image_encoder(self) -> nn.Module:
        """The timm ViT (state_dict prefix ``encoder.`` in the checkpoint)."""
        return self.encoder

    def text_encoder(self) -> nn.Module:
        """The text tower (without the projection)."""
        return self.text_tower

    def logit_scale(self) -> float:
        """τ, the plain multiplier of the cosine similarities (as trained, unclamped)."""
        return float(self.logit_scale_value.detach())

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Texts -> the tower tokenizer's dict (input_ids, attention_mask, ... (T, C)), on CPU."""
        return self.text_tower.tokenizer()(list(texts))

    def sample_transform(self) -> TokenizeText:
        """The per-sample transform loader workers run: the report to ``batch["tokens"]``."""
        if self.cfg.text_augment == "sentence_sample":
            return SampleSentences(self.text_tower.tokenizer())
        return TokenizeText(self.text_tower.tokenizer())

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings (B, E): projection of the mean of all patch tokens, no masking.

        Takes normalised (B, C, S, S) images at model.image_size or target_size.
        """
        tokens = encode_visible(self.encoder, self._encoder_input(images), None)
        return self.image_projection(tokens[:, self.encoder.num_prefix_tokens :].mean(dim=1))

    def encode_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Text embeddings (T, E): projection of the tower's pooled output.

        Takes :meth:`tokenize`'s dict (``input_ids``, ``attention_mask``).
        """
        device = self.text_projection.weight.device
        out = self.text_tower(tokens["input_ids"].to(device), tokens["attention_mask"].to(device))
        return self.text_projection(out.pooled)

    def to_open_clip(self, out_dir: Path | None = None) -> tuple[dict[str, Any], dict]:
        """open_clip's model config and state dict for the image + text towers.

        Image: the timm ViT as open_clip's VisionTransformer, mean pooling of the
        normed patch tokens, ``visual.proj`` = the image projection (its bias folded
        into ``ln_post``). Text: open_clip's ``HFTextEncoder`` over the same Hugging
        Face model, the tower's pooling, ``text.proj`` = the text projection; given
        ``out_dir``, the text tower's config and tokenizer files are written there.
        ``logit_scale`` = log τ (open_clip stores the log).
        Raises: InputError for a text tower that is not a Hugging Face one, or a bias
        that cannot be folded (embed_dim > the ViT width).
        """
        from cxrkit.export import open_clip_format as ocf

        projection = self.image_projection.weight.detach().float().T  # (D, E)
        vision_cfg, state = ocf.vit_to_open_clip_visual(self.encoder, projection, pool="avg")
        if self.image_projection.bias is not None:
            # not in place: the state's tensors share storage with the encoder's
            state["visual.ln_post.bias"] = state["visual.ln_post.bias"] + ocf.fold_projection_bias(
                projection, self.image_projection.bias.detach().float()
            )
        text_cfg, text_state = ocf.hf_text_to_open_clip(
            self.text_tower, self.text_projection.weight.detach().float(), out_dir
        )
        state.update(text_state)
        state["logit_scale"] = self.logit_scale_value.detach().float().log()
        model_cfg = {
            "embed_dim": self.cfg.embed_dim,
            "custom_text": True,
            "vision_cfg": vision_cfg,
            "text_cfg": text_cfg,
        }
        return model_cfg, state

    # -- training --------------------------------------------------------------------

    def _encoder_input(self, images: torch.Tensor) -> torch.Tensor:
        """Check the batch size and resize target-size images to the encoder's size."""
        size, chans = self.cfg.model.image_size, self.cfg.model.in_chans
        allowed = {size, self.cfg.target_size or size}
        if images.ndim != 4 or images.shape[1] != chans or images.shape[2] != images.shape[3]:
            raise InputError(
                f"MaCo expects square images (B, {chans}, S, S), got {tuple(images.shape)}"
            )
        if images.shape[-1] not in allowed:
            raise InputError(
                f"MaCo got {images.shape[-1]}-px images; make data.image_size "
                f"{max(allowed)} (objective.target_size, or model.image_size when unset)"
            )
        if images.shape[-1] == size:
            return images
        return F.interpolate(
            images, size=(size, size), mode="bicubic", align_corners=False, antialias=True
        )

    def _text_batch(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) from the loader's ``tokens``, else tokenise ``text`` here."""
        tokens = batch.get("tokens")
        if tokens is None:
            if "text" not in batch:
                raise InputError("MaCo needs the report text (batch key 'tokens' or 'text')")
            tokens = self.tokenize(batch["text"])
        device = batch["image"].device
        return tokens["input_ids"].to(device), tokens["attention_mask"].to(device)

    def _masked_pass(
        self, images: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(latent (B, P + K, D), pred (B, L, N), mask (B, L), target (B, L, N))."""
        if self.cfg.target_size and images.shape[-1] != self.cfg.target_size:
            raise InputError(
                f"MaCo reconstructs {self.cfg.target_size}-px images (objective.target_size) "
                f"but got {images.shape[-1]}-px; set data.image_size = {self.cfg.target_size}"
            )
        encoder_input = self._encoder_input(images)
        ids_keep, mask, ids_restore = random_masking(
            images.shape[0], self.num_patches, self.cfg.mask_ratio, generator, images.device
        )
        latent = encode_visible(self.encoder, encoder_input, ids_keep)  # (B, P + K, D)
        pred = self.decoder(latent, ids_restore)  # (B, L, q*q*C), q = target patch
        target = patchify(images, self.cfg.target_patch_size)  # (B, L, q*q*C)
        return latent, pred, mask, target

    def loss(self, batch: dict[str, Any], step: int = 0) -> dict[str, torch.Tensor]:
        """Named losses for a batch with ``image`` (B, C, S, S) and the report text.

        Returns: ``loss`` (optimised), ``rec`` (L_rec), ``con`` (L_con),
        ``logit_scale`` (τ), ``correlation_weight`` (mean w), ``mse_masked``
        (pixel-space MSE on hidden patches). ``step`` is unused (no curriculum).
        Raises: InputError for images of the wrong size or a batch without text.
        """
        cfg = self.cfg
        images = batch["image"]
        input_ids, attention_mask = self._text_batch(batch)
        latent, pred, mask, target = self._masked_pass(images, None)
        rec, mse = masked_patch_loss(pred.float(), target.float(), mask.float(), cfg.norm_pix_loss)
        visible_tokens = latent[:, self.encoder.num_prefix_tokens :]  # (B, K, D)
        image_vec = self.image_projection(visible_tokens.mean(dim=1))  # (B, E)
        text_vec = self.text_projection(self.text_tower(input_ids, attention_mask).pooled)
        weight = (
            correlation_weight(1.0 - mask.float(), self.correlation)
            if cfg.correlation_weighting
            else None
        )  # (B,)
        scale = self.logit_scale_value
        if cfg.max_logit_scale is not None:
            scale = scale.clamp(max=cfg.max_logit_scale)
        if cfg.gather_negatives:
            image_vec, text_vec = gather_batch(image_vec), gather_batch(text_vec)
            weight = gather_batch(weight) if weight is not None else None
        con = maco_contrastive_loss(image_vec, text_vec, weight, scale)
        if cfg.loss_weighting == "paper":
            total = cfg.rec_weight * rec + (1.0 - cfg.rec_weight) * con
        else:
            total = rec + con
        return {
            "loss": total,
            "rec": rec.detach(),
            "con": con.detach(),
            "logit_scale": scale.detach().float(),
            "correlation_weight": (
                weight.detach().mean() if weight is not None else torch.ones(())
            ),
            "mse_masked": mse,
        }

    @torch.no_grad()
    def forward_reconstruction(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        contour: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruct images for a preview: (pred, mask), both shaped like ``images``.

        Images at model.image_size (as eval feeds them) are resized (bicubic) to
        ``target_size``, reconstructed there and the result resized back (the mask
        by nearest neighbour). ``contour`` is ignored (MaCo masks at random).
        """
        side = images.shape[-1]
        target_size = self.cfg.target_size or self.cfg.model.image_size
        if side != target_size:
            images = F.interpolate(
                self._encoder_input(images), size=(target_size, target_size), mode="bicubic"
            )
        pixels, hidden = self._reconstruct_at_target(images, generator)
        if side != target_size:
            pixels = F.interpolate(pixels, size=(side, side), mode="bilinear", antialias=True)
            hidden = F.interpolate(hidden, size=(side, side), mode="nearest")
        return pixels, hidden

    def _reconstruct_at_target(
        self, images: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _, pred, mask, target = self._masked_pass(images, generator)
        pred = pred.float()
        if self.cfg.norm_pix_loss:
            mean = target.float().mean(dim=-1, keepdim=True)
            std = (target.float().var(dim=-1, keepdim=True) + 1e-6).sqrt()
            pred = pred * std + mean
        patch, chans = self.cfg.target_patch_size, self.cfg.model.in_chans
        pixels = unpatchify(pred, patch, self.grid, chans)
        hidden = mask.float()[:, :, None].expand(-1, -1, pred.shape[-1])
        return pixels, unpatchify(hidden, patch, self.grid, chans)

    @torch.no_grad()
    def reconstruct(
        self, images: torch.Tensor, seed: int, contour: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The ``reconstruction`` capability: (images, masked input, reconstruction), (B, C, H, W).

        The mask is drawn from ``seed``; hidden patches are 0 in the masked input; the
        reconstruction shows the prediction on hidden patches and the input elsewhere.
        """
        generator = torch.Generator().manual_seed(int(seed))  # CPU: same masks on any device
        pred, mask = self.forward_reconstruction(images, generator=generator, contour=contour)
        return images, images * (1 - mask), pred * mask + images * (1 - mask)
