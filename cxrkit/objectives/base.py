"""The objective protocol and registry: the trainer knows nothing method-specific.

An objective is an ``nn.Module`` that owns every trainable part of a method
(image encoder, decoders, text tower, projection heads) and turns a batch into
named losses. The trainer only ever calls :meth:`Objective.loss` and reads
``needs`` to know which batch keys to load.

Batch keys the loader can provide (see ``cxrkit.io.shards``):

- ``image``: float tensor (B, 1, H, W), normalised
- ``contour``: bool tensor (B, H, W), chest-contour mask at the image size
- ``labels``: float tensor (B, 14), CheXpert-style 1/0/-1, NaN = not mentioned
- ``text``: list[str] report text (findings + impression)
- ``image_id``: list[str]
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from cxrkit.config import from_dict, to_dict
from cxrkit.errors import ConfigError

_REGISTRY: dict[str, type[Objective]] = {}


class Objective(nn.Module, metaclass=abc.ABCMeta):
    """Base class of every pretraining objective.

    Subclasses set ``name`` and ``needs`` (a class attribute, or a property when
    it depends on the config), define a ``Config`` dataclass, build their
    modules in ``__init__`` from it (``self.cfg``), and implement :meth:`loss`.
    """

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset({"image"})

    def __init__(self, config: Any) -> None:
        """Takes the objective's ``Config`` dataclass (or a plain dict, converted to it).

        Sets ``self.cfg`` (the dataclass, when the class has a ``Config``) and
        ``self.config`` (its plain-JSON dict, what checkpoints store).
        """
        super().__init__()
        config_cls = getattr(type(self), "Config", None)
        if isinstance(config, dict) and config_cls is not None:
            config = from_dict(config_cls, config)
        self.cfg = config
        self.config = to_dict(config) if dataclasses.is_dataclass(config) else dict(config)

    @abc.abstractmethod
    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Return named scalar losses; the key ``"loss"`` is the one optimised."""

    @abc.abstractmethod
    def image_encoder(self) -> nn.Module:
        """The image encoder that eval and export use (a timm model, features via forward_features)."""

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: no weight decay on biases, norms, position embeddings and tokens."""
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            skip = (
                param.ndim <= 1 or name.endswith(".bias") or "pos_embed" in name or "token" in name
            )
            (no_decay if skip else decay).append(param)
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]


def register(name: str) -> Callable[[type[Objective]], type[Objective]]:
    """Class decorator: ``@register("mae")`` makes the objective buildable by name."""

    def wrap(cls: type[Objective]) -> type[Objective]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"objective {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def available() -> list[str]:
    """Names of the registered objectives."""
    _import_builtin()
    return sorted(_REGISTRY)


def build_objective(name: str, config: dict[str, Any]) -> Objective:
    """Build a registered objective by name from its config dict.

    Takes: the registered name and ``{"model": <[model] table>, **<[objective]
    table without "name">}``; the dict is checked and converted with
    ``cxrkit.config.from_dict(cls.Config, config)`` when the class has a Config.
    Returns: the objective. Raises: ConfigError for an unknown name or setting.
    """
    _import_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown objective {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    cls = _REGISTRY[name]
    config_cls = getattr(cls, "Config", None)
    if config_cls is not None and isinstance(config, dict):
        config = from_dict(config_cls, {k: v for k, v in config.items() if k != "name"})
    return cls(config)


BUILTIN_MODULES = ("mae", "maco", "m3ae", "mmclip", "pacx")


def _import_builtin() -> None:
    # Built-in objectives register themselves on import; a module not written
    # yet in this checkout is skipped, an error inside one that exists is raised.
    import importlib
    import importlib.util

    for module in BUILTIN_MODULES:
        name = f"cxrkit.objectives.{module}"
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)
