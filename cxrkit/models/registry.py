"""Named model configs as data: an image tower, a text tower and a joint embedding width.

Each config is a JSON file in ``cxrkit/models/configs/`` (shipped in the wheel),
in the spirit of open_clip's ``model_configs/*.json``::

    {"description": "...", "notes": "where each value comes from",
     "embed_dim": 768,
     "image": {VisionConfig fields},
     "text": {TextConfig fields}}

Test-size variants (``tiny-*``) build in well under a second on a CPU; the
full-size ones name the towers of the methods cxrkit reproduces. Listing and
resolving configs never imports torch (:mod:`cxrkit.models.tower_configs`);
:func:`build_towers` does.
"""

from __future__ import annotations

import difflib
import importlib.resources
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxrkit.config import doc, from_dict
from cxrkit.errors import ConfigError
from cxrkit.models.tower_configs import TextConfig, VisionConfig

if TYPE_CHECKING:
    from torch import nn

    from cxrkit.models.text import TextTower


@dataclass
class ModelConfig:
    """An image tower, a text tower and the width of the space they are projected into."""

    name: str = doc("the config's name (file stem) or path", "custom")
    description: str = doc("one line for listings", "")
    notes: str = doc("where each value comes from ([paper], [code], [our choice])", "")
    embed_dim: int = doc("width of the joint image-text embedding (projection heads)", 512)
    image: VisionConfig = field(default_factory=VisionConfig, metadata={"help": "image tower"})
    text: TextConfig = field(default_factory=TextConfig, metadata={"help": "text tower"})

    def validate(self) -> None:
        """Raise ConfigError on a non-positive embed_dim or invalid towers."""
        if self.embed_dim <= 0:
            raise ConfigError(f"model {self.name!r}: embed_dim must be positive")
        self.image.validate()
        self.text.validate()


def _configs_dir() -> Any:
    return importlib.resources.files("cxrkit.models") / "configs"


def list_model_configs() -> list[str]:
    """Names of the shipped model configs, sorted."""
    return sorted(
        p.name[: -len(".json")] for p in _configs_dir().iterdir() if p.name.endswith(".json")
    )


def model_config_from_dict(data: dict, name: str = "custom") -> ModelConfig:
    """Build a ModelConfig from its JSON table (module doc), checking every key.

    Raises: ConfigError on an unknown key (with a did-you-mean) or a bad value.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"model config {name!r}: expected a JSON object")
    return from_dict(ModelConfig, {**data, "name": name}, "model")


def _read_shipped(name: str) -> dict:
    resource = _configs_dir() / f"{name}.json"
    if not resource.is_file():
        close = difflib.get_close_matches(name, list_model_configs(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"unknown model config {name!r}{hint} (`cxrkit models` lists them: "
            f"{', '.join(list_model_configs())})"
        )
    return json.loads(resource.read_text())


def get_model_config(name: str) -> ModelConfig:
    """The shipped model config ``name``, or a JSON file when ``name`` is a path to one.

    Raises: ConfigError for an unknown name (with a did-you-mean) or a bad file.
    """
    path = Path(name)
    if path.suffix == ".json" and path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: unreadable model config ({exc})") from exc
        return model_config_from_dict(data, str(path))
    return model_config_from_dict(_read_shipped(name), name)


def resolve_model_config(value: str | dict | ModelConfig) -> ModelConfig:
    """A model config from a name, a full table, or a shipped name plus overrides.

    Takes: ``"maco-vitb16-bert"``; a path to a JSON file; a table
    ``{"name": "tiny-minilm", "text": {"context_length": 32}}`` (the shipped
    config with these fields replaced, tower tables merged key by key); a full
    table without a shipped name; or a ModelConfig (returned as is).
    Raises: ConfigError as get_model_config and model_config_from_dict do.
    """
    if isinstance(value, ModelConfig):
        return value
    if isinstance(value, str):
        return get_model_config(value)
    if not isinstance(value, dict):
        raise ConfigError(f"model: expected a config name or table, got {value!r}")
    name = value.get("name")
    if not isinstance(name, str) or name not in list_model_configs():
        return model_config_from_dict(
            {k: v for k, v in value.items() if k != "name"}, name or "custom"
        )
    merged = _read_shipped(name)
    for key, override in value.items():
        if key in ("image", "text") and isinstance(override, dict):
            merged[key] = {**merged.get(key, {}), **override}
        elif key != "name":
            merged[key] = override
    return model_config_from_dict(merged, name)


def build_towers(cfg: ModelConfig) -> tuple[nn.Module, TextTower]:
    """Build both towers of a model config (random init; see models.init for weights).

    Returns: (timm ViT image encoder, TextTower).
    Raises: ConfigError / InputError as the tower builders do.
    """
    from cxrkit.models.text import build_text_tower  # torch: only when towers are built
    from cxrkit.models.vision import build_vision_encoder

    return build_vision_encoder(cfg.image), build_text_tower(cfg.text)


def describe_image(cfg: VisionConfig) -> str:
    """Short human description of an image tower, e.g. ``vit_base_patch16_224 224px/16``."""
    sizes = [
        f"{k}={getattr(cfg, k)}" for k in ("depth", "embed_dim", "num_heads") if getattr(cfg, k)
    ]
    return f"{cfg.arch} {cfg.image_size}px/{cfg.patch_size}" + (
        f" ({', '.join(sizes)})" if sizes else ""
    )


def describe_text(cfg: TextConfig) -> str:
    """Short human description of a text tower, e.g. ``bert 768x12 heads 12``."""
    if cfg.kind == "hf":
        where = cfg.path or "all-MiniLM-L6-v2 (bundled)"
        return f"hf {where}, {cfg.context_length} tokens, {cfg.pooling}"
    sizes = "x".join(str(v) for v in (cfg.width, cfg.layers) if v is not None)
    head = (
        f"bert {sizes or 'default'}" if cfg.kind == "bert" else f"open_clip {cfg.open_clip_model}"
    )
    if cfg.kind == "open_clip" and sizes:
        head += f" ({sizes})"
    return f"{head}, {cfg.context_length} tokens, {cfg.pooling}"
