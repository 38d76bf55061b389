"""Finding raw inputs: expand sources, fingerprint them, partition them deterministically."""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import stat
from pathlib import Path

from cxrkit.errors import ConfigError, InputError

log = logging.getLogger(__name__)

# Files that sit beside images in the layouts we read (MIMIC-CXR reports, IU XML,
# mapping CSVs) and are not image inputs. They are counted, not rejected.
NON_IMAGE_SUFFIXES = frozenset(
    {
        ".txt",
        ".xml",
        ".csv",
        ".tsv",
        ".json",
        ".md",
        ".gz",
        ".tgz",
        ".zip",
        ".html",
        ".pdf",
        ".log",
        ".parquet",
        ".hex",
    }
)


def expand_sources(sources: list[str]) -> tuple[list[Path], int]:
    """Expand directories (recursively) and globs into a sorted, de-duplicated file list.

    Links to folders inside a directory source are not followed (as ``find``); they
    are logged as a warning. Returns (candidate image files, number of non-image files
    skipped). Raises InputError when a source matches nothing.
    """
    files: set[Path] = set()
    skipped = 0
    linked: list[Path] = []  # linked folders inside a source: not descended into
    for source in sources:
        matches = (
            sorted(glob.glob(os.path.expanduser(source), recursive=True))
            if any(ch in source for ch in "*?[")
            else [os.path.expanduser(source)]
        )
        if not matches or not any(Path(m).exists() for m in matches):
            raise InputError(f"{source}: no such file or directory (or the glob matched nothing)")
        for match in map(Path, matches):
            if match.is_dir():
                for root, dirnames, filenames in os.walk(match):
                    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                    linked += [Path(root) / d for d in dirnames if os.path.islink(Path(root) / d)]
                    for name in filenames:
                        path = Path(root) / name
                        if name.startswith("."):
                            continue
                        if path.suffix.lower() in NON_IMAGE_SUFFIXES:
                            skipped += 1
                            continue
                        files.add(safe_resolve(path))
            elif os.path.lexists(match):  # a file, or a FIFO/broken link ingest will reject
                files.add(safe_resolve(match))
    if linked:
        log.warning(
            "%d linked folder(s) inside the sources were not read (links to folders are "
            "not followed; give them as sources to read them), e.g. %s",
            len(linked),
            linked[0],
        )
    return sorted(files), skipped


def safe_resolve(path: Path) -> Path:
    """The absolute path of a file with its folders resolved but the file's own name kept:
    a file linked into a dataset layout from a content store (DVC, git-annex, a hub
    cache) keeps the name and folders that carry its patient, study, view and split.
    When resolving fails (a symlink loop) the absolute path unresolved; the file is then
    rejected by ingest with its reason instead of stopping the run."""
    try:
        return path.parent.resolve() / path.name
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path))


def fingerprint(files: list[Path]) -> str:
    """A content id for a set of raw files: sha256 over (path, sha256 of the bytes).

    Keyed on content, so ``touch`` keeps the id and new bytes behind an old
    size and mtime change it. Digests come from the hash cache (see
    :mod:`cxrkit.hashcache`), so a re-run over unchanged files reads no bytes.
    A file that is not a regular file (FIFO, device) or cannot be read counts by
    its path and the reason; ingest rejects it on its own.
    """
    from cxrkit.hashcache import sha256_file

    digest = hashlib.sha256()
    for path in files:
        try:
            mode = os.stat(path).st_mode
            content = sha256_file(path) if stat.S_ISREG(mode) else f"special:{stat.S_IFMT(mode)}"
        except OSError as exc:
            content = f"unreadable:{exc.errno}"
        digest.update(f"{path}\0{content}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def partition_of(path: Path, num_shards: int) -> int:
    """Deterministic partition of a file: stable when other files are added or removed."""
    digest = hashlib.sha256(str(path).encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def resolve_partition(shard_index: int | None, num_shards: int | None) -> tuple[int, int]:
    """Partition settings from flags, falling back to a SLURM job array. Returns (index, count)."""
    if num_shards is None and shard_index is None and "SLURM_ARRAY_TASK_ID" in os.environ:
        task = _env_int("SLURM_ARRAY_TASK_ID", None)
        first = _env_int("SLURM_ARRAY_TASK_MIN", 0)
        count = _env_int("SLURM_ARRAY_TASK_COUNT", 0)
        if count <= 0:
            raise ConfigError(
                "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not; "
                "pass --shard-index/--num-shards"
            )
        if not 0 <= task - first < count:
            raise ConfigError(
                f"SLURM_ARRAY_TASK_ID {task} is outside the array "
                f"(SLURM_ARRAY_TASK_MIN {first}, SLURM_ARRAY_TASK_COUNT {count})"
            )
        return task - first, count
    num_shards = 1 if num_shards is None else num_shards
    shard_index = 0 if shard_index is None else shard_index
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ConfigError(f"--shard-index {shard_index} must be in [0, --num-shards {num_shards})")
    return shard_index, num_shards


def _env_int(name: str, default: int | None) -> int:
    """An integer environment variable; ConfigError (exit 2) naming it when it is not one."""
    value = os.environ.get(name)
    if value is None and default is not None:
        return default
    try:
        return int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not an integer") from None
