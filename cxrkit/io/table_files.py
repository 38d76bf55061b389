"""Reading the CSV tables public datasets ship (plain or gzip), with errors that name the file."""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Iterator
from pathlib import Path

from cxrkit.errors import InputError


class _GzipTable(gzip.GzipFile):
    """A gzip stream whose corrupt deflate data raises ``gzip.BadGzipFile`` (an OSError,
    which every table reader reports naming the file), not ``zlib.error``."""

    def _guard(self, read, *args):
        try:
            return read(*args)
        except zlib.error as exc:
            raise gzip.BadGzipFile(f"corrupt gzip data ({exc})") from exc

    def read(self, size=-1):
        return self._guard(super().read, size)

    def read1(self, size=-1):
        return self._guard(super().read1, size)

    def peek(self, n):
        return self._guard(super().peek, n)

    def readline(self, size=-1):
        return self._guard(super().readline, size)


def open_text(path: Path) -> io.TextIOBase:
    """A table file opened as UTF-8 text (a byte-order mark dropped), inflated when its
    bytes say gzip (the name is not trusted: a renamed ``.csv.gz`` or a plain ``.gz``).
    Corrupt gzip data raises ``gzip.BadGzipFile`` (an OSError) as it is read."""
    with open(path, "rb") as handle:
        magic = handle.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(_GzipTable(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def csv_columns(path: str | Path) -> list[str]:
    """The header row of a CSV or gzipped CSV, names stripped; [] for Parquet or a file
    that cannot be read (missing, not UTF-8, a gzip cut short or corrupt).

    Never raises: for sniffing what a table is; its own reader reports what is wrong.
    """
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        return []
    try:
        with open_text(path) as handle:
            return [c.strip() for c in next(csv.reader(handle), [])]
    except (OSError, UnicodeDecodeError, csv.Error, EOFError):
        return []


def read_rows(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV (plain or gzip) as dicts, header names stripped.

    Takes the file and the columns it must have. Returns one dict per data row (a short
    row's missing cells are None). Raises InputError naming the file: unreadable or not
    UTF-8, a missing column, or a row with more fields than the header (an unquoted comma;
    the message gives its line).
    """
    return list(iter_rows(path, required))


def iter_rows(path: Path, required: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """:func:`read_rows` one row at a time, for tables read to fill a lookup (MIMIC-CXR-JPG's
    377,110 metadata rows held as dicts cost ~550 MiB). Raises as :func:`read_rows`, when
    the row (or the header) is reached."""
    for _, row in read_numbered_rows(path, required):
        yield row


def read_numbered_rows(
    path: Path, required: tuple[str, ...]
) -> Iterator[tuple[int, dict[str, str]]]:
    """:func:`iter_rows` with each row's line number (its last line when a quoted cell
    spans lines), for messages that point at a row. Raises as :func:`read_rows`."""
    try:
        with open_text(path) as handle:
            reader = csv.DictReader(handle)
            header = [h.strip() for h in reader.fieldnames or []]
            missing = [c for c in required if c not in header]
            if missing:
                raise InputError(f"{path}: lacks the column(s) {', '.join(missing)}")
            reader.fieldnames = header
            for row in reader:
                if None in row:
                    raise InputError(
                        f"{path}:{reader.line_num}: more fields than the header has "
                        "(an unquoted comma?)"
                    )
                yield reader.line_num, row
    except (OSError, UnicodeDecodeError, csv.Error, EOFError) as exc:
        raise InputError(f"cannot read dataset table {path}: {exc}") from exc
