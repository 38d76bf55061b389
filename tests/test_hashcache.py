"""The content-hash cache never makes a process wait long behind another's writes:
a locked database is a miss (the file is hashed), and new digests are written in
batches (one transaction each), flushed by count, on demand and at exit."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from cxrkit import hashcache


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A private cache database path, old enough files (no racy ctime) and an empty buffer."""
    hashcache.flush()  # what earlier tests buffered goes to their own caches
    monkeypatch.setenv("CXRKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hashcache, "RACY_NS", 0)
    yield tmp_path / "cache" / "hashes.sqlite3"
    hashcache.flush()


def _file(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _stored(db: Path) -> dict[int, str]:
    """ino -> sha256 as another process would read the database."""
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT ino, sha256 FROM digests").fetchall())


def test_a_remembered_digest_is_buffered_then_written_by_flush(cache, tmp_path):
    path = _file(tmp_path, "a.bin", b"a" * 100)
    digest = hashcache.sha256_file(path)
    ino = os.stat(path).st_ino
    assert ino not in _stored(cache)  # buffered: no write transaction per file
    assert hashcache.lookup(os.stat(path)) == digest  # this process already knows it
    assert hashcache.flush() == 1
    assert _stored(cache)[ino] == digest == hashcache.hash_bytes_of(path)
    assert hashcache.flush() == 0  # nothing left to write


def test_a_full_buffer_is_written_in_one_go(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(hashcache, "FLUSH_EVERY", 3)
    paths = [_file(tmp_path, f"{i}.bin", bytes([i]) * 10) for i in range(3)]
    for path in paths[:2]:
        hashcache.sha256_file(path)
    assert not cache.exists() or _stored(cache) == {}
    hashcache.sha256_file(paths[2])  # the third entry fills the batch
    assert set(_stored(cache)) == {os.stat(p).st_ino for p in paths}


def test_a_buffered_digest_keeps_the_content_key(cache, tmp_path):
    path = _file(tmp_path, "a.bin", b"A" * 64)
    before = os.stat(path)
    first = hashcache.sha256_file(path)
    path.write_bytes(b"B" * 64)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # hide the write
    assert hashcache.lookup(os.stat(path)) is None  # ctime moved: the buffer is not trusted
    assert hashcache.sha256_file(path) != first


def test_buffered_digests_are_written_at_exit(tmp_path):
    path = _file(tmp_path, "a.bin", b"exit" * 10)
    root = str(Path(hashcache.__file__).resolve().parents[1])  # this checkout's cxrkit
    env = {**os.environ, "CXRKIT_CACHE": str(tmp_path / "cache"), "PYTHONPATH": root}
    code = (
        "import os, sys; from cxrkit import hashcache; hashcache.RACY_NS = 0; "
        "print(hashcache.sha256_file(sys.argv[1]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    stored = _stored(tmp_path / "cache" / "hashes.sqlite3")
    assert stored[os.stat(path).st_ino] == done.stdout.strip()


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_digests_remembered_in_a_worker_process_are_written_when_it_ends(cache, tmp_path, start):
    path = _file(tmp_path, "a.bin", b"worker" * 10)
    context = multiprocessing.get_context(start)
    with ProcessPoolExecutor(1, mp_context=context, initializer=_no_racy_wait) as pool:
        digest = pool.submit(hashcache.sha256_file, path).result()
    assert _stored(cache)[os.stat(path).st_ino] == digest


def _no_racy_wait() -> None:
    hashcache.RACY_NS = 0  # a spawned worker starts from the module's defaults


def test_a_lookup_behind_another_process_write_lock_is_a_quick_miss(cache, tmp_path):
    path = _file(tmp_path, "a.bin", b"x" * 100)
    digest = hashcache.sha256_file(path)
    hashcache.flush()
    writer = sqlite3.connect(cache, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")  # another process in the middle of its commit
    try:
        start = time.monotonic()
        assert hashcache.lookup(os.stat(path)) is None  # a miss, not a wait
        assert time.monotonic() - start < 2.0  # the old 5 s connect timeout would fail this
        assert hashcache.sha256_file(path) == digest  # the miss path hashes the file
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert hashcache.lookup(os.stat(path)) == digest  # the cache answers again


def test_a_cache_locked_while_first_opened_is_retried_later(cache, tmp_path):
    path = _file(tmp_path, "a.bin", b"y" * 100)
    digest = hashcache.hash_bytes_of(path)
    cache.parent.mkdir(parents=True)
    writer = sqlite3.connect(cache, isolation_level=None)
    writer.execute(
        "CREATE TABLE digests (dev INTEGER, ino INTEGER, size INTEGER, mtime_ns INTEGER, "
        "ctime_ns INTEGER, sha256 TEXT, PRIMARY KEY (dev, ino))"
    )
    writer.execute("BEGIN EXCLUSIVE")
    writer.execute(
        "INSERT INTO digests VALUES (?, ?, ?, ?, ?, ?)",
        (*hashcache._stat_key(os.stat(path)), digest),
    )
    try:
        assert hashcache.lookup(os.stat(path)) is None  # busy while opening: no cache yet
    finally:
        writer.execute("COMMIT")
        writer.close()
    assert hashcache.lookup(os.stat(path)) == digest  # not given up for the process


def test_a_batch_that_cannot_get_the_lock_is_dropped_not_waited_for(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(hashcache, "FLUSH_TIMEOUT_S", 0.05)
    first = _file(tmp_path, "a.bin", b"1" * 10)
    hashcache.sha256_file(first)
    hashcache.flush()
    second = _file(tmp_path, "b.bin", b"2" * 10)
    hashcache.sha256_file(second)
    writer = sqlite3.connect(cache, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process writing its own batch
    try:
        assert hashcache.flush() == 0  # dropped: costs one rehash next time, no error
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert set(_stored(cache)) == {os.stat(first).st_ino}
    assert hashcache.lookup(os.stat(second)) is None
    assert hashcache.lookup(os.stat(first)) is not None


def test_a_file_racy_when_hashing_starts_is_not_remembered_however_long_the_hash(
    tmp_path, monkeypatch
):
    """The racy rule is about the clock when the bytes are read: a write during a slow
    hash can land in the tick the file's ctime already shows. The clock read after the
    hash says nothing about that, so a slow hash must not make a fresh file trusted."""
    hashcache.flush()
    monkeypatch.setenv("CXRKIT_CACHE", str(tmp_path / "cache"))
    path = _file(tmp_path, "fresh.bin", b"f" * 100)  # ctime: now
    clock = {"ns": time.time_ns()}
    monkeypatch.setattr(hashcache.time, "time_ns", lambda: clock["ns"])
    real_hash = hashcache.hash_bytes_of

    def slow_hash(target):
        digest = real_hash(target)
        clock["ns"] += 3 * hashcache.RACY_NS  # the read took longer than RACY_NS
        return digest

    monkeypatch.setattr(hashcache, "hash_bytes_of", slow_hash)
    assert hashcache.sha256_file(path) == real_hash(path)
    assert hashcache.lookup(os.stat(path)) is None  # not remembered
    assert hashcache.flush() == 0


def test_an_inode_number_past_sqlites_signed_range_is_cached_not_a_crash(cache, tmp_path):
    """Overlay mounts with xino, SMB and some NFS servers report 64-bit unsigned inode
    numbers with the top bit set; SQLite's INTEGER is signed. A cache must never make
    hashing fail: the key is stored as the same 64 bits read as signed."""
    real = os.stat(_file(tmp_path, "a.bin", b"big inode" * 10))
    fields = ("st_dev", "st_ino", "st_size", "st_mtime_ns", "st_ctime_ns")
    big = SimpleNamespace(**{name: getattr(real, name) for name in fields})
    big.st_ino = 2**63 + real.st_ino
    assert hashcache.lookup(big) is None
    hashcache.remember(big, "ab" * 32)
    assert hashcache.flush() == 1
    assert hashcache.lookup(big) == "ab" * 32  # read back from the database
    small = SimpleNamespace(**{**vars(big), "st_ino": real.st_ino})
    assert hashcache.lookup(small) is None  # the top bit is part of the key
