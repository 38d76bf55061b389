"""Error types. Library code raises these; only the CLI maps them to exit codes.

Every message should name the file (or setting) at fault and say what to do.
"""

from __future__ import annotations


class CxrkitError(Exception):
    """Base of every error cxrkit raises on purpose."""

    exit_code = 1


class ConfigError(CxrkitError):
    """A setting, preset, flag combination or config file is wrong (usage error)."""

    exit_code = 2


class InputError(CxrkitError):
    """An input file or directory cannot be used (missing, unreadable, wrong format)."""

    exit_code = 3


class OutputError(InputError):
    """``--out`` cannot be written: a file in the way, no permission, disk full (exit 3)."""


class ArtifactError(CxrkitError):
    """An artifact is missing, of the wrong kind, unknown format, or fails integrity checks."""

    exit_code = 4


class NotBuiltError(CxrkitError):
    """The requested feature is not implemented yet in this version of cxrkit."""

    exit_code = 5


class WorkerDied(CxrkitError):
    """A worker process died (killed by the OOM killer, a signal or a crash); finished work
    is kept and re-running the same command resumes."""

    exit_code = 70  # EX_SOFTWARE: an internal process failed, not the input or the settings


class Preempted(CxrkitError):
    """The run stopped on a signal after saving its state; re-running resumes it."""

    exit_code = 75  # EX_TEMPFAIL: "try again", what schedulers expect for requeue


class Interrupted(CxrkitError):
    """The user interrupted the run (Ctrl-C); partial work is kept for resume."""

    exit_code = 130


class Reject(Exception):
    """One input item cannot be used; it goes to the rejects table, the run goes on.

    `reason` is a short machine-readable code (``not_dicom``, ``corrupt_pixels``...),
    `detail` a human-readable sentence.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


EXIT_CODES: dict[str, int] = {
    "ok": 0,
    "unexpected error": 1,
    "usage / bad configuration": ConfigError.exit_code,
    "bad input or unwritable output (file, folder, disk full)": InputError.exit_code,
    "artifact missing, wrong kind or failed integrity check": ArtifactError.exit_code,
    "feature not built yet": NotBuiltError.exit_code,
    "a worker process died (finished work kept, re-run to resume)": WorkerDied.exit_code,
    "preempted (state saved, re-run to resume)": Preempted.exit_code,
    "interrupted by the user": Interrupted.exit_code,
}
