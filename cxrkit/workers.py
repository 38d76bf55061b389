"""Why a process pool broke: the dead workers' exit codes, in words."""

from __future__ import annotations

import signal
from concurrent.futures import ProcessPoolExecutor


def death_causes(pool: ProcessPoolExecutor) -> str:
    """ "killed by SIGKILL (...)", "exited with code 3"... for the pool's dead workers.

    Reads the executor's process table (CPython keeps the Process objects there);
    returns "cause unknown" when none can be read.
    """
    codes = sorted(
        {p.exitcode for p in (getattr(pool, "_processes", None) or {}).values() if p.exitcode},
        key=str,
    )
    causes = []
    for code in codes:
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            hint = " (what the kernel's OOM killer sends)" if code == -signal.SIGKILL else ""
            causes.append(f"killed by {name}{hint}")
        else:
            causes.append(f"exited with code {code}")
    return ", ".join(causes) or "cause unknown"
