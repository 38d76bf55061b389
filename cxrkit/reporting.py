"""Progress reporting that library code can use without printing.

Library modules call :func:`progress` and get a small handle with ``advance``.
By default the handle logs one line every ``log_every_s`` seconds (good for CI
and SLURM logs). The CLI installs a rich progress bar with
:func:`set_progress_factory` when stderr is a terminal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

log = logging.getLogger("cxrkit")


class ProgressHandle(Protocol):
    def advance(self, n: int = 1, **info: object) -> None: ...


class _LogProgress:
    def __init__(self, desc: str, total: int | None, log_every_s: float) -> None:
        self.desc, self.total, self.log_every_s = desc, total, log_every_s
        self.done = 0
        self.start = self.last = time.monotonic()

    def advance(self, n: int = 1, **info: object) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.log_every_s or (self.total and self.done >= self.total):
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            total = f"/{self.total}" if self.total else ""
            extra = " ".join(f"{k}={v}" for k, v in info.items())
            log.info("%s: %d%s (%.1f/s) %s", self.desc, self.done, total, rate, extra)


_factory: Callable | None = None
LOG_EVERY_S = 10.0


def set_progress_factory(factory: Callable | None) -> None:
    """Install a context-manager factory ``factory(desc, total) -> handle`` (None = logging)."""
    global _factory
    _factory = factory


@contextmanager
def progress(desc: str, total: int | None = None) -> Iterator[ProgressHandle]:
    """Context manager yielding a handle with ``advance(n, **info)``."""
    if _factory is not None:
        with _factory(desc, total) as handle:
            yield handle
        return
    handle = _LogProgress(desc, total, LOG_EVERY_S)
    yield handle
    elapsed = time.monotonic() - handle.start
    if handle.done:
        log.info(
            "%s: %d done in %.1fs (%.1f/s)",
            desc,
            handle.done,
            elapsed,
            handle.done / max(elapsed, 1e-9),
        )
