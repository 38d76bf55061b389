"""Remembering which requests produced an artifact, so a re-run can say "up to date" cheaply.

An artifact's id comes from its *resolved* settings, and resolving them can be
costly (pretrain fills in objective defaults from torch modules and resolves
``precision = auto`` against the device). A stage that finishes (or finds its
output current) notes the *request* that led there in ``.OUT.requests.json``
beside OUT: a digest of everything its id is a function of, except the input
artifacts, plus those inputs as named and their ids. A later run with the same
digest, whose named inputs still hold the same ids and whose OUT still holds that
id intact, is the same no-op without resolving anything.

The digest covers (:meth:`Request.digest`): the stage, the settings as the user
layered them (preset contents, config file contents, flags and ``--set``; OUT's
own path left out), the bytes of every file of the running cxrkit package (any
code change, a preset or a default included, takes the full path once), and the
launch facts the stage resolves (processes, precision). Not the working directory:
an id holds the paths of settings as written, never resolved, and input artifacts
count by their ids, and weights files by their content, each checked at the path
named (:func:`named_inputs`).

The record is an optimisation only: a missing, unreadable or stale record sends the
run down its full path, which decides as it always did and writes the record anew.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxrkit.artifacts.files import write_json_atomic
from cxrkit.artifacts.integrity import open_artifact
from cxrkit.artifacts.manifest import Artifact, canonical_json, read_manifest
from cxrkit.artifacts.writer import ArtifactWriter
from cxrkit.errors import CxrkitError

log = logging.getLogger(__name__)

FORMAT = "cxrkit-requests/1"
KEEP = 16  # requests remembered per OUT (working directories, launch shapes)
MAX_RECORD_BYTES = 1 << 20  # a record of KEEP entries is a few kB; a larger file is not one


@dataclass(frozen=True)
class Request:
    """What the user asked a stage for: its name and the layered settings tree."""

    stage: str
    out: str  # OUT as given; not part of the digest
    settings: str  # canonical JSON of the tree without "out", frozen when made

    @classmethod
    def of(cls, stage: str, tree: dict) -> Request:
        """Takes the stage name and :func:`cxrkit.config.settings_tree`'s dict."""
        settings = canonical_json({k: v for k, v in tree.items() if k != "out"})
        return cls(stage, str(tree.get("out") or ""), settings)

    def setting(self, dotted: str, default: Any = None) -> Any:
        """The value the request gives a dotted setting (``train.precision``), else
        ``default``; never raises."""
        value: Any = json.loads(self.settings)
        for key in dotted.split("."):
            if not isinstance(value, dict) or key not in value:
                return default
            value = value[key]
        return value

    def digest(self, **launch: Any) -> str:
        """sha256 over the request, the cxrkit code and ``launch`` (what the stage
        resolved about the launch: processes, precision)."""
        payload = canonical_json(
            {
                "format": FORMAT,
                "stage": self.stage,
                "settings": self.settings,
                "code": code_digest(),
                "launch": launch,
            }
        )
        return hashlib.sha256(payload.encode("utf-8", "surrogateescape")).hexdigest()


def code_files(root: Path | None = None) -> list[Path]:
    """Every file of the running cxrkit package (or of ``root``), relative to it and
    sorted: the code and the shipped presets (a linked folder in a checkout); byte code
    caches and what is no regular file (a link to nowhere such as Emacs' lock file
    ``.#name.py``, a pipe or socket, which reading would block or fail on) left out."""
    root = root or Path(__file__).resolve().parents[1]
    files = []
    for folder, dirs, names in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        files += [
            Path(folder, n).relative_to(root)
            for n in names
            if not n.endswith(".pyc") and os.path.isfile(os.path.join(folder, n))
        ]
    return sorted(files, key=lambda p: p.as_posix())


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """sha256 over the path and bytes of each of :func:`code_files` (about 1 MB read, a
    few milliseconds, once per process). A file that cannot be read (no permission,
    removed meanwhile) counts as unreadable, so the digest differs and never raises."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in code_files():
        digest.update(path.as_posix().encode("utf-8", "surrogateescape") + b"\0")
        try:
            digest.update((root / path).read_bytes() + b"\0")
        except OSError:
            digest.update(b"\0unreadable\0")
    return digest.hexdigest()


def record_path(out: str | Path) -> Path:
    """The record beside OUT: ``.OUT.requests.json`` (next to the ``.OUT.lock``)."""
    out = Path(out)
    return out.parent / f".{out.name}.requests.json"


def named_inputs(inputs: list, weights: dict[str, str] | None = None) -> list[dict] | None:
    """The record's inputs, as the run named them: each input artifact's path and id, and
    each raw input that a setting names (weights counted by content: ``setting``,
    ``id`` = content sha256) with its path from ``weights`` (setting -> path as the
    config names it, or its default), marked ``content``.

    None when an input is neither: the record could not re-check it, so none is written."""
    named = []
    for item in inputs:
        if isinstance(item, Artifact):
            named.append({"path": str(item.path), "id": item.id})
        elif isinstance(item, dict) and item.get("setting") in (weights or {}):
            setting = item["setting"]
            named.append({"path": str(weights[setting]), "id": item["id"], "content": setting})
        else:
            return None
    return named


def _unchanged(item: dict) -> bool:
    """Whether a recorded input still holds its id at its path: an artifact (opened and
    verified) or weights counted by content (:mod:`cxrkit.artifacts.contents`)."""
    if item.get("content"):
        from cxrkit.artifacts.contents import content_digest

        return content_digest(item["path"], str(item["content"])).sha256 == item["id"]
    return open_artifact(item["path"]).id == item["id"]


def remember(out: str | Path, digest: str, artifact_id: str, inputs: list[dict] | None) -> None:
    """Note that ``digest`` led to ``artifact_id`` at OUT from ``inputs`` (see
    :func:`named_inputs`; None writes nothing). Never raises: a record that cannot be
    written only makes the next no-op take the full path."""
    if inputs is None:
        return
    path = record_path(out)
    entries = [
        e
        for e in _entries(path)
        if e.get("id") == artifact_id and e.get("digest") != digest  # drop stale ids
    ]
    entries.append({"digest": digest, "id": artifact_id, "inputs": inputs})
    try:
        write_json_atomic(path, {"format": FORMAT, "entries": entries[-KEEP:]})
    except OSError as exc:
        log.debug("%s: request record not written (%s)", path, exc)


def recall(out: str | Path, kind: str, digest: str) -> Artifact | None:
    """OUT as published, when ``digest`` is recorded for it, every recorded input still
    holds its id at the path named (an artifact opened and verified, weights hashed
    through the hash cache), and OUT still holds that id intact (checked under OUT's
    lock by :meth:`ArtifactWriter.up_to_date`, which logs "up to date"); else None,
    and the caller takes its full path. Never raises for a record or an artifact
    that does not match: that is a None."""
    out = Path(out)
    entry = next((e for e in _entries(record_path(out)) if e.get("digest") == digest), None)
    if entry is None:
        return None
    try:
        manifest = read_manifest(out)
        if manifest.get("kind") != kind or manifest.get("id") != entry["id"]:
            return None
        if not all(_unchanged(item) for item in entry["inputs"]):
            return None
        writer = ArtifactWriter(
            out,
            kind,
            manifest["params"],
            inputs=manifest["inputs"],
            schema_version=manifest["schema"]["version"],
        )
    except (CxrkitError, KeyError, TypeError, ValueError, OSError):
        return None
    if writer.id != entry["id"]:
        return None
    try:
        done = writer.up_to_date()
    except CxrkitError:  # OUT replaced meanwhile: the full path says what it is
        done = None
    if done is None:
        writer.release()
    return done


def _entries(path: Path) -> list[dict]:
    """The well-formed entries of the record at ``path`` (:func:`_well_formed`); [] for a
    missing, oversized, unparsable or foreign file. Never raises."""
    try:
        if path.stat().st_size > MAX_RECORD_BYTES:
            return []
        record = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return []
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return []
    entries = record.get("entries")
    if not isinstance(entries, list):
        return []
    return [e for e in entries if _well_formed(e)]


def _well_formed(entry: object) -> bool:
    """Whether ``entry`` has the shape :func:`remember` writes: string ``digest`` and
    ``id``, and ``inputs`` a list of tables with string ``path`` and ``id`` (and, for
    weights, a string ``content``)."""
    if not isinstance(entry, dict):
        return False
    if not all(isinstance(entry.get(k), str) for k in ("digest", "id")):
        return False
    inputs = entry.get("inputs")
    return isinstance(inputs, list) and all(
        isinstance(i, dict)
        and isinstance(i.get("path"), str)
        and isinstance(i.get("id"), str)
        and isinstance(i.get("content", ""), str)
        for i in inputs
    )
