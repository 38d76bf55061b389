"""Facts about the process launch: which rank this is, and the exit code the job script reads.

Under ``accelerate launch`` (or ``torchrun``) every training process exits with
cxrkit's code (75 = preempted), but the launcher itself exits 1 whenever a
child exits non-zero (``ChildFailedError``), so a job script cannot tell a
preemption from a crash by the launcher's status. The generated SLURM script
therefore sets ``CXRKIT_EXIT_DIR`` and every process writes its own exit code
there (``rank-<R>``); the script requeues when any rank says 75. This beats
propagating the code through the launcher: it works the same under
accelerate, torchrun and srun, and survives a launcher that dies first.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from cxrkit.errors import Interrupted

EXIT_DIR_ENV = "CXRKIT_EXIT_DIR"


def global_rank() -> int:
    """This process's global rank from the launcher's environment (0 when not launched)."""
    for name in ("RANK", "SLURM_PROCID"):  # set by accelerate/torchrun; by srun per task
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def world_size() -> int:
    """Processes of this launch from the launcher's environment (1 when not launched)."""
    value = os.environ.get("WORLD_SIZE", "")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def is_main_process() -> bool:
    """True in the one process that reports results (rank 0)."""
    return global_rank() == 0


def exit_code_file(rank: int | None = None) -> Path | None:
    """Where this process records its exit code, or None when no job script asked."""
    folder = os.environ.get(EXIT_DIR_ENV)
    if not folder:
        return None
    rank = global_rank() if rank is None else rank
    return Path(folder) / f"rank-{rank}"


def write_exit_code(code: int) -> None:
    """Record ``code`` for the job script (no-op outside one); never raises."""
    path = exit_code_file()
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(f"{int(code)}\n")
        os.replace(tmp, path)
    except OSError:
        pass  # the script falls back to the launcher's status


@contextlib.contextmanager
def exit_record() -> Iterator[None]:
    """Record the exit code of the enclosed block: 0, a CxrkitError's code, 130 or 1."""
    try:
        yield
    except KeyboardInterrupt:
        write_exit_code(Interrupted.exit_code)
        raise
    except SystemExit as exc:
        write_exit_code(exc.code if isinstance(exc.code, int) else 1)
        raise
    except BaseException as exc:  # CxrkitError and click's Exit carry an exit_code
        code = getattr(exc, "exit_code", None)
        write_exit_code(code if isinstance(code, int) else 1)
        raise
    else:
        write_exit_code(0)
