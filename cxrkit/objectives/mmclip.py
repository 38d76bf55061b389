"""MMCLIP: cross-modal attention-masked modelling for image-report pretraining (Wu et al.).

MMCLIP has no public code; this is cxrkit's implementation from the paper
(§2, §3.3, App. A/B). One step on a batch of paired rows (a report) and
image-only rows (empty report text):

1. Towers (§2.1): a ViT (CLIP-style) gives patch tokens F(x); a text tower gives
   report tokens T(t). Linear projections to the joint width C give
   E_img = Linear(F(x)) (N x C, Eq 1), E_report and E_prompt (Eqs 2-3); the
   pooled image (the class token) and the pooled report (end-of-text token)
   through the same projections give the vectors x_i, y_i of the alignment.
2. AttMIM (§2.2): attention maps A_r (report, paired rows only), A_p (the
   disease prompts of the annotations' ``prompts.json``, encoded by the text
   tower), A_i (the image itself) (Eqs 4-6); one score per patch; the union of
   the top-λ₁ patches of each map, then a random subset hiding λ₂ of all
   patches (Eqs 7-8) (:mod:`cxrkit.objectives.mmclip_masking`). The encoder
   then sees the visible patches only and an MAE decoder (8 blocks) rebuilds
   every patch; L_MIM = mean squared error over the hidden patches (Eq 13).
3. EntMLM (§2.3): λ₃ of the entity words (entity spans of the annotations,
   aligned to the tokens in the loader workers) are masked; a 3-layer
   CoCa-style decoder (causal self-attention with the masked tokens hidden,
   cross-attention to E_img of the unmasked image) predicts them:
   L_MLM = mean -log P(y_t | visible y_<t, x) over the masked tokens (Eqs 10-11, 14).
4. Alignment (Eq 12): symmetric InfoNCE over the paired rows,
   L_align = CE_i2t + CE_t2i (the paper sums the two directions).
5. Total (Eqs 15-17): L = (L_align + L_MIM,pair + L_MLM) + w·L_MIM,unpair; for the
   first ``warmup_steps`` optimiser steps (App. A, 15,000) only masked modelling:
   L = L_MIM,pair + L_MLM + w·L_MIM,unpair (L_align is still logged, detached).

Image-only rows (no report text) train the MIM term only, their masks from the
prompt and self maps; the text tower gets no gradient from them (prompts are
encoded without gradient: they only choose masks).

Choices where the paper is silent or inconsistent (each a setting):

- ``patch_score``: how an N x C map becomes one score per patch. Default
  ``response`` = ⟨E_img,i, A_x,i⟩/√C, the patch's agreement with what it
  attended to ("highly activated" regions, Fig. 7); ``norm``, ``mean``, ``max``.
- ``attention_pass``: the maps come from an UNMASKED pass (the masks must exist
  before the masked pass). ``shared`` reuses the alignment pass of the same step,
  detached (one encoder pass); ``separate`` runs an extra no-gradient pass in
  eval mode (no drop-path) for the maps only.
- ``temperature``: σ in Eq 12 is not given; CLIP's learnable logit scale,
  1/0.07 at the start, clamped at 100.
- ``mask_ratio`` (λ₂): §3.3 and Fig. 6a say 0.75 is the fraction finally hidden;
  Fig. 7's caption says a 25 % subset is selected. Default 0.75, as the
  ablation; λ₂ is always the fraction of all patches hidden.
- ``entity_min_one``: λ₃ = 0.2 of a report's few entity words rounds to 0
  often; at least one entity word is masked when the report has any.
- MLM decoder input: with a causal text tower (``text.kind = open_clip``, CLIP's)
  the decoder reads the report features of the unmasked pass with the chosen
  positions replaced by a mask token: a position never carries its own or a
  later token, so no target leaks (tested), though an unmasked position after a
  masked entity still carries that entity as context; with a bidirectional
  tower (hf/bert), where every feature carries the whole report, a second text
  pass with the chosen tokens replaced by the mask token feeds it.
- MIM target: raw pixels (Eq 13: ‖y - x‖²); ``norm_pix_loss`` turns on MAE's
  per-patch normalisation. The decoder reads the encoder tokens (its own input
  projection stands for Eq 9's Linear).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from dataclasses import dataclass
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
from cxrkit.models.vision import build_vision_encoder, encode_visible, patchify, unpatchify
from cxrkit.objectives.base import Objective, register
from cxrkit.objectives.capabilities import IMAGE_TEXT, OPEN_CLIP, RECONSTRUCTION
from cxrkit.objectives.contrastive import gathered_pairs, symmetric_infonce
from cxrkit.objectives.mae import masked_patch_loss
from cxrkit.objectives.mmclip_masking import (
    PATCH_SCORES,
    attention_map,
    attmim_masking,
    choose_entity_tokens,
    entmlm_attention,
    patch_scores,
)

log = logging.getLogger(__name__)

MAP_SOURCES = ("report", "prompt", "self")
NAN = float("nan")


def _clip_vision() -> VisionConfig:
    return VisionConfig(arch="vit_base_patch16_clip_224")


def _clip_text() -> TextConfig:
    return TextConfig(
        kind="open_clip", open_clip_model="ViT-B-16", context_length=77, pooling="eos"
    )


@dataclass
class MMCLIPConfig:
    """Settings of the MMCLIP objective: ``[model]`` is the image tower, the rest ``[objective]``."""

    model: VisionConfig = dataclasses.field(
        default_factory=_clip_vision, metadata={"help": "the image tower (the [model] table)"}
    )
    text: TextConfig = dataclasses.field(
        default_factory=_clip_text, metadata={"help": "the text tower ([objective.text])"}
    )
    embed_dim: int = doc("joint width C of E_img, E_report, E_prompt (CLIP ViT-B/16: 512)", 512)
    image_weights: str | None = doc(
        "local open_clip CLIP state dict: its visual tower initialises the image encoder, "
        "visual.proj / text_projection / logit_scale the projections and temperature (set "
        "text.weights to the same file for the text tower); read once when training starts; "
        "checkpoints hold the trained weights, so their config records none; none = random init",
        None,
    )
    temperature: float = doc("initial σ of Eq 12; the logit scale starts at 1/σ", 0.07)
    learn_temperature: bool = doc("learn the logit scale (stored as its log, CLIP)", True)
    max_logit_scale: float = doc("clamp of the plain logit scale (CLIP: 100)", 100.0)
    gather_negatives: bool = doc(
        "contrast against the pairs of every process (with gradient); the paper trains on one GPU",
        True,
    )
    attention_ratio: float = doc("λ₁: fraction of patches each attention map selects", 0.7)
    mask_ratio: float = doc("λ₂: fraction of all patches finally hidden (§3.3)", 0.75)
    attention_maps: list[str] = doc(
        "attention sources in the union: report, prompt, self (ablations: any subset; "
        "an empty list = random masking, Table 3's 'MIM Random')",
        ["report", "prompt", "self"],
    )
    patch_score: Literal["response", "norm", "mean", "max"] = doc(
        "N x C map -> one score per patch: response = <E_img_i, A_i>/sqrt(C), norm = |A_i|, "
        "mean or max over channels",
        "response",
    )
    attention_pass: Literal["shared", "separate"] = doc(
        "unmasked pass the maps come from: shared = the step's alignment pass (detached), "
        "separate = an extra no-gradient eval-mode pass",
        "shared",
    )
    decoder_dim: int = doc("MIM decoder width (MAE: 512)", 512)
    decoder_depth: int = doc("MIM decoder blocks (paper: 8)", 8)
    decoder_heads: int = doc("MIM decoder heads (MAE: 16)", 16)
    norm_pix_loss: bool = doc("regress per-patch normalised pixels (Eq 13: raw pixels)", False)
    entity_ratio: float = doc("λ₃: fraction of the entity words masked for EntMLM", 0.2)
    entity_min_one: bool = doc("mask at least one entity word when a report has any", True)
    mlm_depth: int = doc("EntMLM text decoder layers (paper: 3)", 3)
    mlm_heads: int = doc("EntMLM text decoder heads", 8)
    warmup_steps: int = doc(
        "optimiser steps of masked modelling only before the alignment joins (App. A: 15000)",
        15000,
    )
    unpaired_weight: float = doc("weight of the image-only rows' MIM term (Eq 17: 1)", 1.0)

    def validate(self) -> None:
        """Raise ConfigError on inconsistent settings."""
        if not 0.0 < self.attention_ratio <= 1.0:
            raise ConfigError(
                f"objective.attention_ratio must be in (0, 1], got {self.attention_ratio}"
            )
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ConfigError(f"objective.mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if not 0.0 <= self.entity_ratio <= 1.0:
            raise ConfigError(f"objective.entity_ratio must be in [0, 1], got {self.entity_ratio}")
        unknown = sorted(set(self.attention_maps) - set(MAP_SOURCES))
        if unknown:
            raise ConfigError(
                f"objective.attention_maps: unknown {unknown}; choose from {', '.join(MAP_SOURCES)}"
            )
        if self.patch_score not in PATCH_SCORES:
            raise ConfigError(f"objective.patch_score must be one of {', '.join(PATCH_SCORES)}")
        if self.temperature <= 0 or self.max_logit_scale <= 0:
            raise ConfigError("objective.temperature and objective.max_logit_scale must be > 0")
        if self.embed_dim < 1 or self.embed_dim % self.mlm_heads:
            raise ConfigError(
                f"objective.embed_dim {self.embed_dim} must be >= 1 and divisible by "
                f"objective.mlm_heads {self.mlm_heads}"
            )
        if self.mlm_depth < 1 or self.decoder_depth < 1 or self.decoder_heads < 1:
            raise ConfigError("objective.mlm_depth, decoder_depth and decoder_heads must be >= 1")
        check_decoder_width(self.decoder_dim, self.decoder_heads)
        if self.warmup_steps < 0 or self.unpaired_weight < 0:
            raise ConfigError("objective.warmup_steps and objective.unpaired_weight must be >= 0")


class EntityTokens(TokenizeText):
    """Tokenise the report, mark entity tokens and choose the EntMLM tokens, in the workers.

    Adds ``tokens`` with input_ids, attention_mask, offsets, word_ids,
    entity_mask and ``mlm_mask`` (T,) bool: :func:`choose_entity_tokens` with
    randomness from ``sample["seed"]`` (the same choice on resume).
    """

    def __init__(self, tokenizer: Any, ratio: float, min_one: bool = True) -> None:
        super().__init__(tokenizer, key="tokens", entities=True)
        self.ratio, self.min_one = ratio, min_one

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        out = super().__call__(sample)
        tokens = out["tokens"]
        rng = random.Random(int(sample.get("seed", 0)))
        tokens["mlm_mask"] = choose_entity_tokens(
            tokens["entity_mask"], tokens["word_ids"], self.ratio, rng, self.min_one
        )
        return out


class EntityDecoder(nn.Module):
    """CoCa-style text decoder: self-attention under a given pattern, cross-attention to the image.

    Masked positions hold a learned mask token; every position gets a learned
    position embedding; a linear head predicts vocabulary logits.
    """

    def __init__(self, width: int, depth: int, heads: int, length: int, vocab: int) -> None:
        super().__init__()
        self.heads = heads
        self.mask_token = nn.Parameter(torch.empty(1, 1, width).normal_(std=0.02))
        self.pos_embed = nn.Parameter(torch.empty(1, length, width).normal_(std=0.01))
        self.layers = nn.ModuleList(
            nn.TransformerDecoderLayer(
                width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True,
                norm_first=True,
            )
            for _ in range(depth)
        )  # fmt: skip
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(
        self,
        text: torch.Tensor,
        mlm_mask: torch.Tensor,
        allowed: torch.Tensor,
        image: torch.Tensor,
        predict: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Takes text (B, T, C), mlm_mask (B, T), allowed (B, T, T), image (B, N, C).

        Returns logits (B, T, V), or (P, V) at the positions ``predict`` (B, T)
        bool selects (the vocabulary head is the costly part: run it where needed).
        """
        x = torch.where(mlm_mask[..., None], self.mask_token.to(text.dtype), text)
        x = x + self.pos_embed[:, : x.shape[1]].to(x.dtype)
        blocked = (~allowed).repeat_interleave(self.heads, dim=0)  # (B * heads, T, T)
        for layer in self.layers:
            x = layer(x, image, tgt_mask=blocked)
        x = self.norm(x)
        return self.head(x if predict is None else x[predict])


@register("mmclip")
class MMCLIP(Objective):
    """MMCLIP (module doc); the exported image encoder is ``self.encoder``."""

    Config = MMCLIPConfig
    needs = frozenset({"image", "text", "entities", "prompts"})
    capabilities = frozenset({IMAGE_TEXT, OPEN_CLIP, RECONSTRUCTION})
    weights_settings = ("image_weights",)
    image_encoder_prefix = "encoder."

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        """2-block 64-d CLIP-style towers at 32 px (a 4 x 4 grid), 1-block decoders."""
        model = {
            "arch": "vit_base_patch16_clip_224", "image_size": 32, "patch_size": 8, "depth": 2,
            "embed_dim": 64, "num_heads": 2,
        }  # fmt: skip
        text = {
            "kind": "open_clip", "open_clip_model": "ViT-B-16", "width": 64, "layers": 2,
            "heads": 2, "context_length": 48, "pooling": "eos",
        }  # fmt: skip
        return {
            "model": model, "text": text, "embed_dim": 32, "decoder_dim": 32,
            "decoder_depth": 1, "decoder_heads": 2, "mlm_depth": 1, "mlm_heads": 2,
            "warmup_steps": 0,
        }  # fmt: skip

    def __init__(self, config: MMCLIPConfig | dict[str, Any]) -> None:
        super().__init__(config)
        cfg: MMCLIPConfig = self.cfg
        cfg.validate()
        self.patch_size = cfg.model.patch_size
        self.grid = cfg.model.grid_size
        self.encoder = build_vision_encoder(cfg.model)
        self.text = build_text_tower(cfg.text)
        tokenizer = self.text.tokenizer()
        self.causal_text = cfg.text.kind == "open_clip"
        if not self.causal_text and getattr(tokenizer, "mask_id", None) is None:
            raise ConfigError(
                "MMCLIP's EntMLM with a bidirectional text tower needs a tokenizer with a mask token"
            )
        width = self.encoder.embed_dim
        self.image_proj = nn.Linear(width, cfg.embed_dim, bias=False)
        self.text_proj = nn.Linear(self.text.width, cfg.embed_dim, bias=False)
        for proj in (self.image_proj, self.text_proj):
            nn.init.normal_(proj.weight, std=proj.in_features**-0.5)
        scale = torch.tensor(math.log(1.0 / cfg.temperature))
        if cfg.learn_temperature:
            self.log_logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("log_logit_scale", scale)
        if cfg.image_weights:
            self._load_clip_weights(cfg.image_weights)
        if cfg.image_weights or cfg.text.weights:
            # The weights now live in this module (every tower trains): a checkpoint
            # rebuilt from its config must not need the files again (the run's manifest
            # records them, by content and path).
            text = dataclasses.replace(cfg.text, weights=None)
            self.cfg = dataclasses.replace(cfg, image_weights=None, text=text)
            self.config = to_dict(self.cfg)
        self.mim_decoder = MAEDecoder(
            grid=self.grid,
            encoder_dim=width,
            decoder_dim=cfg.decoder_dim,
            depth=cfg.decoder_depth,
            num_heads=cfg.decoder_heads,
            patch_pixels=self.patch_size**2 * cfg.model.in_chans,
            num_prefix_tokens=self.encoder.num_prefix_tokens,
        )
        self.mlm_decoder = EntityDecoder(
            cfg.embed_dim, cfg.mlm_depth, cfg.mlm_heads, cfg.text.context_length,
            tokenizer.vocab_size,
        )  # fmt: skip
        self.dataset_fields: dict[str, Any] = {}

    def _load_clip_weights(self, path: str) -> None:
        """CLIP-base initialisation (App. A) from a local open_clip CLIP state dict.

        The ``visual.`` tower goes into the image encoder
        (:func:`cxrkit.models.init.load_pretrained_image_weights`); CLIP's
        ``visual.proj``, ``text_projection`` and ``logit_scale`` initialise the two
        projections and the temperature when their shapes fit (the text tower's
        own weights come from ``text.weights``). Raises InputError for an
        unreadable file or tensors that do not fit.
        """
        from cxrkit.models.init import load_pretrained_image_weights, read_state_dict

        load_pretrained_image_weights(self.encoder, path, source="open_clip")
        state = read_state_dict(path)
        pairs = (("visual.proj", self.image_proj), ("text_projection", self.text_proj))
        with torch.no_grad():
            for key, linear in pairs:
                if key not in state:
                    continue
                weight = state[key].T  # CLIP applies x @ proj: (in, out) -> Linear's (out, in)
                if tuple(weight.shape) != tuple(linear.weight.shape):
                    raise InputError(
                        f"{path}: {key} {tuple(state[key].shape)} does not fit the projection "
                        f"{tuple(linear.weight.T.shape)} (check objective.embed_dim)"
                    )
                linear.weight.copy_(weight)
            if "logit_scale" in state:
                self.log_logit_scale.copy_(state["logit_scale"].reshape(()))

    # ------------------------------------------------------------ data
    def sample_transform(self) -> EntityTokens:
        """Tokenise reports and choose the EntMLM entity tokens in the loader workers."""
        return EntityTokens(self.text.tokenizer(), self.cfg.entity_ratio, self.cfg.entity_min_one)

    def prompt_texts(self) -> list[str]:
        """MMCLIP's disease prompts: ``disease_prompts`` of the dataset's prompt set.

        Falls back to the shipped default prompt set when no prompt set was
        delivered (an objective loaded from a checkpoint for a preview).
        Raises InputError when the set has no ``disease_prompts``.
        """
        prompts = self.dataset_fields.get("prompts")
        if not prompts:
            from cxrkit.text.prompts import load_prompts

            prompts = load_prompts(None)
        texts = prompts.get("disease_prompts") if isinstance(prompts, dict) else None
        if not texts:
            raise InputError(
                "the annotations' prompts.json has no 'disease_prompts' (MMCLIP's disease-kind "
                "prompts); re-run `cxrkit annotate` with a prompt set that has them"
            )
        return [str(t) for t in texts]

    # ------------------------------------------------------------ towers
    def image_encoder(self) -> nn.Module:
        """The timm ViT (state_dict prefix ``encoder.``)."""
        return self.encoder

    def text_encoder(self) -> nn.Module:
        """The text tower."""
        return self.text

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token tensors (T, L) for :meth:`encode_text`, on the CPU."""
        return self.text.tokenizer()(list(texts))

    def logit_scale(self) -> float:
        """The PLAIN multiplier of cosine similarities (stored as its log, clamped)."""
        return float(self._scale().item())

    def _scale(self) -> torch.Tensor:
        return self.log_logit_scale.exp().clamp(max=self.cfg.max_logit_scale)

    def _image_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled vector x (B, C), E_img (B, N, C)) of an unmasked pass."""
        feats = self.encoder.forward_features(images)  # (B, P + N, D)
        pooled = self.encoder.forward_head(feats, pre_logits=True)  # (B, D)
        patches = feats[:, self.encoder.num_prefix_tokens :]
        return self.image_proj(pooled), self.image_proj(patches)

    def _text_features(self, tokens: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled vector y (B, C), E_report (B, T, C))."""
        out = self.text(tokens["input_ids"], tokens["attention_mask"])
        return self.text_proj(out.pooled), self.text_proj(out.tokens)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """x = Linear(pooled image) (B, C), unnormalised."""
        self._check_images(images)
        return self._image_features(images)[0]

    def encode_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """y = Linear(pooled report) (T, C), unnormalised."""
        return self._text_features(tokens)[0]

    def _check_images(self, images: torch.Tensor) -> None:
        size, chans = self.cfg.model.image_size, self.cfg.model.in_chans
        if images.ndim != 4 or images.shape[1:] != (chans, size, size):
            raise InputError(
                f"MMCLIP expects images of shape (B, {chans}, {size}, {size}) (model.image_size), "
                f"got {tuple(images.shape)}; make data.image_size equal model.image_size"
            )

    # ------------------------------------------------------------ AttMIM
    @torch.no_grad()
    def _prompt_features(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """E_prompt: the real tokens of every disease prompt, (M, C), and their mask (M,)."""
        tokens = self.tokenize(self.prompt_texts())
        out = self.text(tokens["input_ids"].to(device), tokens["attention_mask"].to(device))
        feats = self.text_proj(out.tokens).flatten(0, 1)  # (P * T, C)
        return feats, tokens["attention_mask"].to(device).flatten().bool()

    @torch.no_grad()
    def attention_scores(
        self,
        e_img: torch.Tensor,
        e_report: torch.Tensor | None,
        report_mask: torch.Tensor | None,
        paired: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-patch scores of each configured map and where each exists: (S, B, N), (S, B).

        Takes E_img (B, N, C), E_report (R, T, C) and its attention mask (R, T) for
        the paired rows (None when there are none), and paired (B,) bool.
        """
        e_img = e_img.detach().float()
        batch, num, _ = e_img.shape
        scores, valid = [], []
        for source in self.cfg.attention_maps:
            score = torch.zeros(batch, num, device=e_img.device)
            exists = torch.zeros(batch, dtype=torch.bool, device=e_img.device)
            if source == "report" and e_report is not None:
                attended = attention_map(e_img[paired], e_report.float(), report_mask.bool())
                score[paired] = patch_scores(attended, e_img[paired], self.cfg.patch_score)
                exists = paired.clone()
            elif source == "prompt":
                feats, mask = self._prompt_features(e_img.device)
                keys = feats.float()[None].expand(batch, -1, -1)
                attended = attention_map(e_img, keys, mask[None].expand(batch, -1))
                score = patch_scores(attended, e_img, self.cfg.patch_score)
                exists = torch.ones_like(exists)
            elif source == "self":
                attended = attention_map(e_img, e_img)
                score = patch_scores(attended, e_img, self.cfg.patch_score)
                exists = torch.ones_like(exists)
            scores.append(score)
            valid.append(exists)
        if not scores:
            return torch.zeros(0, batch, num, device=e_img.device), torch.zeros(
                0, batch, dtype=torch.bool, device=e_img.device
            )
        return torch.stack(scores), torch.stack(valid)

    # ------------------------------------------------------------ the loss
    def loss(self, batch: dict[str, Any], step: int = 0) -> dict[str, torch.Tensor]:
        """Named losses (module doc) for a batch with image, text and tokens (from the workers).

        Returns ``loss`` (optimised), ``align``, ``mim``, ``mlm`` (NaN when the
        batch has no row for the term), ``mim_paired``, ``mim_unpaired``,
        ``paired_fraction``, ``mask_ratio_actual`` and ``logit_scale``.
        Raises InputError for images of the wrong shape or missing tokens.
        """
        cfg = self.cfg
        images = batch["image"]
        self._check_images(images)
        if "tokens" not in batch:
            raise InputError("MMCLIP needs batch['tokens'] (its sample transform was not run)")
        device = images.device
        tokens = {k: v.to(device) for k, v in batch["tokens"].items()}
        paired = torch.tensor([bool(t.strip()) for t in batch["text"]], device=device)
        warm = step < cfg.warmup_steps

        x_img, e_img = self._image_features(images)
        e_rep = report_mask = y_txt = None
        if bool(paired.any()):
            report_tokens = {k: v[paired] for k, v in tokens.items()}
            y_txt, e_rep = self._text_features(report_tokens)
            report_mask = report_tokens["attention_mask"]
        attn_img = e_img
        if cfg.attention_pass == "separate":
            attn_img = self._eval_pass(images)
        scores, valid = self.attention_scores(attn_img, e_rep, report_mask, paired)
        ids_keep, mask, ids_restore, _ = attmim_masking(
            scores, valid, cfg.attention_ratio, cfg.mask_ratio
        )

        latent = encode_visible(self.encoder, images, ids_keep)
        pred = self.mim_decoder(latent, ids_restore).float()
        target = patchify(images, self.patch_size).float()
        mim_all, _ = masked_patch_loss(pred.detach(), target, mask, cfg.norm_pix_loss)
        zero = pred.sum() * 0.0
        nan = torch.tensor(NAN, device=device)
        total = zero
        out: dict[str, torch.Tensor] = {"mim": mim_all}
        for name, rows, weight in (
            ("mim_paired", paired, 1.0),
            ("mim_unpaired", ~paired, cfg.unpaired_weight),
        ):
            if bool(rows.any()):
                term, _ = masked_patch_loss(pred[rows], target[rows], mask[rows], cfg.norm_pix_loss)
                total = total + weight * term
                out[name] = term.detach()
            else:
                out[name] = nan

        out["mlm"], out["align"] = nan, nan
        if y_txt is not None:
            mlm = self._mlm_loss(report_tokens, e_rep, e_img[paired])
            total = total + mlm
            out["mlm"] = mlm.detach()
        if y_txt is not None or cfg.gather_negatives:
            align = self._align_loss(x_img, y_txt, paired)
            if align is not None:
                total = total + (align.detach() * 0.0 if warm else align)
                out["align"] = align.detach()
        out["loss"] = total
        out["paired_fraction"] = paired.float().mean()
        out["mask_ratio_actual"] = mask.detach().mean()
        out["logit_scale"] = self._scale().detach()
        return out

    @torch.no_grad()
    def _eval_pass(self, images: torch.Tensor) -> torch.Tensor:
        was = self.encoder.training
        self.encoder.eval()
        try:
            return self._image_features(images)[1]
        finally:
            self.encoder.train(was)

    def _mlm_loss(
        self, tokens: dict[str, torch.Tensor], e_rep: torch.Tensor, e_img: torch.Tensor
    ) -> torch.Tensor:
        """EntMLM cross-entropy over the chosen entity tokens of the paired rows (0 if none)."""
        mlm_mask = tokens["mlm_mask"].bool() & tokens["attention_mask"].bool()
        if not self.causal_text:
            mask_id = self.text.tokenizer().mask_id
            ids = torch.where(
                mlm_mask, torch.full_like(tokens["input_ids"], mask_id), tokens["input_ids"]
            )
            e_rep = self.text_proj(self.text(ids, tokens["attention_mask"]).tokens)
        allowed = entmlm_attention(mlm_mask, tokens["attention_mask"])
        logits = self.mlm_decoder(e_rep, mlm_mask, allowed, e_img, predict=mlm_mask)  # (M, V)
        if not bool(mlm_mask.any()):
            return self.mlm_decoder.head.weight.sum() * 0.0 + e_rep.sum() * 0.0
        return F.cross_entropy(logits.float(), tokens["input_ids"][mlm_mask])

    def _align_loss(
        self, x_img: torch.Tensor, y_txt: torch.Tensor | None, paired: torch.Tensor
    ) -> torch.Tensor | None:
        """Eq 12 over the paired rows (of every process with ``gather_negatives``); None if < 2."""
        text = torch.zeros_like(x_img)
        if y_txt is not None:
            text = text.index_put((paired.nonzero().flatten(),), y_txt.to(text.dtype))
        if self.cfg.gather_negatives:
            image, text = gathered_pairs(x_img, text, paired)
        else:
            image, text = x_img[paired], text[paired]
        if image.shape[0] < 2:
            return None
        i2t, t2i = symmetric_infonce(image, text, self._scale())
        return i2t + t2i

    def to_open_clip(self, out_dir: Any = None) -> tuple[dict, dict[str, torch.Tensor]]:
        """The ``open_clip`` capability: (model_cfg, state_dict) in open_clip's CLIP names.

        ``out_dir`` is unused: open_clip's own text tower needs no side files.

        Raises InputError for a text tower that is not open_clip's (``text.kind``
        hf/bert) or not pooled at the end-of-text token.
        """
        from cxrkit.export.open_clip_format import clip_text_to_open_clip, vit_to_open_clip_visual

        if self.cfg.text.kind != "open_clip" or self.cfg.text.pooling != "eos":
            raise InputError(
                "open_clip export of MMCLIP needs the open_clip text tower pooled at the "
                f"end-of-text token (text.kind={self.cfg.text.kind}, pooling={self.cfg.text.pooling})"
            )
        import open_clip

        if (open_clip.get_model_config(self.cfg.text.open_clip_model) or {}).get("quick_gelu"):
            raise InputError(
                f"open_clip export: text.open_clip_model {self.cfg.text.open_clip_model!r} uses "
                "QuickGELU, the image tower exact GELU; open_clip's config holds one for both"
            )
        vision_cfg, state = vit_to_open_clip_visual(self.encoder, self.image_proj.weight.T)
        text_cfg, text_state = clip_text_to_open_clip(
            self.text.transformer, self.text_proj.weight.T, self.cfg.text.context_length
        )
        state.update(text_state)
        state["logit_scale"] = self._scale().detach().float().log().reshape(())
        model_cfg = {
            "embed_dim": self.cfg.embed_dim,
            "vision_cfg": vision_cfg,
            "text_cfg": text_cfg,
            "quick_gelu": False,
        }
        return model_cfg, state

    # ------------------------------------------------------------ previews
    @torch.no_grad()
    def reconstruct(
        self, images: torch.Tensor, seed: int, contour: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The ``reconstruction`` capability: (images, masked input, reconstruction), (B, C, H, W).

        No reports here: the masks come from the prompt and self maps (as for an
        image-only row), the random subset drawn from ``seed``.
        """
        self._check_images(images)
        _, e_img = self._image_features(images)
        paired = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
        scores, valid = self.attention_scores(e_img, None, None, paired)
        generator = torch.Generator().manual_seed(int(seed))
        ids_keep, mask, ids_restore, _ = attmim_masking(
            scores, valid, self.cfg.attention_ratio, self.cfg.mask_ratio, generator
        )
        pred = self.mim_decoder(encode_visible(self.encoder, images, ids_keep), ids_restore).float()
        if self.cfg.norm_pix_loss:
            target = patchify(images.float(), self.patch_size)
            mean = target.mean(dim=-1, keepdim=True)
            std = (target.var(dim=-1, keepdim=True) + 1e-6).sqrt()
            pred = pred * std + mean
        chans = self.cfg.model.in_chans
        pixels = unpatchify(pred, self.patch_size, self.grid, chans)
        hidden = mask.float()[:, :, None].expand(-1, -1, pred.shape[-1])
        hidden = unpatchify(hidden, self.patch_size, self.grid, chans)
        return images, images * (1 - hidden), pixels * hidden + images * (1 - hidden)
