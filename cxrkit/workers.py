"""Why a process pool broke: the dead workers' exit codes, in words."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor

# Signals a process dies by when native code crashes (abort() after an uncaught C++
# exception, a bad pointer, a bus error, a division by zero, an illegal instruction).
# SIGKILL is not one: it is what the kernel's OOM killer sends.
CRASH_SIGNALS = frozenset(
    {signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL}
)


def dead_exit_codes(pool: ProcessPoolExecutor) -> list[int]:
    """The distinct non-zero exit codes of the pool's dead workers (``-N``: killed by
    signal N), sorted.

    Reads the executor's process table (CPython keeps the Process objects there),
    waiting up to 5 s a process for the pool to reap them (their exit codes are not
    known yet when BrokenProcessPool is raised, and the pool's manager thread reaps them
    concurrently). Survivors the pool terminated show as
    ``-SIGTERM``.
    """
    processes = list((getattr(pool, "_processes", None) or {}).values())
    deadline = time.monotonic() + 5 * max(len(processes), 1)
    for process in processes:  # the pool's manager thread is terminating and reaping them
        # The manager thread may reap a process between our wait and our waitpid: ours
        # then fails (ECHILD) and join() returns with no exit code, which the manager
        # thread sets a moment later. Wait for it rather than read "cause unknown".
        while process.exitcode is None and time.monotonic() < deadline:
            process.join(timeout=0.05)
    return sorted({p.exitcode for p in processes if p.exitcode}, key=str)


def crash_signal(codes: list[int]) -> signal.Signals | None:
    """The crash signal (:data:`CRASH_SIGNALS`) among ``codes`` that killed a worker, or
    None when none did or when one was killed by SIGKILL (likely out of memory: not a
    file's fault, so not a crash to pin on one file)."""
    if -signal.SIGKILL in codes:
        return None
    crashes = [signal.Signals(-c) for c in codes if c < 0 and -c in CRASH_SIGNALS]
    return crashes[0] if crashes else None


def death_causes(pool: ProcessPoolExecutor, codes: list[int] | None = None) -> str:
    """ "killed by SIGKILL (...)", "exited with code 3"... for the pool's dead workers.

    ``codes`` as read by :func:`dead_exit_codes` (read now when None); returns "cause
    unknown" when none can be read.
    """
    codes = dead_exit_codes(pool) if codes is None else codes
    causes = []
    for code in codes:
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            hint = " (what the kernel's OOM killer sends)" if code == -signal.SIGKILL else ""
            causes.append(f"killed by {name}{hint}")
        else:
            causes.append(f"exited with code {code}")
    return ", ".join(causes) or "cause unknown"


def exit_with_parent() -> None:
    """In a pool worker (call it from the pool's initializer): end this process when the
    process that started it is gone.

    A pool worker waits on the pool's call queue, whose write end it holds itself, so
    when the parent is killed (SIGKILL, the OOM killer) no end-of-file ever comes and
    the worker, with the memory it holds, would wait forever. A daemon thread waits on
    the parent's sentinel instead and exits this process once the parent has died.
    Does nothing outside a multiprocessing child.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # returns once the parent process has ended
        os._exit(1)

    threading.Thread(target=watch, name="cxrkit-exit-with-parent", daemon=True).start()
