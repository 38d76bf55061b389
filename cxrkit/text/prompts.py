"""Class prompts for zero-shot evaluation and prompt-driven pretraining, kept as data.

The prompt set is a JSON file, versioned and hashed: the default ships as
``stages/prompts-default.json`` (package data ``cxrkit.presets``); ``cxrkit
annotate --prompts FILE`` replaces it. The annotate stage copies the set into
its artifact as ``prompts.json`` (so its sha256 is in the manifest) and puts the
version in the params. Zero-shot eval and MMCLIP read prompts from there, never
from code.

Layout::

    {"version": "1.0", "description": "...",
     "templates": {"positive": ["There is {c}."], "negative": ["There is no {c}."]},
     "names": {"Cardiomegaly": "cardiomegaly", ...},
     "classes": {"Cardiomegaly": {"positive": [...], "negative": [...]}, ...},
     "disease_prompts": ["cardiomegaly", ...]}

``classes`` holds the final sentences (what zero-shot eval reads, through
:func:`load_class_prompts`); when a file gives only ``templates`` + ``names``,
:func:`load_prompts` expands them with :func:`expand_template`: ``{c}`` stands
for the class's name, ``{C}`` for the same name with a capital first letter
(sentence start). ``disease_prompts`` is
MMCLIP's list of common disease-kind prompts (MMCLIP Sec. 3.1, "Prompt-driven
attention": 14 common diseases and devices of the chest, Fig. 2).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
from pathlib import Path

from cxrkit.errors import InputError

DEFAULT_RESOURCE = "prompts-default.json"


def expand_template(template: str, name: str) -> str:
    """Fill one prompt template: ``{c}`` -> ``name``, ``{C}`` -> ``name`` with a capital first letter.

    ``expand_template("{C} is present.", "pleural effusion")`` is
    ``"Pleural effusion is present."``, as the shipped prompt set writes it.
    """
    return template.replace("{c}", name).replace("{C}", name[:1].upper() + name[1:])


def fill_templates(templates: dict, name: str) -> dict[str, list[str]]:
    """``{"positive": [...], "negative": [...]}`` of one class from the set's templates."""
    return {
        side: [expand_template(t, name) for t in templates.get(side, [])]
        for side in ("positive", "negative")
    }


def validate_prompts(data: object, where: str) -> dict:
    """Check (and complete) a prompt set; returns it with ``classes`` expanded.

    Raises InputError naming ``where`` when the version is missing, a class
    has no positive prompt, or a prompt is not a string.
    """
    if not isinstance(data, dict):
        raise InputError(f"{where}: a prompt set is a JSON object, see cxrkit/text/prompts.py")
    if not isinstance(data.get("version"), str) or not data["version"]:
        raise InputError(f'{where}: missing "version" (a string); version your prompt sets')
    classes = dict(data.get("classes") or {})
    templates, names = data.get("templates") or {}, data.get("names") or {}
    for cls, name in names.items():
        if cls not in classes and templates:
            classes[cls] = fill_templates(templates, name)
    if not classes:
        raise InputError(f'{where}: no "classes" (or "templates" + "names") to prompt with')
    for cls, entry in classes.items():
        if not isinstance(entry, dict) or not entry.get("positive"):
            raise InputError(f'{where}: class {cls!r} needs a non-empty "positive" list')
        prompts = [*entry.get("positive", []), *entry.get("negative", [])]
        if not all(isinstance(p, str) and p.strip() for p in prompts):
            raise InputError(f"{where}: class {cls!r} has a prompt that is not a non-empty string")
    return {**data, "classes": classes}


def _read_json(path: str | Path | None) -> tuple[object, str]:
    """The parsed JSON of a prompts file (the shipped default when None) and its name."""
    if path is None:
        resource = importlib.resources.files("cxrkit.presets") / DEFAULT_RESOURCE
        text, where = resource.read_text(encoding="utf-8"), f"default prompts {DEFAULT_RESOURCE}"
    else:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"--prompts {path}: cannot read it ({exc})") from exc
    try:
        return json.loads(text), where
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({exc})") from exc


def load_prompts(path: str | Path | None = None) -> dict:
    """Load a versioned prompt set: ``path`` (a JSON file) or the shipped default when None.

    Returns the validated set (see module docstring). Raises InputError.
    """
    data, where = _read_json(path)
    return validate_prompts(data, where)


def load_class_prompts(path: str | Path) -> dict[str, dict[str, list[str]]]:
    """Read a prompts file into ``{class: {"positive": [...], "negative": [...]}}`` for zero-shot.

    Takes a versioned prompt set (its expanded ``classes``) or a plain
    ``{class: {"positive": [...], "negative": [...]}}`` (a bare list is positives
    only; entries that are not prompt lists are left out).
    Raises InputError when the file is unreadable or holds no prompt lists.
    """
    data, where = _read_json(path)
    if isinstance(data, dict) and "version" in data:
        data = validate_prompts(data, where)["classes"]
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a JSON object of class -> prompts")
    prompts = {}
    for name, entry in data.items():
        if isinstance(entry, list):
            entry = {"positive": entry}
        if not isinstance(entry, dict):
            continue
        positive, negative = entry.get("positive", []), entry.get("negative", [])
        if positive and all(isinstance(t, str) for t in [*positive, *negative]):
            prompts[str(name)] = {"positive": list(positive), "negative": list(negative)}
    if not prompts:
        raise InputError(f"{where}: no class with a list of positive prompts")
    return prompts


def default_class_prompts(classes: list[str]) -> dict[str, dict[str, list[str]]]:
    """The shipped set's class prompts, its templates filled for classes it lacks.

    A class missing from the set is named by its lower-cased name in the
    templates (``{c}``), capitalised at a sentence start (``{C}``).
    """
    prompt_set = load_prompts(None)
    templates = prompt_set.get("templates") or {}
    prompts = dict(prompt_set["classes"])
    for name in classes:
        if name not in prompts:
            prompts[name] = fill_templates(templates, name.lower())
    return prompts


def prompts_bytes(prompts: dict) -> bytes:
    """The canonical bytes written as ``prompts.json`` (stable key order, UTF-8)."""
    return (json.dumps(prompts, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def prompts_sha256(prompts: dict) -> str:
    """sha256 of :func:`prompts_bytes`: the prompt set's identity in stage params."""
    return hashlib.sha256(prompts_bytes(prompts)).hexdigest()
