"""The artifact contract: manifest, content id, atomic publish, verify, lineage.

An artifact is a directory holding ``manifest.json`` plus its data files. It is
built inside ``DIR.tmp-<pid>`` and published with a rename, so a crash never
leaves a directory that looks complete. A killed build leaves its temp dir
behind; the next build with the same id adopts it (see :meth:`ArtifactWriter.resume_dir`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cxrkit import __version__, hashcache
from cxrkit.errors import ArtifactError, OutputError

log = logging.getLogger(__name__)

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
    src = Path(__file__).resolve().parent.parent
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


def _data_files(root: Path) -> list[Path]:
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
    for file_path in _data_files(path):
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


def lineage(path: str | Path, _depth: int = 0, _seen: set | None = None) -> list[dict]:
    """Walk ``inputs`` back to the raw inputs. Returns rows of (depth, kind, id, path, found)."""
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
        ref_path = Path(ref.get("path", ""))
        if ref.get("kind") == "raw" or not (ref_path / MANIFEST).is_file():
            rows.append(
                {
                    "depth": _depth + 1,
                    "kind": ref.get("kind", "?"),
                    "id": ref.get("id", ""),
                    "path": ref.get("path", ""),
                    "found": ref.get("kind") == "raw" or (ref_path / MANIFEST).is_file(),
                }
            )
            continue
        rows.extend(lineage(ref_path, _depth + 1, seen))
    return rows


@dataclass
class ArtifactWriter:
    """Builds one artifact in a temp dir and publishes it atomically.

    Usage::

        writer = ArtifactWriter(out, "dataset", params, inputs=[...], schema_version=1)
        if (done := writer.up_to_date()) is not None:   # same id, intact: nothing to do
            return done
        work = writer.begin()            # DIR.tmp-<pid>, adopting a dead run's temp dir
        ... write files into work ...
        artifact = writer.publish(schema={...}, stats={...})

    ``inputs`` holds Artifact objects or raw-input refs (dicts with kind="raw").

    Crash and race safety: one run at a time writes OUT (an exclusive ``flock`` on
    ``.OUT.lock`` beside it, taken by ``up_to_date``/``begin`` and held until
    publish); a run that waited for the lock and then finds the same id published
    returns it ("published by another run"). The temp dir keeps its in-progress
    marker until after the final rename, and a temp dir whose manifest is already
    written is published as it is by the next run, so a kill at any point of
    publishing loses no work.
    """

    out: Path
    kind: str
    params: dict
    inputs: list = field(default_factory=list)
    schema_version: int = 1
    force: bool = False
    work: Path | None = None
    lock: bool = True

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.kind not in KINDS:
            raise ValueError(f"unknown artifact kind {self.kind!r}")
        self._input_refs = [i.ref() if isinstance(i, Artifact) else dict(i) for i in self.inputs]
        self.id = compute_id(
            self.kind, self.schema_version, self.params, [r["id"] for r in self._input_refs]
        )
        self._lock_fd: int | None = None
        self._waited = False

    # ------------------------------------------------------------ lock
    @property
    def lock_path(self) -> Path:
        return self.out.parent / f".{self.out.name}.lock"

    def acquire(self) -> None:
        """Take the exclusive lock on OUT (waiting for another run that holds it)."""
        if not self.lock or self._lock_fd is not None:
            return
        import fcntl

        _make_parent(self.out)
        key = str(self.lock_path.resolve())
        stale = _HELD_LOCKS.pop(key, None)
        if stale is not None:  # an earlier writer in this process that never published
            os.close(stale)
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"{self.out}: cannot create the lock file ({_why(exc)})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("%s: another cxrkit run is writing it; waiting for it to finish", self.out)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._waited = True
        self._lock_fd = fd
        _HELD_LOCKS[key] = fd

    def release(self) -> None:
        """Release the lock on OUT (also released when the process exits)."""
        if self._lock_fd is not None:
            key = str(self.lock_path.resolve())
            if _HELD_LOCKS.get(key) == self._lock_fd:
                del _HELD_LOCKS[key]
                os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------ state of OUT
    def is_current(self) -> bool:
        """True when OUT already holds this artifact (same id) and it verifies."""
        if self.force or not (self.out / MANIFEST).is_file():
            return False
        try:
            manifest = read_manifest(self.out)
        except ArtifactError:
            return False
        return manifest.get("id") == self.id and not verify(self.out)

    def existing(self) -> Artifact:
        return open_artifact(self.out)

    def up_to_date(self) -> Artifact | None:
        """The published artifact if OUT already holds this id intact (and says so), else None.

        Takes the lock first (waiting for a concurrent run into the same OUT), and
        finishes publishing a build of this id that a killed run left complete.
        Stages start with ``if (done := writer.up_to_date()) is not None: return done``.
        """
        self.acquire()
        current = self.is_current()
        if not current and not self.force:
            current = self._publish_finished_leftover()
        if not current:
            return None
        if self._waited:
            log.info(
                "%s was published by another run (id %s); nothing to do", self.out, self.id[:12]
            )
        else:
            log.info(
                "%s is up to date (id %s); nothing to do (use --force to rebuild)",
                self.out,
                self.id[:12],
            )
        self.release()
        return self.existing()

    def check_target(self) -> None:
        """Refuse to overwrite a different artifact without --force, and a non-artifact ever.

        An existing file, or a non-empty directory without a cxrkit manifest, is
        never replaced (--force included): it may hold the user's own files.
        """
        if not self.out.exists() and not self.out.is_symlink():
            return
        if not self.out.is_dir():
            raise OutputError(f"{self.out}: exists and is not a directory; choose another --out")
        if not (self.out / MANIFEST).is_file():
            if not any(self.out.iterdir()):
                return
            raise OutputError(
                f"{self.out}: exists and is not a cxrkit artifact (no {MANIFEST}); it is never "
                "replaced, --force included; choose another --out or remove it yourself"
            )
        if self.force:
            return
        manifest = read_manifest(self.out)
        if manifest.get("id") != self.id:
            raise ArtifactError(
                f"{self.out}: holds a different {manifest.get('kind')} artifact "
                f"(id {manifest.get('id', '')[:12]}, this run {self.id[:12]}); "
                "use --force to replace it"
            )

    def _leftovers(self) -> list[tuple[Path, dict]]:
        """Temp dirs of dead runs building this id, with their markers."""
        found = []
        for candidate in sorted(self.out.parent.glob(self.out.name + ".tmp-*")):
            marker = candidate / PARTIAL_MARKER
            if not marker.is_file():
                continue
            try:
                info = json.loads(marker.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if info.get("id") == self.id and owner_state(info) == "dead":
                found.append((candidate, info))
        return found

    def resume_dir(self) -> Path | None:
        """A temp dir left by a dead run with the same id, if any."""
        found = self._leftovers()
        return found[0][0] if found else None

    def _publish_finished_leftover(self) -> bool:
        """A killed run wrote its manifest but did not rename: finish its publish (True)."""
        for candidate, _ in self._leftovers():
            if not (candidate / MANIFEST).is_file():
                continue
            try:
                if read_manifest(candidate).get("id") != self.id or verify(candidate):
                    continue
            except ArtifactError:
                continue
            self.check_target()
            log.info("publishing the finished build a killed run left in %s", candidate)
            self.work = candidate
            self._rename_into_place(release=False)
            return True
        return False

    def busy(self) -> tuple[Path, dict, str] | None:
        """A temp dir building this id whose owner is alive, or on another host and unknown.

        Returns (dir, marker, "alive" | "unknown") or None. Stages that must not
        start a second copy of a run (pretrain) refuse on it instead of
        silently starting afresh beside it.
        """
        for candidate in sorted(self.out.parent.glob(self.out.name + ".tmp-*")):
            try:
                info = json.loads((candidate / PARTIAL_MARKER).read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if info.get("id") == self.id and (state := owner_state(info)) != "dead":
                return candidate, info, state
        return None

    # ------------------------------------------------------------ build and publish
    def begin(self) -> Path:
        """Create (or adopt) the temp dir and return it. Raises OutputError if OUT is unusable."""
        self.acquire()
        self.check_target()
        _make_parent(self.out)
        work = self.out.parent / f"{self.out.name}.tmp-{os.getpid()}"
        previous = self.resume_dir()
        try:
            if previous is not None and previous != work:
                log.info("resuming unfinished build from %s", previous)
                previous.rename(work)
            work.mkdir(exist_ok=True)
            (work / MANIFEST).unlink(missing_ok=True)  # a stale manifest is rewritten at publish
            (work / PARTIAL_MARKER).write_text(
                json.dumps({"id": self.id, "kind": self.kind, **owner()})
            )
        except OSError as exc:
            raise OutputError(
                f"{self.out}: cannot create the build directory ({_why(exc)})"
            ) from exc
        self.work = work
        return work

    def publish(self, schema: dict | None = None, stats: dict | None = None) -> Artifact:
        """Hash the files, write the manifest and rename the temp dir into place.

        Kill-safe order: the manifest is written while the scratch files
        (``.work*``) and the in-progress marker are still there; scratch goes
        next, the rename after, and the marker last. A run killed before the
        manifest resumes from scratch; one killed after it is published as it is
        by the next run.
        """
        if self.work is None:
            raise RuntimeError("publish() before begin()")
        manifest = {
            "format": FORMAT,
            "kind": self.kind,
            "id": self.id,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "cxrkit_version": __version__,
            "git_sha": git_sha(),
            "params": self.params,
            "inputs": self._input_refs,
            "files": [describe_file(self.work, p) for p in _data_files(self.work)],
            "schema": {"version": self.schema_version, **(schema or {})},
            "stats": stats or {},
        }
        manifest["checksum"] = manifest_checksum(manifest)
        write_json_atomic(self.work / MANIFEST, manifest)
        _fsync_dir(self.work)
        self._rename_into_place()
        return Artifact(path=self.out, manifest=manifest)

    def _rename_into_place(self, release: bool = True) -> None:
        for scratch in self.work.glob(".work*"):
            shutil.rmtree(scratch) if scratch.is_dir() else scratch.unlink()
        old = None
        if self.out.exists():
            old = self.out.parent / f"{self.out.name}.old-{os.getpid()}"
            self.out.rename(old)
        self.work.rename(self.out)
        (self.out / PARTIAL_MARKER).unlink(missing_ok=True)
        _fsync_dir(self.out.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        for stale in self.out.parent.glob(f"{self.out.name}.old-*"):  # left by a killed publish
            pid = stale.name.rpartition("-")[2]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)
        self.work = None
        if release:
            self.release()


_HELD_LOCKS: dict[str, int] = {}  # lock file -> fd, for the writers of this process


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def prepare_output_file(path: str | Path) -> Path:
    """Check that a single output file (``cxrkit label --out``) can be written.

    Creates missing parent folders. Raises OutputError (exit 3) when the path is
    a folder, a parent is a file, or the folder is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; --out names the file to write")
    _make_parent(path)
    return path


def _make_parent(out: Path) -> None:
    """Create OUT's parent folder; OutputError naming the reason when impossible."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise OutputError(f"{out}: a parent of --out is a file, not a folder") from exc
    except OSError as exc:
        raise OutputError(f"{out}: cannot create its parent folder ({_why(exc)})") from exc
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise OutputError(f"{out}: the folder {out.parent} is not writable")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON next to ``path`` and rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as handle:
        json.dump(obj, handle, indent=2, sort_keys=False, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def owner() -> dict:
    """Who is building: pid, host and SLURM job (a pid means nothing on another host)."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "slurm_job": os.environ.get("SLURM_JOB_ID") or None,
        "slurm_restart": os.environ.get("SLURM_RESTART_COUNT", "0"),
    }


def owner_state(info: dict) -> str:
    """Whether the run that wrote a marker still runs: "dead", "alive" or "unknown".

    The same SLURM job id with another restart count means a requeue of this
    very job: SLURM ends every process of a job before it runs again, so the
    owner is dead wherever it ran. Otherwise a pid is only checked on its own
    host; on another host it is "unknown" (markers from before hosts were
    recorded count as this host).
    """
    job = os.environ.get("SLURM_JOB_ID")
    restart = os.environ.get("SLURM_RESTART_COUNT", "0")
    if job and info.get("slurm_job") == job and info.get("slurm_restart") != restart:
        return "dead"
    host = info.get("host")
    if host and host != socket.gethostname():
        return "unknown"
    return "alive" if _pid_alive(int(info.get("pid", -1))) else "dead"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
