"""Which weights files and folders an objective's settings name, by setting.

A run counts these by content, not path (:mod:`cxrkit.artifacts.contents`): the
settings an objective class declares in ``weights_settings`` (MaCo's
``image_init``, MMCLIP's ``image_weights``) and the files of each text tower in
its config (:meth:`cxrkit.models.tower_configs.TextConfig.weights_sources`: an hf
model folder, a bert vocabulary, open_clip text weights; the shipped MiniLM's
where unset).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cxrkit.models.tower_configs import TextConfig
from cxrkit.objectives.base import objective_class, resolve_objective_config


def weights_sources(name: str, config: dict[str, Any]) -> dict[str, str]:
    """``{"objective.<setting>": path}`` for every weights file or folder the config names.

    Takes the objective's name and its config dict (``{"model": ..., **settings}``),
    returns the settings in declaration order, text towers' files after the class's
    own. Raises ConfigError for an unknown objective or setting, InputError when the
    shipped MiniLM is needed and not installed.
    """
    cls = objective_class(name)
    resolved = resolve_objective_config(name, config)
    if not dataclasses.is_dataclass(resolved):
        return {}
    sources = {
        f"objective.{key}": str(getattr(resolved, key))
        for key in cls.weights_settings
        if getattr(resolved, key, None)
    }
    for field in dataclasses.fields(resolved):
        tower = getattr(resolved, field.name)
        if isinstance(tower, TextConfig):
            for key, path in tower.weights_sources().items():
                sources[f"objective.{field.name}.{key}"] = path
    return sources


def weights_refs(name: str, config: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's input entries for the weights its config names, one per setting.

    Each is a raw-input ref ``{"kind": "raw", "id": <content sha256>, "path": <absolute
    path, provenance only>, "setting": "objective.<key>", "bytes": ...}`` (a folder adds
    ``folder`` and its counted ``files``). The id holds the content, the path records
    where it was read. Raises InputError naming the setting and the path for one that
    is missing or unreadable (and see :func:`weights_sources`).
    """
    from pathlib import Path

    from cxrkit.artifacts.contents import content_digest

    refs = []
    for setting, path in weights_sources(name, config).items():
        content = content_digest(path, setting)
        where = Path(path).expanduser().resolve()
        refs.append(
            {"kind": "raw", "id": content.sha256, "path": str(where), "setting": setting}
            | content.describe()
        )
    return refs


def with_absolute_weights_paths(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """A copy of an objective's config dict (``{"model": ..., **settings}``) whose weights
    paths (those :func:`weights_sources` reads that the config sets; an unset text path
    stays unset) are absolute, for a config that runs in another working directory (a
    SLURM job). Ids are unchanged: they hold the content, not the path."""
    import copy
    from pathlib import Path

    config = copy.deepcopy(config)
    for setting in weights_sources(name, config):
        *parents, leaf = setting.split(".")[1:]  # "objective." is the config itself
        holder = config
        for key in parents:
            holder = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(holder, dict) and holder.get(leaf):
            holder[leaf] = str(Path(holder[leaf]).expanduser().resolve())
    return config
