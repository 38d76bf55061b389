"""File-timestamp helpers for tests that rewrite a file and expect its ctime to move."""

from __future__ import annotations

import os
import time
from pathlib import Path


def wait_for_a_later_ctime(path: Path, timeout: float = 10.0) -> None:
    """Return once a file changed now gets a ctime later than ``path``'s.

    Kernels without fine-grained ("multigrain", Linux 6.13+) file timestamps stamp
    ctime from a clock that moves once a tick (1-10 ms; 1-2 s on FAT or NFS), so a
    file rewritten in the same tick as it was written keeps its ctime. The hash
    cache refuses such "racy" files (``hashcache.RACY_NS``); a test that turns that
    rule off and then rewrites the file must first wait for the clock to move, as
    seen on a probe file beside ``path`` (same file system, same clock).
    Raises AssertionError after ``timeout`` seconds.
    """
    target = os.stat(path).st_ctime_ns
    probe = path.with_name(f".{path.name}.clock-probe")
    deadline = time.monotonic() + timeout
    try:
        while True:
            probe.write_bytes(b"")
            if os.stat(probe).st_ctime_ns > target:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the file clock did not move past {path}'s ctime")
            time.sleep(0.001)
    finally:
        probe.unlink(missing_ok=True)
