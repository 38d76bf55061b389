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
a digest is only remembered for a file whose ctime was at least ``RACY_NS`` older
than the clock when hashing began, so a write during or after the read necessarily
moves ctime. (The clock is this host's, the ctime the file server's: an NFS server
whose clock lags this host's by more than ``RACY_NS`` defeats the rule. Nor does the
cache see a file rewritten by another NFS client while this one still serves the old
attributes from its attribute cache, ``actimeo``.) Set ``CXRKIT_HASH_CACHE=0`` to hash
every time.

Bit rot (a disk flipping bytes under a file) moves neither mtime nor ctime, so
``cxrkit verify`` reads every byte instead of asking the cache.

The cache is an optimisation only: when it cannot be opened or written (read-only
home, full disk, locked database) files are hashed and nothing is remembered.
It never makes a process wait long for another's writes: a lookup gives up
after ``LOOKUP_TIMEOUT_S`` on a locked database and treats it as a miss (the file
is hashed). New digests are buffered in memory and written in one transaction per
``FLUSH_EVERY`` entries, after ``FLUSH_AFTER_S`` seconds, on :func:`flush` and at
interpreter exit, so several processes ingesting at once take the write lock
(and pay an fsync) once a batch, not once a file. A buffered entry is answered
from memory by this process; one lost (a busy database at flush, a killed
process) only costs a rehash. The journal stays the default rollback journal:
WAL needs shared memory that network home directories do not provide.
"""

from __future__ import annotations

import atexit
import contextlib
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
LOOKUP_TIMEOUT_S = 0.05  # longest wait on another process's write lock before a miss
FLUSH_TIMEOUT_S = 1.0  # longest wait to write a batch before dropping it (a rehash later)
FLUSH_EVERY = 256  # buffered digests written in one transaction
FLUSH_AFTER_S = 5.0  # ... or once the oldest buffered digest is this old
_local = threading.local()
_Row = tuple[int, int, int, int, int, str]  # dev, ino, size, mtime_ns, ctime_ns, sha256
_pending: dict[str, dict[tuple[int, int], _Row]] = {}  # cache path -> (dev, ino) -> row
_pending_state = {"pid": os.getpid(), "since": 0.0}
_pending_lock = threading.Lock()


def _cache_path() -> Path:
    root = os.environ.get("CXRKIT_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "cxrkit"
    return base / "hashes.sqlite3"


def _enabled() -> bool:
    return os.environ.get("CXRKIT_HASH_CACHE", "1") not in ("0", "false", "no", "")


def _connection(path: Path | None = None) -> sqlite3.Connection | None:
    """One connection per thread and process (sqlite connections do not survive a fork),
    to ``path`` (default the current cache path), waiting at most ``LOOKUP_TIMEOUT_S`` on
    locks. None when the cache cannot be used; a database busy while being opened is
    retried on the next call.
    """
    path = path or _cache_path()
    key = (os.getpid(), str(path))
    cached = getattr(_local, "conn", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    if cached is not None and cached[1] is not None and cached[0][0] == os.getpid():
        cached[1].close()  # one open database per thread: the cache path moved
    _local.conn = None
    conn = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=LOOKUP_TIMEOUT_S, isolation_level=None)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS digests (dev INTEGER, ino INTEGER, size INTEGER, "
            "mtime_ns INTEGER, ctime_ns INTEGER, sha256 TEXT, "
            "PRIMARY KEY (dev, ino))"
        )
    except (OSError, sqlite3.Error) as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, sqlite3.OperationalError) and _busy(exc):
            return None  # another process is writing: no cache this time, try again later
        log.debug("hash cache %s unavailable (%s); hashing without it", path, exc)
        conn = None
    _local.conn = (key, conn)
    return conn


def _busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _stat_key(stat: os.stat_result) -> tuple[int, int, int, int, int]:
    # Each field's 64 bits read as signed: SQLite's INTEGER is signed, and overlay (xino),
    # SMB and some NFS mounts report inode numbers with the top bit set.
    fields = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    dev, ino, size, mtime_ns, ctime_ns = (_signed64(v) for v in fields)
    return dev, ino, size, mtime_ns, ctime_ns


def _signed64(value: int) -> int:
    """The low 64 bits of ``value`` read as a signed integer (identity inside that range)."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def hash_bytes_of(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes, streamed, without the cache."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def lookup(stat: os.stat_result) -> str | None:
    """The remembered digest of a file whose stat is ``stat``, or None.

    Buffered digests are answered first. A database locked by another process for
    longer than ``LOOKUP_TIMEOUT_S`` is a miss (None), never a long wait.
    """
    if not _enabled():
        return None
    dev, ino, size, mtime_ns, ctime_ns = _stat_key(stat)
    path = _cache_path()
    with _pending_lock:
        buffered = _pending.get(str(path), {}).get((dev, ino))
    if buffered is not None and buffered[2:5] == (size, mtime_ns, ctime_ns):
        return buffered[5]
    conn = _connection(path)
    if conn is None:
        return None
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
    """Record ``sha256`` for the file whose stat (taken before hashing) is ``stat``.

    The entry is buffered; it reaches the database at the next :func:`flush`, which
    runs by itself every ``FLUSH_EVERY`` entries, after ``FLUSH_AFTER_S`` and at exit.
    """
    if not _enabled():
        return
    row = (*_stat_key(stat), sha256)
    with _pending_lock:
        _drop_if_forked()
        if _pending_state.get("exit_hook") != os.getpid():
            _pending_state["exit_hook"] = os.getpid()
            _flush_at_worker_exit()
        if not any(_pending.values()):
            _pending_state["since"] = time.monotonic()
        _pending.setdefault(str(_cache_path()), {})[row[:2]] = row
        count = sum(len(rows) for rows in _pending.values())
        due = count >= FLUSH_EVERY or time.monotonic() - _pending_state["since"] >= FLUSH_AFTER_S
    if due:
        flush()


def _drop_if_forked() -> None:
    """In a forked child, forget the parent's buffered digests (the parent writes its
    own). Call with ``_pending_lock`` held."""
    if _pending_state["pid"] != os.getpid():
        _pending.clear()
        _pending_state["pid"] = os.getpid()


def flush() -> int:
    """Write the buffered digests, one transaction per cache database.

    Returns: how many were written. A database that stays locked past
    ``FLUSH_TIMEOUT_S`` or cannot be written loses its batch (those files are
    hashed again next time); nothing is raised.
    """
    with _pending_lock:
        _drop_if_forked()
        batches = {path: list(rows.values()) for path, rows in _pending.items() if rows}
        _pending.clear()
    written = 0
    for path, rows in batches.items():
        conn = _connection(Path(path))
        if conn is None:
            continue
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(FLUSH_TIMEOUT_S * 1000)}")
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
            written += len(rows)
        except sqlite3.Error as exc:
            log.debug("hash cache write of %d digests failed (%s)", len(rows), exc)
        with contextlib.suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.execute(f"PRAGMA busy_timeout = {int(LOOKUP_TIMEOUT_S * 1000)}")
    return written


def _flush_at_worker_exit() -> None:
    """Flush when a multiprocessing worker ends too: a forked one leaves by ``os._exit``,
    which skips atexit but runs multiprocessing's finalizers."""
    from multiprocessing import util

    util.Finalize(None, flush, exitpriority=0)


atexit.register(flush)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's content, from the cache when the file is unchanged since last hashed.

    The file is stat-ed before and after hashing; a digest is remembered only
    when both agree (a file being written while hashed is not cached) and the
    file's ctime is not "racy" (see the module docstring).
    Raises OSError when the file cannot be read.
    """
    started_ns = time.time_ns()  # before any byte is read: see the racy rule
    before = os.stat(path)
    cached = lookup(before)
    if cached is not None:
        return cached
    digest = hash_bytes_of(path)
    after = os.stat(path)
    # Racy against the clock when reading began, not after it: a write during a slow
    # hash can land in the tick ctime already shows and leave the stat unchanged.
    if _stat_key(after) == _stat_key(before) and started_ns - after.st_ctime_ns > RACY_NS:
        remember(after, digest)
    return digest
