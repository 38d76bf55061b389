"""Writing output files safely: atomic JSON, fsync of folders, usable output paths."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cxrkit.errors import OutputError


def os_reason(exc: OSError) -> str:
    """The words an OSError gives for itself (``Permission denied``), for a one-line message."""
    return exc.strerror or str(exc)


def prepare_output_file(path: str | Path) -> Path:
    """Check that a single output file (``cxrkit label --out``) can be written.

    Creates missing parent folders. Raises OutputError (exit 3) when the path is
    a folder, a parent is a file, or the folder is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; --out names the file to write")
    make_parent(path)
    return path


def make_parent(out: Path) -> None:
    """Create OUT's parent folder; OutputError naming the reason when impossible."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise OutputError(f"{out}: a parent of --out is a file, not a folder") from exc
    except OSError as exc:
        raise OutputError(f"{out}: cannot create its parent folder ({os_reason(exc)})") from exc
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise OutputError(f"{out}: the folder {out.parent} is not writable")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON next to ``path`` and rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as handle:
        json.dump(obj, handle, indent=2, sort_keys=False, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; best effort, never raises."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
