"""What an objective offers evaluation and export, declared instead of probed.

An objective lists its capabilities in the class attribute ``capabilities``;
eval and export ask :func:`supports` and then call the methods of the matching
Protocol below. Registration (``@register``) checks that a class declaring a
capability defines every method of it, so a missing method fails at import,
not in the middle of an evaluation.

Capabilities and their methods:

``image_text`` (:class:`ImageText`)
    ``encode_image(images (B, 1, S, S)) -> (B, D)`` unnormalised embedding;
    ``tokenize(texts: list[str]) -> dict[str, Tensor]`` (``input_ids``,
    ``attention_mask``, ... each (T, L), on CPU);
    ``encode_text(tokens: dict[str, Tensor]) -> (T, D)`` unnormalised embedding;
    ``logit_scale() -> float``: the PLAIN multiplier of cosine similarities
    (how it is stored, log or plain, is the objective's business; it says so in
    its docstring); ``text_encoder() -> nn.Module | None``: the text tower.
``open_clip`` (:class:`OpenClipExportable`, needs ``image_text``)
    ``to_open_clip(out_dir=None) -> (model_cfg, state_dict)`` in open_clip's names;
    given ``out_dir`` (the export's open_clip folder), it also writes the side files
    its text tower needs there (a Hugging Face tokenizer and config).
``reconstruction`` (:class:`Reconstructs`)
    ``reconstruct(images, seed, contour=None) -> (images, masked, reconstruction)``,
    all (B, C, H, W) in the input's pixel space, for plots.
``physio`` (:class:`HasPhysio`)
    ``physio_encoder() -> nn.Module | dict[str, nn.Module]``: physiology towers
    (several teachers as ``{"ecg": ..., "labs": ...}``), exported next to the image one.
``fused_scoring`` (:class:`FusedScorer`): models that score an (image, text)
    pair jointly (M3AE's image-text matching head) instead of embedding each side:
    ``tokenize(texts) -> dict[str, Tensor]`` (each (T, L), on CPU);
    ``score_pairs(images, tokens) -> (B, T)`` higher = more likely a match.
    Zero-shot and retrieval eval score pairs with it (:mod:`cxrkit.evaluate.fused`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import nn

IMAGE_TEXT = "image_text"
OPEN_CLIP = "open_clip"
RECONSTRUCTION = "reconstruction"
FUSED_SCORING = "fused_scoring"
PHYSIO = "physio"


@runtime_checkable
class ImageText(Protocol):
    """Dual-encoder image-text model: both towers, a tokenizer and a temperature."""

    def encode_image(self, images: torch.Tensor) -> torch.Tensor: ...

    def encode_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]: ...

    def logit_scale(self) -> float: ...

    def text_encoder(self) -> nn.Module | None: ...


@runtime_checkable
class OpenClipExportable(ImageText, Protocol):
    """An image-text model that can write itself in open_clip's layout."""

    def to_open_clip(self, out_dir: Path | None = None) -> tuple[dict, dict[str, torch.Tensor]]: ...


@runtime_checkable
class Reconstructs(Protocol):
    """A model that reconstructs hidden parts of an image (MAE-style previews)."""

    def reconstruct(
        self, images: torch.Tensor, seed: int, contour: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


@runtime_checkable
class HasPhysio(Protocol):
    """A model with physiology encoders (ECG, labs) worth exporting."""

    def physio_encoder(self) -> nn.Module | dict[str, nn.Module]: ...


@runtime_checkable
class FusedScorer(Protocol):
    """A model that scores image-text pairs jointly (e.g. an ITM head)."""

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]: ...

    def score_pairs(
        self, images: torch.Tensor, tokens: dict[str, torch.Tensor]
    ) -> torch.Tensor: ...


PROTOCOLS: dict[str, type] = {
    IMAGE_TEXT: ImageText,
    OPEN_CLIP: OpenClipExportable,
    RECONSTRUCTION: Reconstructs,
    FUSED_SCORING: FusedScorer,
    PHYSIO: HasPhysio,
}
# A capability that builds on another: declaring it without the base is an error.
REQUIRES = {OPEN_CLIP: IMAGE_TEXT}


def protocol_methods(capability: str) -> list[str]:
    """Method names a capability requires (from its Protocol)."""
    protocol = PROTOCOLS[capability]
    names: set[str] = set()
    for klass in protocol.__mro__:
        if klass in (Protocol, object) or not getattr(klass, "_is_protocol", False):
            continue
        names |= {n for n in vars(klass) if not n.startswith("_") and callable(vars(klass)[n])}
    return sorted(names)


def check_declaration(cls: type) -> None:
    """Raise TypeError when ``cls.capabilities`` names an unknown capability or misses a method."""
    declared = frozenset(getattr(cls, "capabilities", frozenset()))
    for capability in sorted(declared):
        if capability not in PROTOCOLS:
            raise TypeError(
                f"{cls.__name__} declares unknown capability {capability!r}; "
                f"known: {', '.join(sorted(PROTOCOLS))}"
            )
        base = REQUIRES.get(capability)
        if base is not None and base not in declared:
            raise TypeError(f"{cls.__name__}: capability {capability!r} needs {base!r} too")
        missing = [m for m in protocol_methods(capability) if not callable(getattr(cls, m, None))]
        if missing:
            raise TypeError(
                f"{cls.__name__} declares {capability!r} but does not define {', '.join(missing)}"
            )


def supports(objective: object, capability: str) -> bool:
    """Whether ``objective`` declares ``capability`` (see module docstring). KeyError if unknown."""
    if capability not in PROTOCOLS:
        raise KeyError(f"unknown capability {capability!r}; known: {', '.join(sorted(PROTOCOLS))}")
    return capability in getattr(type(objective), "capabilities", frozenset())
