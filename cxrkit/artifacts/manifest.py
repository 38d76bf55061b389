"""What an artifact's manifest says and how it is read: format, kinds, content id,
file entries, the :class:`Artifact` view of a published directory, and lineage.

The id is a sha256 over (kind, schema version, params, input ids): inputs count by
their ids, never by their paths, so moving an artifact changes nothing downstream.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from cxrkit import __version__, hashcache
from cxrkit.errors import ArtifactError

FORMAT = "cxrkit-artifact/1"
FORMAT_MAJOR = 1
MANIFEST = "manifest.json"
PARTIAL_MARKER = ".cxrkit-partial.json"
KINDS = (
    "dataset",
    "annotations",
    "checkpoint",
    "physio",
    "pairs",
    "teachers",
    "embeddings",
    "eval",
    "export",
)
# Files every artifact of a kind has; verify() reports one missing from the file list
# (a file deleted together with its manifest entry).
REQUIRED_FILES = {
    "dataset": ("rejects.parquet",),
    "annotations": ("annotations.parquet", "prompts.json"),
    "checkpoint": ("config.json", "model.safetensors"),
    "eval": ("metrics.json",),
    "export": ("image_encoder/config.json", "image_encoder/model.safetensors", "metadata.json"),
}


def canonical_json(obj: Any) -> str:
    """Deterministic JSON used for hashing: sorted keys, no whitespace."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def compute_id(kind: str, schema_version: int, params: dict, input_ids: Iterable[str]) -> str:
    """Content id of an artifact: sha256 over (kind, schema version, params, input ids)."""
    payload = canonical_json(
        {
            "kind": kind,
            "schema_version": schema_version,
            "params": params,
            "inputs": list(input_ids),
        }
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes (remembered while the file is unchanged, see hashcache)."""
    return hashcache.sha256_file(path)


def manifest_checksum(manifest: dict) -> str:
    """sha256 over a manifest's own content (every key but ``checksum``).

    Catches a manifest edited by hand or by a script that did not recompute it
    (a file deleted together with its entry, stats rewritten). It is a
    checksum, not a signature: whoever can rewrite the manifest can rewrite it.
    """
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def entry_path(root: Path, rel: object) -> Path:
    """The file a manifest entry names, confined to the artifact directory ``root``.

    Raises ArtifactError for an absolute path, a ``..`` component, or a path that
    resolves (through symlinks) outside ``root``.
    """
    if not isinstance(rel, str) or not rel or "\0" in rel:
        raise ArtifactError(f"{root}: manifest lists a file with an invalid path {rel!r}")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts:
        raise ArtifactError(f"{root}: manifest path {rel!r} points outside the artifact; refused")
    path = root / pure
    try:
        inside = path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError) as exc:  # symlink loop
        raise ArtifactError(f"{root}: manifest path {rel!r} cannot be resolved ({exc})") from exc
    if not inside:
        raise ArtifactError(f"{root}: manifest path {rel!r} resolves outside the artifact; refused")
    return path


def git_sha() -> str | None:
    """The git commit of the cxrkit source tree, when it runs from a checkout."""
    src = Path(__file__).resolve().parents[2]  # cxrkit/artifacts/manifest.py -> the checkout
    try:
        out = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _parquet_rows(path: Path) -> int | None:
    if path.suffix != ".parquet":
        return None
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def describe_file(root: Path, path: Path) -> dict:
    """Manifest entry for one data file: relative path, bytes, sha256, rows (Parquet)."""
    entry = {
        "path": path.relative_to(root).as_posix(),
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
    }
    rows = _parquet_rows(path)
    if rows is not None:
        entry["rows"] = rows
    return entry


# What a git or Hub upload adds to a directory; never part of an artifact, never checked.
HOSTING_FILES = frozenset({".git", ".gitattributes", ".gitignore", ".huggingface", ".cache"})


def data_files(root: Path) -> list[Path]:
    """The files an artifact directory holds as data, sorted: everything but the manifest,
    the in-progress marker, scratch (``.work*``) and hosting files (``.git``...)."""
    skip = {MANIFEST, PARTIAL_MARKER}
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.name not in skip
        and not any(
            part.startswith(".work") or part in HOSTING_FILES for part in p.relative_to(root).parts
        )
    )


@dataclass
class Artifact:
    """A published artifact, read from disk. Use :func:`open_artifact` to get one."""

    path: Path
    manifest: dict

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def id(self) -> str:
        return self.manifest["id"]

    @property
    def params(self) -> dict:
        return self.manifest.get("params", {})

    @property
    def stats(self) -> dict:
        return self.manifest.get("stats", {})

    def file(self, name: str) -> Path:
        """Path of a data file listed in the manifest; ArtifactError if it is not listed."""
        listed = {f["path"] for f in self.manifest.get("files", [])}
        if name not in listed:
            raise ArtifactError(f"{self.path}: no file {name!r} in this {self.kind} artifact")
        return entry_path(self.path, name)

    def files(self, suffix: str = "") -> list[Path]:
        """Data files listed in the manifest, optionally filtered by suffix, in manifest order."""
        return [
            entry_path(self.path, f["path"])
            for f in self.manifest.get("files", [])
            if f["path"].endswith(suffix)
        ]

    def ref(self) -> dict:
        """The entry another artifact's manifest stores under ``inputs``."""
        return {"kind": self.kind, "id": self.id, "path": str(self.path.resolve())}


def read_manifest(path: Path) -> dict:
    """Load and check a manifest.json; raise ArtifactError on a missing or foreign format."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        partial = sorted(path.parent.glob(path.name + ".tmp-*"))
        hint = f" (an unfinished build is in {partial[0]})" if partial else ""
        raise ArtifactError(f"{path}: not a cxrkit artifact, no {MANIFEST}{hint}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{manifest_path}: unreadable manifest ({exc})") from exc
    fmt = str(manifest.get("format", ""))
    name, _, major = fmt.partition("/")
    if name != "cxrkit-artifact" or not major.isdigit():
        raise ArtifactError(f"{manifest_path}: unknown artifact format {fmt!r}")
    if int(major) != FORMAT_MAJOR:
        raise ArtifactError(
            f"{manifest_path}: artifact format {fmt} is not readable by cxrkit {__version__} "
            f"(reads {FORMAT}); use a matching cxrkit version"
        )
    return manifest


def lineage(path: str | Path, _depth: int = 0, _seen: set | None = None) -> list[dict]:
    """Walk ``inputs`` back to the raw inputs, finding an input artifact at its recorded
    path or, moved together with this one, at its ``relative`` path. Returns rows of
    (depth, kind, id, path, found), plus ``setting`` for weights a setting named (their
    id is the content sha256). Raises ArtifactError when ``path`` holds no readable
    manifest."""
    seen = _seen if _seen is not None else set()
    manifest = read_manifest(Path(path))
    rows = [
        {
            "depth": _depth,
            "kind": manifest["kind"],
            "id": manifest["id"],
            "path": str(path),
            "found": True,
        }
    ]
    seen.add(manifest["id"])
    for ref in manifest.get("inputs", []):
        if ref.get("id") in seen:
            continue
        ref_path = _input_dir(Path(path), ref)
        if ref.get("kind") == "raw" or ref_path is None:
            row = {
                "depth": _depth + 1,
                "kind": ref.get("kind", "?"),
                "id": ref.get("id", ""),
                "path": ref.get("path", ""),
                "found": ref.get("kind") == "raw",
            }
            if ref.get("setting"):  # weights a setting named, counted by content
                row["setting"] = ref["setting"]
            rows.append(row)
            continue
        rows.extend(lineage(ref_path, _depth + 1, seen))
    return rows


def _input_dir(artifact: Path, ref: dict) -> Path | None:
    """Where an input artifact is: its recorded path, else its path relative to the
    artifact's folder when both moved together (the artifact there must have the
    recorded id); None when neither holds it."""
    recorded = Path(ref.get("path", ""))
    if (recorded / MANIFEST).is_file():
        return recorded
    if not ref.get("relative"):
        return None
    moved = Path(os.path.normpath(artifact.parent / ref["relative"]))
    try:
        same = json.loads((moved / MANIFEST).read_text()).get("id") == ref.get("id")
    except (OSError, ValueError, AttributeError):
        return None
    return moved if same else None
