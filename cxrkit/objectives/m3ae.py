"""M3AE: multi-modal masked autoencoding with co-attention fusion (Chen et al., MICCAI 2022).

An image tower (a timm ViT) and a text tower (:mod:`cxrkit.models.text`) feed a
fusion stack of co-attention layers, one stack per stream: each layer is BERT's
post-norm self-attention, cross-attention to the other stream and a
feed-forward block. Three passes per step, as the released code
(``m3ae/modules/objectives.py``) does:

- ``mlm``: whole-word-masked text (15 %, done in the loader workers by
  :class:`WholeWordMasking`) with the full image; an MLM head on the fused text
  tokens; cross-entropy on the masked positions only.
- ``mim``: the full text with 75 % of the image patches hidden (the image tower
  sees the visible ones only); the fused image stream after ``mim_layer``
  co-attention layers goes to a transformer decoder that predicts every patch;
  per-patch squared error against normalised pixels, on hidden patches only.
- ``itm``: the full text with the full image for half the pairs and another
  sample's image for the rest; a 2-way head on the two pooled first tokens.

``loss = mlm + mim + itm`` (the code's weights are all 1).

Differences from the released code, on purpose:

- The image tower of the full image and the text tower of the full text run
  once per step and are shared by the passes that need them (the code reruns
  them per pass). Each tower is per-sample, so swapping images for ITM equals
  swapping their features; only dropout draws differ.
- The swapped image is another image of the same batch (the code draws a
  random image from the dataset); across ranks nothing is gathered.
- The masked-image pass stops after ``mim_layer`` fusion layers: later layers
  get no loss from it in the code either.
- Whole-word masking groups tokens by the tokenizer's word ids (the code's
  collator groups ``##`` pieces, which for RoBERTa's byte-level BPE means every
  token is its own "word") and takes 15 % of the real (non-special,
  non-padding) tokens.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cxrkit.config import doc
from cxrkit.errors import ConfigError, InputError
from cxrkit.io.fields import SampleTransform
from cxrkit.models.decoders import MAEDecoder, check_decoder_width
from cxrkit.models.text import TextTower, build_text_tower
from cxrkit.models.tower_configs import TextConfig, VisionConfig
from cxrkit.models.vision import build_vision_encoder, encode_visible, patchify
from cxrkit.objectives.base import Objective, register
from cxrkit.objectives.capabilities import FUSED_SCORING
from cxrkit.objectives.mae import masked_patch_loss
from cxrkit.objectives.masking import random_masking

IGNORE = -100  # label of positions without an MLM target (torch's cross-entropy default)
INIT_STD = 0.02  # BERT / the code's init_weights: normal(0, 0.02) linears and embeddings
ITM_CHUNK = 256  # image-text pairs fused at once when scoring for eval


@dataclass
class M3AEConfig:
    """Settings of the M3AE objective: ``[model]`` is the image tower, the rest ``[objective]``."""

    model: VisionConfig = dataclasses.field(
        default_factory=VisionConfig, metadata={"help": "the image tower (the [model] table)"}
    )
    text: TextConfig = dataclasses.field(
        default_factory=TextConfig, metadata={"help": "the text tower ([objective.text])"}
    )
    fusion_dim: int = doc("width of the co-attention layers (code: hidden_size 768)", 768)
    fusion_layers: int = doc("co-attention layers per stream (code: num_top_layer 6)", 6)
    fusion_heads: int = doc("attention heads in the co-attention layers (code: 12)", 12)
    fusion_mlp_ratio: float = doc("feed-forward width / fusion_dim (code: mlp_ratio 4)", 4.0)
    fusion_dropout: float = doc("dropout in the co-attention layers (code: drop_rate 0.1)", 0.1)
    mask_ratio: float = doc("fraction of image patches hidden in the MIM pass (code: 0.75)", 0.75)
    mlm_probability: float = doc(
        "fraction of the real text tokens chosen for MLM, whole words at a time (code: 0.15)",
        0.15,
    )
    mlm_mask_fraction: float = doc(
        "of the chosen tokens, the part replaced by the mask token (BERT: 0.8)", 0.8
    )
    mlm_random_fraction: float = doc(
        "of the chosen tokens, the part replaced by a random token (BERT: 0.1); the rest "
        "stay as they are",
        0.1,
    )
    mim_layer: int = doc(
        "co-attention layers the image stream passes before the MIM decoder (code: "
        "mim_layer 3, i.e. the input of the 4th layer); fusion_layers = the last output",
        3,
    )
    decoder_dim: int = doc("MIM decoder width (code: mim_decoder_hidden_size 384)", 384)
    decoder_depth: int = doc("MIM decoder blocks (code config: mim_decoder_num_layers 4)", 4)
    decoder_heads: int = doc("MIM decoder heads (code: 6)", 6)
    norm_pix_loss: bool = doc("regress per-patch normalised pixels (code: norm_pix_loss)", True)
    itm_negative_fraction: float = doc(
        "fraction of ITM pairs whose image is swapped for another sample's (code: half)", 0.5
    )
    freeze_text: bool = doc(
        "keep the text tower fixed (no gradients, not in the optimiser or checkpoint; rebuilt "
        "from objective.text); the code trains it, this is for quick CPU runs",
        False,
    )
    lr_scale_fusion: float = doc(
        "learning-rate multiplier of the fusion layers, projections and poolers "
        "(code: lr_multiplier_multi_modal 5)",
        5.0,
    )
    lr_scale_heads: float = doc(
        "learning-rate multiplier of the MLM, MIM and ITM heads (code: lr_multiplier_head 5)",
        5.0,
    )

    def validate(self) -> None:
        """Raise ConfigError on inconsistent settings."""
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ConfigError(f"objective.mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ConfigError(
                f"objective.mlm_probability must be in (0, 1), got {self.mlm_probability}"
            )
        fractions = (self.mlm_mask_fraction, self.mlm_random_fraction)
        if min(fractions) < 0 or sum(fractions) > 1.0:
            raise ConfigError(
                "objective.mlm_mask_fraction and mlm_random_fraction must be >= 0 and sum to <= 1"
            )
        if self.fusion_layers < 1 or not 1 <= self.mim_layer <= self.fusion_layers:
            raise ConfigError(
                f"objective.mim_layer must be in [1, fusion_layers={self.fusion_layers}], "
                f"got {self.mim_layer}"
            )
        if self.fusion_dim % self.fusion_heads:
            raise ConfigError(
                f"objective.fusion_dim {self.fusion_dim} is not divisible by "
                f"fusion_heads {self.fusion_heads}"
            )
        check_decoder_width(self.decoder_dim, self.decoder_heads)
        if not 0.0 < self.itm_negative_fraction < 1.0:
            raise ConfigError("objective.itm_negative_fraction must be in (0, 1)")
        if self.lr_scale_fusion < 0 or self.lr_scale_heads < 0:
            raise ConfigError("objective.lr_scale_fusion and lr_scale_heads must be >= 0")
        if not 0.0 <= self.fusion_dropout < 1.0:
            raise ConfigError("objective.fusion_dropout must be in [0, 1)")


# ------------------------------------------------------------------ losses (checked by hand)
def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions with a label.

    Takes logits (B, T, V) and labels (B, T) with ``IGNORE`` (-100) where there is
    no target. Returns the mean of -log softmax(logits)[label] over labelled
    positions; 0 (with a graph) when no position is labelled.
    """
    flat = labels.reshape(-1)
    if not bool((flat != IGNORE).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), flat, ignore_index=IGNORE)


def itm_pairs(
    batch_size: int, negative_fraction: float = 0.5, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which image each text is paired with for image-text matching.

    Takes the batch size B, the fraction of swapped pairs and an optional CPU
    generator. Returns (labels (B,) long, 1 = matched; image_index (B,) long):
    ``round(B * negative_fraction)`` texts (at least 1 and at most B - 1 when
    B > 1) get another sample's image (``image_index[i] != i``), the others
    their own. With B = 1 nothing can be swapped: one positive pair.
    """
    if batch_size < 2:
        return torch.ones(batch_size, dtype=torch.long), torch.arange(batch_size)
    negatives = min(batch_size - 1, max(1, round(batch_size * negative_fraction)))
    order = torch.randperm(batch_size, generator=generator)
    labels = torch.ones(batch_size, dtype=torch.long)
    labels[order[:negatives]] = 0
    # A shift in 1..B-1 never lands on the sample itself.
    shift = torch.randint(1, batch_size, (batch_size,), generator=generator)
    own = torch.arange(batch_size)
    index = torch.where(labels == 1, own, (own + shift) % batch_size)
    return labels, index


# ------------------------------------------------------------------ whole-word masking (workers)
class WholeWordMasking(SampleTransform):
    """Tokenise each sample's ``text`` and mask whole words for MLM, in the loader workers.

    Takes the tower's picklable tokenizer (with ``word_ids``, ``mask_id``,
    ``vocab_size``), the fraction of real tokens to choose and the BERT
    replacement fractions. Per sample, with randomness from ``sample["seed"]``:
    words (tokens sharing a word id; special and padding tokens have none) are
    visited in random order and taken whole while the chosen count stays
    within ``max(1, round(real_tokens * probability))`` (the greedy rule of
    BERT's whole-word masking). Each chosen token becomes the mask token with
    probability ``mask_fraction``, else a random vocabulary id with probability
    ``random_fraction / (1 - mask_fraction)``, else stays.

    Adds ``tokens`` (input_ids, attention_mask, word_ids: (T,)) and ``mlm``
    (input_ids: the masked ids, labels: the original id at chosen positions,
    -100 elsewhere).
    """

    def __init__(
        self,
        tokenizer: Any,
        probability: float = 0.15,
        mask_fraction: float = 0.8,
        random_fraction: float = 0.1,
    ) -> None:
        if getattr(tokenizer, "mask_id", None) is None:
            raise ConfigError(
                "M3AE's masked language modelling needs a tokenizer with a mask token "
                "(a BERT/RoBERTa text tower, text.kind = hf or bert)"
            )
        self.tokenizer = tokenizer
        self.probability = probability
        self.mask_fraction = mask_fraction
        self.random_fraction = random_fraction

    def choose(self, word_ids: list[int], rng: random.Random) -> list[int]:
        """Positions to predict: whole words, about ``probability`` of the real tokens."""
        words: dict[int, list[int]] = {}
        for position, word in enumerate(word_ids):
            if word >= 0:
                words.setdefault(word, []).append(position)
        real = sum(len(p) for p in words.values())
        if real == 0:
            return []
        budget = max(1, round(real * self.probability))
        groups = list(words.values())
        rng.shuffle(groups)
        chosen: list[int] = []
        for group in groups:
            if len(chosen) >= budget:
                break
            if len(chosen) + len(group) > budget:
                continue  # a word never gets split: skip it, try a shorter one
            chosen.extend(group)
        return sorted(chosen)

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        encoded = self.tokenizer([sample["text"]])
        ids = encoded["input_ids"][0]
        word_ids = encoded["word_ids"][0]
        rng = random.Random(int(sample.get("seed", 0)))
        chosen = self.choose(word_ids.tolist(), rng)
        labels = torch.full_like(ids, IGNORE)
        masked = ids.clone()
        keep_random = self.random_fraction / max(1e-12, 1.0 - self.mask_fraction)
        for position in chosen:
            labels[position] = ids[position]
            draw = rng.random()
            if draw < self.mask_fraction:
                masked[position] = self.tokenizer.mask_id
            elif rng.random() < keep_random:
                masked[position] = rng.randrange(self.tokenizer.vocab_size)
        return {
            "tokens": {
                "input_ids": ids,
                "attention_mask": encoded["attention_mask"][0],
                "word_ids": word_ids,
            },
            "mlm": {"input_ids": masked, "labels": labels},
        }


# ------------------------------------------------------------------ fusion
class Attention(nn.Module):
    """Multi-head attention of ``x`` over ``context`` with a key-padding mask (BERT's layout)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, keep: torch.Tensor | None
    ) -> torch.Tensor:
        """x (B, N, D) attends to context (B, M, D); keep (B, M) bool (True = real), or None."""
        batch, n, dim = x.shape
        head_dim = dim // self.heads
        q = self.query(x).view(batch, n, self.heads, head_dim).transpose(1, 2)
        k, v = self.key_value(context).view(batch, -1, 2, self.heads, head_dim).unbind(2)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        bias = None if keep is None else keep[:, None, None, :]
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)
        return self.out(y.transpose(1, 2).reshape(batch, n, dim))


class CoAttentionLayer(nn.Module):
    """Self-attention, cross-attention to the other stream, feed-forward; each post-norm.

    As BERT's layer with cross-attention (the code's ``BertCrossLayer``):
    ``x = LN(x + drop(attn(x, x)))``, ``x = LN(x + drop(attn(x, other)))``,
    ``x = LN(x + drop(W2 gelu(W1 x)))``.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = int(round(dim * mlp_ratio))
        self.self_attn = Attention(dim, heads, dropout)
        self.self_norm = nn.LayerNorm(dim, eps=1e-12)
        self.cross_attn = Attention(dim, heads, dropout)
        self.cross_norm = nn.LayerNorm(dim, eps=1e-12)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.mlp_norm = nn.LayerNorm(dim, eps=1e-12)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        other: torch.Tensor,
        keep_self: torch.Tensor | None,
        keep_other: torch.Tensor | None,
    ) -> torch.Tensor:
        """x (B, N, D), other (B, M, D); keep_* (B, N) / (B, M) bool padding masks or None."""
        x = self.self_norm(x + self.drop(self.self_attn(x, x, keep_self)))
        x = self.cross_norm(x + self.drop(self.cross_attn(x, other, keep_other)))
        return self.mlp_norm(x + self.drop(self.mlp(x)))


class Pooler(nn.Module):
    """tanh(W · first token), BERT's pooler (the code's ``Pooler``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(tokens[:, 0]))


class Fusion(nn.Module):
    """Projections into the fusion width, the two co-attention stacks and the two poolers."""

    def __init__(self, image_dim: int, text_dim: int, cfg: M3AEConfig) -> None:
        super().__init__()
        dim = cfg.fusion_dim
        self.image_proj = nn.Linear(image_dim, dim)
        self.text_proj = nn.Linear(text_dim, dim)
        args = (dim, cfg.fusion_heads, cfg.fusion_mlp_ratio, cfg.fusion_dropout)
        self.image_layers = nn.ModuleList(
            [CoAttentionLayer(*args) for _ in range(cfg.fusion_layers)]
        )
        self.text_layers = nn.ModuleList(
            [CoAttentionLayer(*args) for _ in range(cfg.fusion_layers)]
        )
        self.image_pooler = Pooler(dim)
        self.text_pooler = Pooler(dim)

    def forward(
        self,
        image: torch.Tensor,
        text: torch.Tensor,
        text_keep: torch.Tensor,
        layers: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run ``layers`` (default all) co-attention layers on both streams together.

        Takes projected, type-embedded image (B, N, D) and text (B, T, D) tokens
        and the text's keep mask (B, T) bool. Returns (image, text) tokens.
        """
        count = len(self.image_layers) if layers is None else layers
        for index in range(count):
            text_next = self.text_layers[index](text, image, text_keep, None)
            image = self.image_layers[index](image, text, None, text_keep)
            text = text_next
        return image, text


class MLMHead(nn.Module):
    """dense, GELU, LayerNorm, then a vocabulary projection (BERT's MLM head, untied)."""

    def __init__(self, dim: int, vocab_size: int) -> None:
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim, eps=1e-12))
        self.decoder = nn.Linear(dim, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(tokens))


def _init_bert(module: nn.Module) -> None:
    for child in module.modules():
        if isinstance(child, (nn.Linear, nn.Embedding)):
            nn.init.normal_(child.weight, std=INIT_STD)
            if isinstance(child, nn.Linear) and child.bias is not None:
                nn.init.zeros_(child.bias)
        elif isinstance(child, nn.LayerNorm):
            nn.init.ones_(child.weight)
            nn.init.zeros_(child.bias)


# ------------------------------------------------------------------ the objective
@register("m3ae")
class M3AE(Objective):
    """M3AE over a timm ViT and a text tower; the exported image encoder is ``self.encoder``."""

    Config = M3AEConfig
    needs = frozenset({"image", "text"})
    image_encoder_prefix = "encoder."
    capabilities = frozenset({FUSED_SCORING})

    # state_dict prefixes of the parts trained at lr_scale_fusion / lr_scale_heads
    FUSION_PREFIXES = ("fusion.",)
    HEAD_PREFIXES = ("mlm_head.", "mim_head.", "itm_head.")

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        """2-block ViT at 32 px, a 2-layer 32-d BERT, 2 fusion layers, 1-block decoder."""
        model = {"arch": "vit_tiny_patch16_224", "image_size": 32, "patch_size": 8, "depth": 2}
        text = {"kind": "bert", "width": 32, "layers": 1, "heads": 2, "context_length": 32}
        return {
            "model": model,
            "text": text,
            "fusion_dim": 32,
            "fusion_layers": 2,
            "fusion_heads": 2,
            "mim_layer": 1,
            "decoder_dim": 32,
            "decoder_depth": 1,
            "decoder_heads": 2,
        }

    def __init__(self, config: M3AEConfig | dict[str, Any]) -> None:
        super().__init__(config)
        cfg: M3AEConfig = self.cfg
        cfg.validate()
        self.patch_size = cfg.model.patch_size
        self.grid = cfg.model.grid_size
        self.encoder = build_vision_encoder(cfg.model)
        self.text: TextTower = build_text_tower(cfg.text)
        self._tokenizer = self.text.tokenizer()
        if getattr(self._tokenizer, "mask_id", None) is None:
            raise ConfigError(
                "M3AE needs a text tower whose tokenizer has a mask token (text.kind = hf or bert)"
            )
        self.fusion = Fusion(self.encoder.embed_dim, self.text.width, cfg)
        self.type_embed = nn.Embedding(2, cfg.fusion_dim)  # 0 = text, 1 = image (the code's)
        self.mlm_head = MLMHead(cfg.fusion_dim, self._tokenizer.vocab_size)
        self.mim_head = MAEDecoder(
            grid=self.grid,
            encoder_dim=cfg.fusion_dim,
            decoder_dim=cfg.decoder_dim,
            depth=cfg.decoder_depth,
            num_heads=cfg.decoder_heads,
            patch_pixels=self.patch_size**2 * cfg.model.in_chans,
            num_prefix_tokens=self.encoder.num_prefix_tokens,
        )
        self.itm_head = nn.Linear(2 * cfg.fusion_dim, 2)
        for part in (self.fusion, self.type_embed, self.mlm_head, self.itm_head):
            _init_bert(part)

    # ------------------------------------------------------------ protocol
    def frozen_modules(self) -> dict[str, nn.Module]:
        """The text tower when ``freeze_text`` is set, else nothing."""
        return {"text": self.text} if self.cfg.freeze_text else {}

    def image_encoder(self) -> nn.Module:
        """The timm ViT (state_dict prefix ``encoder.``): linear probe, fine-tuning, export."""
        return self.encoder

    def sample_transform(self) -> WholeWordMasking:
        """Tokenising and whole-word masking in the loader workers."""
        cfg = self.cfg
        return WholeWordMasking(
            self._tokenizer, cfg.mlm_probability, cfg.mlm_mask_fraction, cfg.mlm_random_fraction
        )

    def param_groups(self, weight_decay: float) -> list[dict]:
        """The base decay / no-decay split, each further split by learning-rate multiplier:
        1 for the towers and type embeddings, ``lr_scale_fusion`` for ``fusion.*``,
        ``lr_scale_heads`` for the three heads (the code's ×5 groups)."""
        names = {id(p): n for n, p in self.named_parameters()}
        scales = (
            (self.HEAD_PREFIXES, self.cfg.lr_scale_heads),
            (self.FUSION_PREFIXES, self.cfg.lr_scale_fusion),
        )

        def scale_of(param: nn.Parameter) -> float:
            name = names[id(param)]
            return next((s for prefixes, s in scales if name.startswith(prefixes)), 1.0)

        groups = []
        for group in super().param_groups(weight_decay):
            by_scale: dict[float, list] = {}
            for param in group["params"]:
                by_scale.setdefault(scale_of(param), []).append(param)
            for scale, params in sorted(by_scale.items()):
                groups.append({**group, "params": params, "lr_scale": scale})
        return groups

    # ------------------------------------------------------------ towers
    def _check_images(self, images: torch.Tensor) -> None:
        size, chans = self.cfg.model.image_size, self.cfg.model.in_chans
        if images.ndim != 4 or images.shape[1:] != (chans, size, size):
            raise InputError(
                f"M3AE expects images of shape (B, {chans}, {size}, {size}) "
                f"(model.image_size), got {tuple(images.shape)}; make "
                "data.image_size equal model.image_size"
            )

    def _image_tokens(self, images: torch.Tensor, ids_keep: torch.Tensor | None) -> torch.Tensor:
        """Image tower (visible patches only when ids_keep is given), projected, type 1."""
        tokens = self.fusion.image_proj(encode_visible(self.encoder, images, ids_keep))
        return tokens + self.type_embed.weight[1]

    def _text_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Text tower tokens, projected, type 0."""
        tokens = self.text(input_ids, attention_mask).tokens
        return self.fusion.text_proj(tokens) + self.type_embed.weight[0]

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """The tower's tokenizer: input_ids, attention_mask (T, L) on the CPU."""
        encoded = self._tokenizer(list(texts))
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    # ------------------------------------------------------------ heads
    def _itm_logits(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([self.fusion.text_pooler(text), self.fusion.image_pooler(image)], -1)
        return self.itm_head(pooled)

    def loss(self, batch: dict[str, Any], step: int = 0) -> dict[str, torch.Tensor]:
        """``mim``, ``mlm``, ``itm``, their sum ``loss``, and ``itm_acc``, ``mlm_acc``.

        Takes a batch with ``image`` (B, C, S, S) and the outputs of
        :class:`WholeWordMasking` (``tokens``, ``mlm``). ``step`` is unused.
        Raises InputError when the masking transform's outputs are missing or
        the images have the wrong size.
        """
        if "tokens" not in batch or "mlm" not in batch:
            raise InputError(
                "M3AE batches need 'tokens' and 'mlm' from its sample transform "
                "(WholeWordMasking); give the loader objective.sample_transform()"
            )
        images = batch["image"]
        self._check_images(images)
        device = images.device
        ids = batch["tokens"]["input_ids"].to(device)
        attention = batch["tokens"]["attention_mask"].to(device)
        keep = attention.bool()
        cfg = self.cfg

        full_image = self._image_tokens(images, None)  # (B, 1 + L, D)
        full_text = self._text_tokens(ids, attention)  # (B, T, D)

        # MLM: masked text, full image.
        masked_ids = batch["mlm"]["input_ids"].to(device)
        labels = batch["mlm"]["labels"].to(device)
        _, text_out = self.fusion(full_image, self._text_tokens(masked_ids, attention), keep)
        chosen = labels != IGNORE
        logits = self.mlm_head(text_out[chosen])  # only the labelled positions: (M, V)
        mlm = masked_lm_loss(logits[None], labels[chosen][None])
        mlm_acc = (logits.argmax(-1) == labels[chosen]).float().mean() if chosen.any() else mlm

        # MIM: full text, visible patches only; the decoder reads layer mim_layer.
        ids_keep, mask, ids_restore = random_masking(
            images.shape[0], self.grid[0] * self.grid[1], cfg.mask_ratio, None, device
        )
        visible = self._image_tokens(images, ids_keep)
        image_mid, _ = self.fusion(visible, full_text, keep, layers=cfg.mim_layer)
        pred = self.mim_head(image_mid, ids_restore)  # (B, L, p*p*C)
        target = patchify(images, self.patch_size)
        mim, _ = masked_patch_loss(pred.float(), target.float(), mask.float(), cfg.norm_pix_loss)

        # ITM: full text with its own image or another sample's.
        itm_labels, index = itm_pairs(images.shape[0], cfg.itm_negative_fraction)
        itm_labels, index = itm_labels.to(device), index.to(device)
        image_out, text_out = self.fusion(full_image[index], full_text, keep)
        itm_logits = self._itm_logits(image_out, text_out).float()
        itm = F.cross_entropy(itm_logits, itm_labels)
        itm_acc = (itm_logits.argmax(-1) == itm_labels).float().mean()

        return {
            "loss": mlm + mim + itm,
            "mim": mim.detach(),
            "mlm": mlm.detach(),
            "itm": itm.detach(),
            "itm_acc": itm_acc.detach(),
            "mlm_acc": mlm_acc.detach(),
        }

    # ------------------------------------------------------------ eval: fused scoring
    @torch.no_grad()
    def score_pairs(self, images: torch.Tensor, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """The ``fused_scoring`` capability: ITM log-odds of every image with every text.

        Takes images (B, C, S, S) and tokens from :meth:`tokenize` (T texts).
        Returns (B, T) float: logit(match) - logit(no match) of the ITM head;
        higher = more likely a match. Each tower runs once; the fusion stack
        runs on all B × T pairs in chunks of ``ITM_CHUNK``.
        """
        self._check_images(images)
        device = images.device
        ids = tokens["input_ids"].to(device)
        attention = tokens["attention_mask"].to(device)
        image = self._image_tokens(images, None)  # (B, N, D)
        text = self._text_tokens(ids, attention)  # (T, L, D)
        count_b, count_t = image.shape[0], text.shape[0]
        pairs = torch.cartesian_prod(torch.arange(count_b), torch.arange(count_t)).to(device)
        scores = torch.empty(count_b * count_t, device=device)
        for start in range(0, pairs.shape[0], ITM_CHUNK):
            chunk = pairs[start : start + ITM_CHUNK]
            i, t = chunk[:, 0], chunk[:, 1]
            out_image, out_text = self.fusion(image[i], text[t], attention[t].bool())
            logits = self._itm_logits(out_image, out_text).float()
            scores[start : start + chunk.shape[0]] = logits[:, 1] - logits[:, 0]
        return scores.view(count_b, count_t)
