"""Path-free reject details: the one scrubber for every reader error that is stored.

Reject details land in ``rejects.parquet``, which is part of a published artifact.
Decoders quote the file they failed on (Pillow with ``repr``; others as given, and
a plugin may quote it resolved, past a symlink), and folder names often carry patient names or record numbers
(``/data/SMITH_JOHN_MRN123/0001.dcm``). :func:`scrub_detail` removes them all
before a detail is stored; image ingest, ECG ingest and the readers use it.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

# The longest detail stored: a reason a person can read, not a traceback.
MAX_DETAIL_CHARS = 200
# Bare names shorter than this are left alone: "1" or "ab" identify no one, and
# scrubbing them would mangle numbers in the message ("expected 1 frame").
MIN_NAME_CHARS = 3
# Around a name, a letter, digit, _ or - would make it part of another name; a dot does
# not ("0001" in "0001.hea" is this record's name all the same).
_BEFORE = r"(?<![\w\-])"
_AFTER = r"(?![\w\-])"


def _forms(path: Path) -> list[Path]:
    """The path as given, absolute, and resolved (a symlink's target, with its folder)."""
    forms = [path, path.absolute()]
    with contextlib.suppress(OSError, RuntimeError):  # a symlink loop: the others still apply
        forms.append(path.resolve())
    return forms


def printable_path(path: str) -> str:
    """A path (or any text from the file system) as valid UTF-8 text: bytes that are not
    UTF-8 (a name from another locale) are shown as ``\\xNN`` escapes instead of failing
    a Parquet or CSV writer."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _spellings(text: str) -> set[str]:
    """``text`` as a message may quote it: plain, inside ``repr`` (escaped backslashes,
    ``\\udcff`` for undecodable bytes) and with undecodable bytes as ``\\xff``."""
    return {text, repr(text)[1:-1], printable_path(text)}


def _targets(path: Path) -> dict[str, str]:
    """Text to remove -> its tag, longest text first so a path goes before its folder."""
    files: set[str] = set()
    folders: set[str] = set()
    names: set[str] = set()
    folder_names: set[str] = set()
    for form in _forms(path):
        files.add(str(form))
        folders.add(str(form.parent))
        if form.is_absolute():  # every absolute ancestor: /data/SMITH_JOHN_MRN123 too
            folders.update(str(parent) for parent in form.parents)
        names.update((form.name, form.stem))
        folder_names.add(form.parent.name)
    folders -= {"", ".", "/"} | files
    names = {n for n in names if len(n) >= MIN_NAME_CHARS}
    folder_names = {n for n in folder_names if len(n) >= MIN_NAME_CHARS} - names
    tags: dict[str, str] = {}
    # Folders first, so that a text that is also a file's (x/x.png) ends up as <file>.
    for texts, tag in ((folder_names, "<dir>"), (folders, "<dir>"), (names, "<file>")):
        tags.update((spelling, tag) for text in texts for spelling in _spellings(text))
    tags.update((spelling, "<file>") for text in files for spelling in _spellings(text))
    return dict(sorted(tags.items(), key=lambda item: (-len(item[0]), item[0])))


def scrub_detail(detail: str, path: str | Path) -> str:
    """A reader's error message made safe to store in a published artifact.

    Takes the message and the file it is about. Removes the file's path, its folder and
    every absolute ancestor folder (``<dir>``), and its name and stem (``<file>``), each
    as given, absolute and resolved (a symlink's target), plain or as ``repr`` quotes
    it; the file's name, stem and folder name go only where they stand as whole words.
    Then writes undecodable bytes as ``\\xNN``, collapses whitespace and cuts to
    :data:`MAX_DETAIL_CHARS` (after scrubbing, so no cut leaves a path fragment behind).
    Returns the scrubbed message; never raises.
    """
    targets = _targets(Path(path))
    if targets:  # one pass, longest first: a tag put in is never scanned again
        alternatives = "|".join(re.escape(text) for text in targets)
        pattern = re.compile(rf"{_BEFORE}(?:{alternatives}){_AFTER}")
        detail = pattern.sub(lambda match: targets[match.group(0)], detail)
    detail = printable_path(detail)
    return " ".join(detail.split())[:MAX_DETAIL_CHARS]


def exception_detail(exc: BaseException, path: str | Path) -> str:
    """``"ExceptionType: message"`` for an unforeseen reader failure, scrubbed by
    :func:`scrub_detail`."""
    return scrub_detail(f"{type(exc).__name__}: {exc}", path)
