"""Content digests of weights a config names: a file, or a folder of files.

Runs that start from weights outside cxrkit (an ImageNet-MAE file, a CLIP state
dict, a Hugging Face text model folder) count them in their ids by *content*,
never by path: the same bytes at another path (another node's mount, a copied
checkout) give the same id, new bytes at the same path a different one.

- a file: the sha256 of its bytes;
- a folder: sha256 over ``cxrkit-folder/1`` and the sorted (name, sha256) of the
  regular files directly in it, links followed. Not counted, because no loader reads
  them: subfolders (``onnx/``, ``1_Pooling/``; cxrkit reads a model folder's top-level
  config, weights and tokenizer files), hidden names (``.gitattributes``, ``.cache``)
  and documentation (``*.md``, ``LICENSE*``, ``NOTICE*``), so a new model card does
  not make other weights.

File digests come from :mod:`cxrkit.hashcache` (unchanged files are not read
again across commands) and are also remembered for the life of the process, keyed
by the file's (device, inode, size, mtime, ctime), so one command never hashes the
same multi-GB file twice, even where the cache is off or the file was just written.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from cxrkit import hashcache
from cxrkit.errors import InputError

FOLDER_FORMAT = "cxrkit-folder/1"
_memo: dict[tuple[int, int, int, int, int], str] = {}
_memo_lock = threading.Lock()


@dataclass(frozen=True)
class Content:
    """What a weights path holds: its digest, and for a folder its counted files."""

    sha256: str
    folder: bool
    files: tuple[str, ...] = ()  # a folder's counted file names, sorted
    bytes: int = 0

    def describe(self) -> dict:
        """The fields a manifest's input entry adds for this content."""
        if not self.folder:
            return {"bytes": self.bytes}
        return {"folder": True, "files": list(self.files), "bytes": self.bytes}


def file_sha256(path: Path) -> str:
    """sha256 of one file, at most once per process while its stat is unchanged.

    Raises OSError when it cannot be read.
    """
    before = os.stat(path)
    key = (before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns, before.st_ctime_ns)
    with _memo_lock:
        known = _memo.get(key)
    if known is not None:
        return known
    digest = hashcache.sha256_file(path)
    with _memo_lock:
        _memo[key] = digest
    return digest


def content_digest(path: str | os.PathLike[str], setting: str = "weights") -> Content:
    """The :class:`Content` of a weights file or folder (module doc).

    Takes the path and the setting that names it (for messages). Raises InputError
    naming the path and the setting for one that is missing, unreadable, neither a
    file nor a folder, or a folder without a top-level file.
    """
    path = Path(os.path.expanduser(str(path)))
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISREG(mode):
            return Content(file_sha256(path), folder=False, bytes=os.stat(path).st_size)
        if not stat.S_ISDIR(mode):
            raise InputError(f"{path}: {setting} is neither a file nor a folder")
        return _folder_content(path, setting)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file or folder ({setting})") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read {setting} ({exc.strerror or exc})") from exc


def counted(name: str) -> bool:
    """Whether a top-level file of a weights folder counts in its digest (module doc)."""
    upper = name.upper()
    return not (
        name.startswith(".") or upper.endswith(".MD") or upper.startswith(("LICENSE", "NOTICE"))
    )


def _folder_content(folder: Path, setting: str) -> Content:
    entries: list[tuple[str, str]] = []
    total = 0
    for child in sorted(folder.iterdir(), key=lambda p: p.name):
        if not counted(child.name):
            continue
        try:
            child_stat = os.stat(child)  # follows links (a Hub cache's snapshot folders)
        except FileNotFoundError:
            continue  # a broken link: nothing a loader could read
        if not stat.S_ISREG(child_stat.st_mode):
            continue
        entries.append((child.name, file_sha256(child)))
        total += child_stat.st_size
    if not entries:
        raise InputError(f"{folder}: {setting} is a folder with no files in it")
    payload = json.dumps([FOLDER_FORMAT, entries], separators=(",", ":"))
    digest = hashlib.sha256(payload.encode("utf-8", "surrogateescape")).hexdigest()
    return Content(digest, folder=True, files=tuple(n for n, _ in entries), bytes=total)
