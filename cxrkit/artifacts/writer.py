"""Building an artifact: one writer per output, a lock, kill-safe atomic publish.

An artifact is built inside ``DIR.tmp-<pid>`` and published with a rename, so a
crash never leaves a directory that looks complete. A killed build leaves its
temp dir behind; the next build with the same id adopts it (see
:meth:`ArtifactWriter.resume_dir`).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from cxrkit import __version__
from cxrkit.artifacts.files import fsync_dir, make_parent, os_reason, write_json_atomic
from cxrkit.artifacts.integrity import open_artifact, verify
from cxrkit.artifacts.manifest import (
    FORMAT,
    KINDS,
    MANIFEST,
    PARTIAL_MARKER,
    Artifact,
    compute_id,
    data_files,
    describe_file,
    git_sha,
    manifest_checksum,
    read_manifest,
    read_record,
)
from cxrkit.artifacts.owners import owner, owner_state, pid_alive
from cxrkit.errors import ArtifactError, OutputError

log = logging.getLogger(__name__)


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
        self._input_refs = [
            _with_relative(i.ref(), self.out) if isinstance(i, Artifact) else dict(i)
            for i in self.inputs
        ]
        self.id = compute_id(
            self.kind, self.schema_version, self.params, [r["id"] for r in self._input_refs]
        )
        self._lock_fd: int | None = None
        self._waited = False

    # ------------------------------------------------------------ lock
    @property
    def lock_path(self) -> Path:
        return self.out.parent / f".{self.out.name}.lock"

    def refuse_inputs(self) -> None:
        """OutputError when OUT is one of this run's input artifacts or lies inside one:
        publishing there would delete what is being read, or add files that make the input
        fail its integrity check (its lock file included)."""
        target = self.out.resolve()
        for ref in self._input_refs:
            if ref.get("kind") == "raw" or not ref.get("path"):
                continue
            source = Path(ref["path"]).resolve()
            if source == target or source in target.parents:
                where = "an input" if source == target else "inside an input"
                raise OutputError(
                    f"{self.out}: is {where} of this run (the {ref.get('kind')} artifact "
                    f"{source}); it is never written, --force included; choose another --out"
                )

    def acquire(self) -> None:
        """Take the exclusive lock on OUT (waiting for another run that holds it)."""
        if not self.lock or self._lock_fd is not None:
            return
        self.refuse_inputs()  # before the lock file is made beside OUT
        import fcntl

        make_parent(self.out)
        key = str(self.lock_path.resolve())
        stale = _HELD_LOCKS.pop(key, None)
        if stale is not None:  # an earlier writer in this process that never published
            os.close(stale)
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(
                f"{self.out}: cannot create the lock file ({os_reason(exc)})"
            ) from exc
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
        never replaced (--force included): it may hold the user's own files. Nor is
        one of this run's inputs (see :meth:`refuse_inputs`).
        """
        self.refuse_inputs()
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
            if not marker.is_file() or (info := read_record(marker)) is None:
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
            if (info := read_record(candidate / PARTIAL_MARKER)) is None:
                continue
            if info.get("id") == self.id and (state := owner_state(info)) != "dead":
                return candidate, info, state
        return None

    # ------------------------------------------------------------ build and publish
    def begin(self) -> Path:
        """Create (or adopt) the temp dir and return it. Raises OutputError if OUT is unusable."""
        self.acquire()
        self.check_target()
        make_parent(self.out)
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
                f"{self.out}: cannot create the build directory ({os_reason(exc)})"
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
            "files": [describe_file(self.work, p) for p in data_files(self.work)],
            "schema": {"version": self.schema_version, **(schema or {})},
            "stats": stats or {},
        }
        manifest["checksum"] = manifest_checksum(manifest)
        write_json_atomic(self.work / MANIFEST, manifest)
        fsync_dir(self.work)
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
        fsync_dir(self.out.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        for stale in self.out.parent.glob(f"{self.out.name}.old-*"):  # left by a killed publish
            pid = stale.name.rpartition("-")[2]
            if pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)
        self.work = None
        if release:
            self.release()


def _with_relative(ref: dict, out: Path) -> dict:
    """An input artifact's ref plus ``relative``: its path seen from OUT's folder, so
    :func:`~cxrkit.artifacts.manifest.lineage` still finds it when both were moved
    together (a runs folder copied to another node). Not part of the id."""
    try:
        relative = os.path.relpath(ref["path"], Path(out).parent.resolve())
    except (ValueError, OSError):  # another drive (Windows), an unreadable folder
        return ref
    return {**ref, "relative": Path(relative).as_posix()}


_HELD_LOCKS: dict[str, int] = {}  # lock file -> fd, for the writers of this process
