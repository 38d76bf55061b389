"""Opening and verifying published artifacts against their manifests."""

from __future__ import annotations

from pathlib import Path

from cxrkit import hashcache
from cxrkit.artifacts.manifest import (
    MANIFEST,
    REQUIRED_FILES,
    Artifact,
    compute_id,
    data_files,
    entry_path,
    manifest_checksum,
    read_manifest,
    sha256_file,
)
from cxrkit.errors import ArtifactError


def open_artifact(path: str | Path, kind: str | None = None, verify_files: bool = True) -> Artifact:
    """Open a published artifact, checking its kind and (by default) verifying it.

    Stages read what they verified: sizes, paths, stats and the manifest checksum
    every time, file hashes through the hash cache (hashed once while a file is
    unchanged). ``verify_files=False`` only reads the manifest (``cxrkit show``).
    Raises ArtifactError when it is missing, of another kind, of an unknown format,
    or fails :func:`verify`.
    """
    path = Path(path)
    manifest = read_manifest(path)
    if kind is not None and manifest.get("kind") != kind:
        raise ArtifactError(f"{path}: expected a {kind} artifact, found {manifest.get('kind')!r}")
    if verify_files:
        problems = verify(path)
        if problems:
            raise ArtifactError(
                f"{path}: failed verification: {problems[0]}"
                + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
            )
    return Artifact(path=path, manifest=manifest)


def verify_model_artifact(path: str | Path) -> Artifact:
    """The verified checkpoint/export artifact holding ``path`` (itself, or the export
    around an ``image_encoder/`` folder), before any weights are read from it.

    Raises ArtifactError when there is no manifest to check the weights against (a
    folder copied out of an artifact, an artifact whose manifest was deleted), when
    the artifact is not a checkpoint or export, or when it fails verification.
    """
    path = Path(path)
    root = path
    if not (path / MANIFEST).is_file() and (path.parent / MANIFEST).is_file():
        root = path.parent  # e.g. export/image_encoder
    if not (root / MANIFEST).is_file():
        raise ArtifactError(
            f"{path}: no {MANIFEST} to verify these weights against (a folder copied out of "
            "an artifact, or an artifact whose manifest was deleted); load the whole "
            "artifact directory, or pass verify=False to load unverified weights"
        )
    kind = read_manifest(root).get("kind")
    if kind not in ("checkpoint", "export"):
        raise ArtifactError(f"{root}: a {kind} artifact holds no model to load")
    return open_artifact(root, verify_files=True)


def verify(path: str | Path, hashes: bool = True, cached: bool = True) -> list[str]:
    """Check an artifact against its manifest. Returns a list of problems (empty = intact).

    Checks: the manifest's own checksum and id; every listed path stays inside the
    artifact; every listed file exists with its size and (``hashes``) sha256; no
    unlisted data file; the files the kind requires are listed; row counts agree
    with the stats (dataset rows/rejects/shards, annotation rows). Hashes come from
    the hash cache when a file is unchanged since it was last hashed; ``cached=False``
    reads every byte (``cxrkit verify``: bit rot on disk does not move a file's ctime).
    """
    path = Path(path)
    manifest = read_manifest(path)
    problems: list[str] = []
    if manifest.get("checksum") != manifest_checksum(manifest):
        problems.append(
            "manifest checksum mismatch (manifest edited after publishing?)"
            if "checksum" in manifest
            else "manifest has no checksum (edited, or written by an older cxrkit; rebuild "
            "with --force)"
        )
    listed: dict[str, dict] = {}
    for entry in manifest.get("files", []):
        try:
            file_path = entry_path(path, entry.get("path") if isinstance(entry, dict) else None)
        except ArtifactError as exc:
            problems.append(str(exc).split(": ", 1)[-1])
            continue
        listed[entry["path"]] = entry
        problems.extend(_check_file(file_path, entry, hashes, cached))
    for file_path in data_files(path):
        rel = file_path.relative_to(path).as_posix()
        if rel not in listed:
            problems.append(f"extra file {rel} not in manifest")
    kind = manifest.get("kind")
    for required in REQUIRED_FILES.get(kind, ()):
        if required not in listed:
            problems.append(f"a {kind} artifact needs {required}; it is not in the manifest")
    problems.extend(_stats_problems(manifest, listed))
    expected = compute_id(
        manifest["kind"],
        manifest.get("schema", {}).get("version", 0),
        manifest.get("params", {}),
        [i["id"] for i in manifest.get("inputs", [])],
    )
    if expected != manifest.get("id"):
        problems.append("manifest id does not match its kind/params/inputs (edited manifest?)")
    return problems


def _check_file(file_path: Path, entry: dict, hashes: bool, cached: bool = True) -> list[str]:
    rel = entry["path"]
    if not file_path.is_file():
        return [f"missing file {rel}"]
    size = file_path.stat().st_size
    if size != entry.get("bytes"):
        return [f"changed file {rel} (size {size} != {entry.get('bytes')})"]
    if hashes:
        try:
            digest = sha256_file(file_path) if cached else hashcache.hash_bytes_of(file_path)
        except OSError as exc:
            return [f"unreadable file {rel} ({exc.strerror or exc})"]
        if digest != entry.get("sha256"):
            return [f"changed file {rel} (sha256 mismatch)"]
    return []


def _stats_problems(manifest: dict, listed: dict[str, dict]) -> list[str]:
    """Row counts promised by the stats against the rows recorded per file."""
    stats = manifest.get("stats") or {}
    kind = manifest.get("kind")
    problems = []

    def rows(names: list[str]) -> int:
        return sum(int(listed[n].get("rows", 0)) for n in names)

    if kind == "dataset":
        shards = sorted(n for n in listed if n.startswith("shard-") and n.endswith(".parquet"))
        if "shards" in stats and stats["shards"] != len(shards):
            problems.append(f"stats promise {stats['shards']} shards, manifest lists {len(shards)}")
        if "rows" in stats and stats["rows"] != rows(shards):
            problems.append(f"stats promise {stats['rows']} rows, the shards hold {rows(shards)}")
        rejects = rows(["rejects.parquet"]) if "rejects.parquet" in listed else None
        if "rejects" in stats and rejects is not None and stats["rejects"] != rejects:
            problems.append(
                f"stats promise {stats['rejects']} rejects, rejects.parquet holds {rejects}"
            )
    elif kind == "annotations" and "annotations.parquet" in listed:
        held = rows(["annotations.parquet"])
        if "rows" in stats and stats["rows"] != held:
            problems.append(f"stats promise {stats['rows']} rows, annotations.parquet holds {held}")
    return problems
