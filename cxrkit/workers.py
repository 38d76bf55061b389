"""Why a process pool broke: the dead workers' exit codes, in words."""

from __future__ import annotations

import signal
from concurrent.futures import ProcessPoolExecutor


def death_causes(pool: ProcessPoolExecutor) -> str:
    """ "killed by SIGKILL (...)", "exited with code 3"... for the pool's dead workers.

    Reads the executor's process table (CPython keeps the Process objects there),
    waiting up to 5 s a process for the pool to reap them (their exit codes are not
    known yet when BrokenProcessPool is raised); returns "cause unknown" when none
    can be read. Survivors the pool terminated show as SIGTERM.
    """
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:  # the pool's manager thread is terminating and reaping them
        process.join(timeout=5)
    codes = sorted({p.exitcode for p in processes if p.exitcode}, key=str)
    causes = []
    for code in codes:
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            hint = " (what the kernel's OOM killer sends)" if code == -signal.SIGKILL else ""
            causes.append(f"killed by {name}{hint}")
        else:
            causes.append(f"exited with code {code}")
    return ", ".join(causes) or "cause unknown"
