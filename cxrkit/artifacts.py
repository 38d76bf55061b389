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
from pathlib import Path
from typing import Any

from cxrkit import __version__
from cxrkit.errors import ArtifactError

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


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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
        return self.path / name

    def files(self, suffix: str = "") -> list[Path]:
        """Data files listed in the manifest, optionally filtered by suffix, in manifest order."""
        return [
            self.path / f["path"]
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


def open_artifact(
    path: str | Path, kind: str | None = None, verify_files: bool = False
) -> Artifact:
    """Open a published artifact, optionally checking its kind and file hashes.

    Raises ArtifactError when it is missing, of another kind, of an unknown format,
    or (with ``verify_files``) fails :func:`verify`.
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


def verify(path: str | Path) -> list[str]:
    """Check every file against the manifest. Returns a list of problems (empty = intact)."""
    path = Path(path)
    manifest = read_manifest(path)
    problems: list[str] = []
    listed = {}
    for entry in manifest.get("files", []):
        listed[entry["path"]] = entry
        file_path = path / entry["path"]
        if not file_path.is_file():
            problems.append(f"missing file {entry['path']}")
            continue
        if file_path.stat().st_size != entry["bytes"]:
            problems.append(
                f"changed file {entry['path']} (size {file_path.stat().st_size} "
                f"!= {entry['bytes']})"
            )
        elif sha256_file(file_path) != entry["sha256"]:
            problems.append(f"changed file {entry['path']} (sha256 mismatch)")
    for file_path in _data_files(path):
        rel = file_path.relative_to(path).as_posix()
        if rel not in listed:
            problems.append(f"extra file {rel} not in manifest")
    expected = compute_id(
        manifest["kind"],
        manifest.get("schema", {}).get("version", 0),
        manifest.get("params", {}),
        [i["id"] for i in manifest.get("inputs", [])],
    )
    if expected != manifest.get("id"):
        problems.append("manifest id does not match its kind/params/inputs (edited manifest?)")
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
        if writer.is_current():          # same id, intact: nothing to do
            return writer.existing()
        work = writer.begin()            # DIR.tmp-<pid>, adopting a dead run's temp dir
        ... write files into work ...
        artifact = writer.publish(schema={...}, stats={...})

    ``inputs`` holds Artifact objects or raw-input refs (dicts with kind="raw").
    """

    out: Path
    kind: str
    params: dict
    inputs: list = field(default_factory=list)
    schema_version: int = 1
    force: bool = False
    work: Path | None = None

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.kind not in KINDS:
            raise ValueError(f"unknown artifact kind {self.kind!r}")
        self._input_refs = [i.ref() if isinstance(i, Artifact) else dict(i) for i in self.inputs]
        self.id = compute_id(
            self.kind, self.schema_version, self.params, [r["id"] for r in self._input_refs]
        )

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

        Stages start with ``if (done := writer.up_to_date()) is not None: return done``.
        """
        if not self.is_current():
            return None
        log.info(
            "%s is up to date (id %s); nothing to do (use --force to rebuild)",
            self.out,
            self.id[:12],
        )
        return self.existing()

    def check_target(self) -> None:
        """Refuse to overwrite a different artifact (or any non-artifact dir) without --force."""
        if self.force or not self.out.exists():
            return
        if not (self.out / MANIFEST).is_file():
            if self.out.is_dir() and not any(self.out.iterdir()):
                return
            raise ArtifactError(
                f"{self.out}: exists and is not a cxrkit artifact; "
                "choose another --out or remove it"
            )
        manifest = read_manifest(self.out)
        if manifest.get("id") != self.id:
            raise ArtifactError(
                f"{self.out}: holds a different {manifest.get('kind')} artifact "
                f"(id {manifest.get('id', '')[:12]}, this run {self.id[:12]}); "
                "use --force to replace it"
            )

    def resume_dir(self) -> Path | None:
        """A temp dir left by a dead run with the same id, if any."""
        for candidate in sorted(self.out.parent.glob(self.out.name + ".tmp-*")):
            marker = candidate / PARTIAL_MARKER
            if not marker.is_file():
                continue
            try:
                info = json.loads(marker.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if info.get("id") == self.id and owner_state(info) == "dead":
                return candidate
        return None

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

    def begin(self) -> Path:
        """Create (or adopt) the temp dir and return it."""
        self.check_target()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        work = self.out.parent / f"{self.out.name}.tmp-{os.getpid()}"
        previous = self.resume_dir()
        if previous is not None and previous != work:
            log.info("resuming unfinished build from %s", previous)
            previous.rename(work)
        work.mkdir(exist_ok=True)
        (work / PARTIAL_MARKER).write_text(
            json.dumps({"id": self.id, "kind": self.kind, **owner()})
        )
        self.work = work
        return work

    def publish(self, schema: dict | None = None, stats: dict | None = None) -> Artifact:
        """Hash the files, write the manifest and rename the temp dir into place."""
        if self.work is None:
            raise RuntimeError("publish() before begin()")
        for scratch in self.work.glob(".work*"):
            shutil.rmtree(scratch) if scratch.is_dir() else scratch.unlink()
        (self.work / PARTIAL_MARKER).unlink(missing_ok=True)
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
        write_json_atomic(self.work / MANIFEST, manifest)
        _fsync_dir(self.work)
        old = None
        if self.out.exists():
            old = self.out.parent / f"{self.out.name}.old-{os.getpid()}"
            self.out.rename(old)
        self.work.rename(self.out)
        _fsync_dir(self.out.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.work = None
        return Artifact(path=self.out, manifest=manifest)


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
