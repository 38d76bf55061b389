"""Dataclass configs, presets (``stages/*.toml``), config files and ``--set`` overrides.

Every stage has one dataclass config (nested dataclasses allowed). Fields carry
their documentation in ``field(metadata={"help": ...})`` so ``--dry-run`` and
the docs can show it. Resolution order, later wins:

    dataclass defaults < preset (--preset NAME) < config file (--config FILE)
    < explicit CLI flags < --set key=value
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import json

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from cxrkit.errors import ConfigError

T = TypeVar("T")


def doc(help_text: str, default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A dataclass field with a help string: ``mask_ratio: float = doc("...", 0.75)``."""
    if default is not dataclasses.MISSING and isinstance(default, list | dict):
        value = default
        return dataclasses.field(
            default_factory=lambda: type(value)(value), metadata={"help": help_text}, **kwargs
        )
    return dataclasses.field(default=default, metadata={"help": help_text}, **kwargs)


def preset_names() -> list[str]:
    """Names of the presets shipped with cxrkit (files in stages/)."""
    root = importlib.resources.files("cxrkit.presets")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def load_preset(name: str) -> dict:
    """Load a shipped preset by name, or a TOML file by path. Raises ConfigError."""
    path = Path(name)
    if path.suffix == ".toml" and path.is_file():
        return load_toml(path)
    resource = importlib.resources.files("cxrkit.presets") / f"{name}.toml"
    if not resource.is_file():
        close = difflib.get_close_matches(name, preset_names(), n=3)
        hint = (
            f"; did you mean {', '.join(close)}?"
            if close
            else f"; known: {', '.join(preset_names())}"
        )
        raise ConfigError(f"unknown preset {name!r}{hint}")
    with resource.open("rb") as handle:
        try:
            return tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"preset {name}: invalid TOML ({exc})") from exc


def load_toml(path: str | Path) -> dict:
    """Load a TOML (or JSON) config file. Raises ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{path}: cannot parse config ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a config file holds one table/object of settings, not a {type(data).__name__}"
        )
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value``; the value is read as TOML (numbers, bools, lists, strings)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. optim.lr=1e-4")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # bare strings need no quotes: --set model.arch=vit_base_patch16_224
    return key.strip().split("."), value


def deep_merge(base: dict, update: dict) -> dict:
    """Recursively merge ``update`` into a copy of ``base``."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def set_path(tree: dict, keys: list[str], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {'.'.join(keys)}: {key} is not a section")
    node[keys[-1]] = value


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a section (table), got {value!r}")
        return from_dict(hint, value, where)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        coerced = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(coerced) if origin is tuple else coerced
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from exc
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from exc
    if hint is str:
        if isinstance(value, dict | list):
            raise ConfigError(
                f"{where}: expected a string, got {value!r} (--set values are read as "
                f"TOML: quote a string that holds braces or brackets, --set '{where}=\"...\"')"
            )
        return str(value)
    if hint is Path:
        return Path(value)
    return value


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build a dataclass from a (possibly nested) dict, checking names and types.

    Raises ConfigError on an unknown key (with a did-you-mean) or a bad value.
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{where}.{key}" if where else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown setting {full!r}{hint}")
        kwargs[key] = _coerce(value, hints[key], full)
    try:
        instance = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc
    check = getattr(instance, "validate", None)
    if callable(check):
        check()
    return instance


def to_dict(cfg: Any) -> dict:
    """Plain-JSON dict of a config (Paths as strings)."""

    def convert(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        return value

    return convert(dataclasses.asdict(cfg))


def resolve(
    cls: type[T],
    preset: str | None = None,
    config_file: str | Path | None = None,
    flags: dict | None = None,
    sets: list[str] | None = None,
    stage: str | None = None,
) -> T:
    """Resolve a stage config from its layers (see module docstring).

    ``flags`` holds the explicit CLI options (already in dotted or nested form;
    None values are ignored). A preset may name the ``stage`` it is for; using it
    with another stage is a ConfigError.
    """
    return from_dict(
        cls,
        settings_tree(preset=preset, config_file=config_file, flags=flags, sets=sets, stage=stage),
    )


def settings_tree(
    preset: str | None = None,
    config_file: str | Path | None = None,
    flags: dict | None = None,
    sets: list[str] | None = None,
    stage: str | None = None,
) -> dict:
    """The layers of :func:`resolve` merged into one nested dict, before any checking or
    defaults: what the user asked for. Raises ConfigError for a preset of another stage,
    an unreadable config file or a malformed ``--set``."""
    tree: dict = {}
    if preset:
        layer = dict(load_preset(preset))
        preset_stage = layer.pop("stage", None)
        layer.pop("description", None)
        if stage and preset_stage and preset_stage != stage:
            raise ConfigError(f"preset {preset!r} is for `cxrkit {preset_stage}`, not `{stage}`")
        tree = deep_merge(tree, layer)
    if config_file:
        layer = dict(load_toml(config_file))
        layer.pop("stage", None)
        layer.pop("description", None)
        tree = deep_merge(tree, layer)
    for key, value in (flags or {}).items():
        if value is not None:
            set_path(tree, key.split("."), value)
    for item in sets or []:
        keys, value = parse_override(item)
        set_path(tree, keys, value)
    return tree


def field_help(cls: type) -> list[tuple[str, str, Any]]:
    """(dotted name, help, default) for every field, recursing into nested configs."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            rows += [(f"{f.name}.{n}", h, d) for n, h, d in field_help(hints[f.name])]
            continue
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        )
        rows.append((f.name, f.metadata.get("help", ""), default))
    return rows
