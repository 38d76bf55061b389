"""The objective protocol and registry: the trainer knows nothing method-specific.

An objective is an ``nn.Module`` that owns every part of a method (image
encoder, decoders, text tower, projection heads, frozen teachers) and turns a
batch into named losses. The protocol, all of it declared on the class:

- ``Config``: a dataclass of its settings (the ``[model]`` table plus the
  ``[objective]`` table); unknown keys are a ConfigError with a did-you-mean;
- ``needs``: batch field names (:mod:`cxrkit.io.fields`: image, contour, labels,
  text, entities, prompts, image_id, study_id, patient_id, view);
- ``loss(batch, step) -> {"loss": ..., other named scalars}``; ``step`` is the
  0-based optimiser step (curricula, warm-ups);
- ``sample_transform() -> SampleTransform | None``: per-sample work (tokenising,
  text masking) run in the DataLoader workers; its outputs join the batch;
- ``on_dataset_fields(values)``: per-dataset fields (``prompts``) once, before training;
- ``param_groups(weight_decay)``: optimiser groups; a group may carry
  ``lr_scale`` (its lr = schedule(step) * lr_scale) and its own ``weight_decay``;
- ``frozen_modules() -> {attribute path: module}``: parts that are not trained
  (teachers, a fixed text tower): kept in eval mode, no gradients, no optimiser
  group, left out of EMA and of the checkpoint's weights (see :meth:`Objective.trainable_state_dict`);
- ``capabilities``: what eval and export may use (:mod:`cxrkit.objectives.capabilities`);
- ``artifact_settings``: ``{setting: artifact kind}`` for settings that name an
  artifact (a student checkpoint, a pairs table): a training run counts each by the
  artifact's id, not its path, so moving it does not retrain;
- ``weights_settings``: settings that name a weights file or folder outside cxrkit
  (MaCo's ``image_init``); a run counts each by its content, as it counts the files of
  a text tower (:mod:`cxrkit.objectives.weights`);
- ``tiny_config()``: a config small enough for the every-objective test.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from cxrkit.config import from_dict, to_dict
from cxrkit.errors import ArtifactError, ConfigError
from cxrkit.objectives.capabilities import check_declaration

if TYPE_CHECKING:
    from cxrkit.io.fields import SampleTransform

_REGISTRY: dict[str, type[Objective]] = {}


class Objective(nn.Module, metaclass=abc.ABCMeta):
    """Base class of every pretraining objective.

    Subclasses set ``name`` and ``needs`` (a class attribute, or a property when
    it depends on the config), define a ``Config`` dataclass, build their
    modules in ``__init__`` from it (``self.cfg``), and implement :meth:`loss`.
    """

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset({"image"})
    capabilities: ClassVar[frozenset[str]] = frozenset()
    image_encoder_prefix: ClassVar[str] = ""  # state_dict prefix of image_encoder()
    artifact_settings: ClassVar[dict[str, str]] = {}  # setting -> artifact kind (see above)
    weights_settings: ClassVar[tuple[str, ...]] = ()  # settings naming weights (see above)

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
    def loss(self, batch: dict[str, Any], step: int = 0) -> dict[str, torch.Tensor]:
        """Return named scalar losses; the key ``"loss"`` is the one optimised.

        ``step`` is the 0-based optimiser step the batch belongs to.
        """

    @abc.abstractmethod
    def image_encoder(self) -> nn.Module:
        """The image encoder that eval and export use (a timm model, features via forward_features)."""

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        """A config dict (``{"model": ..., **objective settings}``) small enough for a CPU test.

        Every registered objective must provide one: the test over ``available()``
        builds each objective from it (loss, backward, save, load, export).
        """
        raise NotImplementedError(f"objective {cls.name!r} defines no tiny_config()")

    # ------------------------------------------------------------ data
    def sample_transform(self) -> SampleTransform | None:
        """Per-sample work for the DataLoader workers (picklable), or None (the default)."""
        return None

    def on_dataset_fields(self, values: dict[str, Any]) -> None:
        """Receive the per-dataset fields named in ``needs`` (e.g. ``prompts``) once.

        Called by the pretrain stage before the loader starts (and before
        :meth:`sample_transform` is asked for). The default keeps them in
        ``self.dataset_fields``.
        """
        self.dataset_fields = dict(values)

    # ------------------------------------------------------------ trainable vs frozen
    def frozen_modules(self) -> dict[str, nn.Module]:
        """Submodules that are not trained, by attribute path (``{"teacher": self.teacher}``).

        They are rebuilt from their own source whenever the objective is built
        (e.g. a teacher checkpoint path in the Config), so checkpoints do not
        store them; they stay in eval mode and never get gradients.
        """
        return {}

    def frozen_prefixes(self) -> tuple[str, ...]:
        """state_dict key prefixes of the frozen modules (``"teacher."``)."""
        return tuple(f"{path}." for path in self.frozen_modules())

    def freeze(self) -> None:
        """Turn off gradients of the frozen modules and put them in eval mode."""
        for module in self.frozen_modules().values():
            module.requires_grad_(False)
            module.eval()

    def train(self, mode: bool = True) -> Objective:
        """nn.Module.train, except that frozen modules stay in eval mode."""
        super().train(mode)
        for module in self.frozen_modules().values():
            module.eval()
        return self

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The state_dict without the frozen modules' entries: what checkpoints and EMA hold."""
        skip = self.frozen_prefixes()
        state = self.state_dict()
        return {k: v for k, v in state.items() if not (skip and k.startswith(skip))}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load :meth:`trainable_state_dict` weights strictly (frozen entries may be absent).

        Raises ArtifactError when a trainable key is missing, a key is unknown or a
        shape differs, with the first few names.
        """
        skip = self.frozen_prefixes()
        try:
            result = self.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shapes that do not fit
            first = " ".join(str(exc).splitlines()[:3])
            raise ArtifactError(f"weights do not fit objective {self.name!r} ({first})") from exc
        missing = [k for k in result.missing_keys if not (skip and k.startswith(skip))]
        if missing or result.unexpected_keys:
            raise ArtifactError(
                f"weights do not fit objective {self.name!r}: missing {missing[:3]}, "
                f"unexpected {list(result.unexpected_keys)[:3]}"
            )

    # ------------------------------------------------------------ optimiser
    def param_groups(self, weight_decay: float) -> list[dict]:
        """Optimiser groups: no weight decay on biases, norms, position embeddings and tokens.

        Frozen modules get no group. Override to give towers their own
        ``lr_scale`` (a group dict may hold ``params``, ``weight_decay``, ``lr_scale``).
        """
        frozen = {id(p) for m in self.frozen_modules().values() for p in m.parameters()}
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if not param.requires_grad or id(param) in frozen:
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
        check_declaration(cls)
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def available() -> list[str]:
    """Names of the registered objectives."""
    _import_builtin()
    return sorted(_REGISTRY)


def objective_class(name: str) -> type[Objective]:
    """The registered class of ``name``. Raises ConfigError with a did-you-mean."""
    import difflib

    _import_builtin()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown objective {name!r}{hint}; available: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


def resolve_objective_config(name: str, config: dict[str, Any]) -> Any:
    """Check and complete an objective's config dict: its ``Config`` dataclass, every default set.

    Takes the name and ``{"model": ..., **objective settings}`` ("name" ignored).
    Returns the Config instance (or the dict, for a class without Config).
    Raises ConfigError for an unknown objective or setting (did-you-mean), or a bad value.
    """
    cls = objective_class(name)
    config_cls = getattr(cls, "Config", None)
    clean = {k: v for k, v in config.items() if k != "name"}
    if config_cls is None:
        return clean
    return from_dict(config_cls, clean, "objective")


def build_objective(name: str, config: dict[str, Any]) -> Objective:
    """Build a registered objective by name from its config dict.

    Takes: the registered name and ``{"model": <[model] table>, **<[objective]
    table without "name">}``; the dict is checked and converted with
    ``cxrkit.config.from_dict(cls.Config, config)`` when the class has a Config.
    Returns: the objective. Raises: ConfigError for an unknown name or setting.
    """
    cls = objective_class(name)
    if isinstance(config, dict):
        config = resolve_objective_config(name, config)
    objective = cls(config)
    from cxrkit.io.fields import resolve_fields

    resolve_fields(objective.needs, where=f"objective {name!r}")  # unknown field: ConfigError
    objective.freeze()
    return objective


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
