"""Report text to token tensors in the loader workers, with entity spans aligned to tokens.

:class:`TokenizeText` is a ready :class:`~cxrkit.io.fields.SampleTransform`:
an objective returns ``TokenizeText(tower.tokenizer(), entities=True)`` from
``sample_transform()`` and its batches carry ``batch["tokens"]`` = the
tokenizer's tensors stacked to (B, T) (``input_ids``, ``attention_mask``,
``offsets`` (B, T, 2), ``word_ids``) plus, with ``entities``, ``entity_mask``
(B, T) bool: the tokens inside an entity span of the annotations.

The tokenizer is any picklable callable ``list[str] -> dict[str, Tensor]``
padding to a fixed length, with character ``offsets`` (B, T, 2) into the text
(negative for special and padding tokens), as ``cxrkit.models`` tokenizers give.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from cxrkit.io.fields import SampleTransform

TokenizerFn = Callable[[Sequence[str]], dict[str, torch.Tensor]]


def entity_token_mask(offsets: torch.Tensor, entities: list[dict]) -> torch.Tensor:
    """Which tokens lie in an entity span: (T,) bool.

    Takes the token character offsets (T, 2) ``[start, end)`` (negative for
    special and padding tokens) and entities with ``start``/``end`` into the
    same text. A token counts when it overlaps a span by at least one character.
    """
    mask = torch.zeros(offsets.shape[0], dtype=torch.bool)
    starts, ends = offsets[:, 0], offsets[:, 1]
    real = (starts >= 0) & (ends > starts)
    for entity in entities:
        mask |= real & (starts < int(entity["end"])) & (ends > int(entity["start"]))
    return mask


class TokenizeText(SampleTransform):
    """Tokenise each sample's ``text`` in the workers; optionally mark entity tokens.

    Takes the tokenizer, the batch key to write (default ``tokens``) and
    whether to add ``entity_mask`` (the objective must then need ``entities``).
    """

    def __init__(self, tokenizer: TokenizerFn, key: str = "tokens", entities: bool = False):
        self.tokenizer, self.key, self.entities = tokenizer, key, entities

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        tokens = {k: v[0] for k, v in self.tokenizer([sample["text"]]).items()}  # (T, ...)
        if self.entities:
            if "offsets" not in tokens:
                raise ValueError("entity masks need a tokenizer that returns character offsets")
            tokens["entity_mask"] = entity_token_mask(tokens["offsets"], sample["entities"])
        return {self.key: tokens}
