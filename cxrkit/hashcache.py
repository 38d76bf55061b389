"""Content hashes of files, computed once and remembered while the file is unchanged.

cxrkit keys raw inputs and verifies artifacts on *content* (sha256), never on
path + size + mtime: ``touch`` must not change an id, and new bytes behind an
old mtime must not pass as "up to date". Hashing a large dataset on every run
would be slow, so a digest is remembered in a small SQLite table under
``$CXRKIT_CACHE`` (default ``~/.cache/cxrkit``) keyed by

    (device, inode, size, mtime_ns, ctime_ns)

Why this key is safe to trust: any write to a file's bytes updates its mtime
*and* ctime. A user can set mtime back (``touch -d``, ``os.utime``), but
setting it updates ctime to the current time, and ctime cannot be set from user
space. So rewriting a file and then restoring its size and mtime still changes
the key, and the file is hashed again. The path is not part of the key, so a
renamed file (an artifact published from its temp dir) keeps its entry, and a
new file that reuses a deleted file's inode gets a new ctime. What the cache
cannot see: a changed system clock, root writing the block device directly, or
a rewrite that lands in the same clock tick as the stat taken when the digest was
remembered. The last one is closed the way git closes its "racy" index entries:
a digest is only remembered for a file whose ctime is at least ``RACY_NS`` older
than the clock, so a later write necessarily moves ctime. Set
``CXRKIT_HASH_CACHE=0`` to hash every time.

Bit rot (a disk flipping bytes under a file) moves neither mtime nor ctime, so
``cxrkit verify`` reads every byte instead of asking the cache.

The cache is an optimisation only: when it cannot be opened or written (read-only
home, full disk, locked database) files are hashed and nothing is remembered.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

CHUNK = 1 << 20
RACY_NS = 2_000_000_000  # covers coarse (jiffy, 1-2 s FAT/NFS) timestamp granularity
_local = threading.local()


def _cache_path() -> Path:
    root = os.environ.get("CXRKIT_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "cxrkit"
    return base / "hashes.sqlite3"


def _enabled() -> bool:
    return os.environ.get("CXRKIT_HASH_CACHE", "1") not in ("0", "false", "no", "")


def _connection() -> sqlite3.Connection | None:
    """One connection per thread and process (sqlite connections do not survive a fork)."""
    path = _cache_path()
    key = (os.getpid(), str(path))
    cached = getattr(_local, "conn", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=5.0, isolation_level=None)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS digests (dev INTEGER, ino INTEGER, size INTEGER, "
            "mtime_ns INTEGER, ctime_ns INTEGER, sha256 TEXT, "
            "PRIMARY KEY (dev, ino))"
        )
    except (OSError, sqlite3.Error) as exc:
        log.debug("hash cache %s unavailable (%s); hashing without it", path, exc)
        conn = None
    _local.conn = (key, conn)
    return conn


def _stat_key(stat: os.stat_result) -> tuple[int, int, int, int, int]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def hash_bytes_of(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes, streamed, without the cache."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def lookup(stat: os.stat_result) -> str | None:
    """The remembered digest of a file whose stat is ``stat``, or None."""
    if not _enabled():
        return None
    conn = _connection()
    if conn is None:
        return None
    dev, ino, size, mtime_ns, ctime_ns = _stat_key(stat)
    try:
        row = conn.execute(
            "SELECT size, mtime_ns, ctime_ns, sha256 FROM digests WHERE dev=? AND ino=?",
            (dev, ino),
        ).fetchone()
    except sqlite3.Error:
        return None
    if row is not None and tuple(row[:3]) == (size, mtime_ns, ctime_ns):
        return row[3]
    return None


def remember(stat: os.stat_result, sha256: str) -> None:
    """Record ``sha256`` for the file whose stat (taken before hashing) is ``stat``."""
    if not _enabled():
        return
    conn = _connection()
    if conn is None:
        return
    try:
        conn.execute(
            "INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?)",
            (*_stat_key(stat), sha256),
        )
    except sqlite3.Error as exc:
        log.debug("hash cache write failed (%s)", exc)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's content, from the cache when the file is unchanged since last hashed.

    The file is stat-ed before and after hashing; a digest is remembered only
    when both agree (a file being written while hashed is not cached) and the
    file's ctime is not "racy" (see the module docstring).
    Raises OSError when the file cannot be read.
    """
    before = os.stat(path)
    cached = lookup(before)
    if cached is not None:
        return cached
    digest = hash_bytes_of(path)
    after = os.stat(path)
    if _stat_key(after) == _stat_key(before) and time.time_ns() - after.st_ctime_ns > RACY_NS:
        remember(after, digest)
    return digest
