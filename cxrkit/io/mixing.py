"""Batches that mix two datasets: paired rows plus image-only rows from a second artifact.

MMCLIP (Wu et al., §3.1, App. B) trains on MIMIC-CXR image-report pairs and on
PadChest images without their reports. ``cxrkit pretrain --unpaired DS`` reads
a second dataset artifact whose rows join every batch (``data.unpaired_per_batch``
of them) as image-only rows: :class:`ImageOnly` blanks their report text (and
entities) before the objective's own sample transform runs, and
:func:`merge_batches` concatenates the two collated batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from cxrkit.io.fields import SampleTransform


class ImageOnly(SampleTransform):
    """Blank a sample's report (``text`` = "", ``entities`` = []) then run ``inner`` (if any)."""

    def __init__(self, inner: SampleTransform | None, entities: bool = False) -> None:
        self.inner, self.entities = inner, entities

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        blank: dict[str, Any] = {"text": ""}
        if self.entities:
            blank["entities"] = []
        out = dict(blank)
        if self.inner is not None:
            out.update(self.inner({**sample, **blank}))
        return out

    def collate(self, key: str, values: list[Any]) -> Any:
        """The inner transform's rule (text and entities stay lists)."""
        if key in ("text", "entities") or self.inner is None:
            return list(values)
        return self.inner.collate(key, values)


def merge_batches(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """Concatenate two collated batches key by key: tensors along dim 0, lists, dicts per key.

    Raises ValueError naming a key that only one batch has or whose types differ.
    """
    if set(first) != set(second):
        raise ValueError(
            f"batches to merge have different keys: {sorted(set(first) ^ set(second))}"
        )
    out: dict[str, Any] = {}
    for key, value in first.items():
        other = second[key]
        if torch.is_tensor(value) and torch.is_tensor(other):
            out[key] = torch.cat([value, other.to(value.dtype)])
        elif isinstance(value, dict) and isinstance(other, dict):
            out[key] = merge_batches(value, other)
        elif isinstance(value, list) and isinstance(other, list):
            out[key] = value + other
        else:
            raise ValueError(
                f"batch key {key!r}: cannot merge {type(value).__name__} and {type(other).__name__}"
            )
    return out


def mixed(first: Iterable[dict], second: Iterable[dict]) -> Iterator[dict[str, Any]]:
    """Merged batches of two loaders, step by step (ends with the shorter one)."""
    for a, b in zip(first, second, strict=False):
        yield merge_batches(a, b)
