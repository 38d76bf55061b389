"""Who is building an artifact, and whether that process still runs (pid, host, SLURM job)."""

from __future__ import annotations

import os
import socket


def owner() -> dict:
    """Who is building: pid, host and SLURM job (a pid means nothing on another host)."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "slurm_job": os.environ.get("SLURM_JOB_ID") or None,
        "slurm_restart": os.environ.get("SLURM_RESTART_COUNT", "0"),
    }


def owner_state(info: dict) -> str:
    """Whether the run that wrote a marker still runs: "dead", "alive" or "unknown".

    The same SLURM job id with another restart count means a requeue of this
    very job: SLURM ends every process of a job before it runs again, so the
    owner is dead wherever it ran. Otherwise a pid is only checked on its own
    host; on another host it is "unknown" (markers from before hosts were
    recorded count as this host).
    """
    job = os.environ.get("SLURM_JOB_ID")
    restart = os.environ.get("SLURM_RESTART_COUNT", "0")
    if job and info.get("slurm_job") == job and info.get("slurm_restart") != restart:
        return "dead"
    host = info.get("host")
    if host and host != socket.gethostname():
        return "unknown"
    return "alive" if pid_alive(int(info.get("pid", -1))) else "dead"


def pid_alive(pid: int) -> bool:
    """Whether another process with this pid runs on this host (this process: False).

    A zombie (a killed process its parent has not waited for yet) does not run: it
    writes nothing more, so a re-run started between a kill and the reap may resume.
    """
    if pid <= 0:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # succeeds for a zombie too
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether ``pid`` is a zombie (from ``/proc``; False where there is none)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return False
    fields = stat.rpartition(b")")[2].split()  # after "pid (comm)": comm may hold ")"
    return bool(fields) and fields[0] == b"Z"
