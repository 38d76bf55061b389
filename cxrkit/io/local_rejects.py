"""The local rejects listing: which of the user's files were rejected, with real paths.

``rejects.parquet`` inside a dataset artifact holds salted path tokens only (paths
often carry names or record numbers). Ingest also writes ``OUT.rejects-local.csv``
beside, never inside, the artifact, mode 0600, so the user can find the files:
``path, reason, detail, token`` (``token`` = the value in ``rejects.parquet``).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq

from cxrkit.artifacts import Artifact
from cxrkit.io.dataset import REJECTS_FILE
from cxrkit.io.deid import Pseudonymizer
from cxrkit.io.path_scrub import printable_path

if TYPE_CHECKING:  # cxrkit.io.rows imports the image decoders (pydicom): not for a no-op
    from cxrkit.io.rows import WorkItem

LOCAL_REJECTS_SUFFIX = ".rejects-local.csv"


def local_rejects_path(out: str | Path) -> Path:
    """Where ingest lists the rejected files with their real paths: ``OUT.rejects-local.csv``
    beside (never inside) the artifact, so the artifact itself stays path-free."""
    out = Path(out)
    return out.with_name(out.name + LOCAL_REJECTS_SUFFIX)


def write_local_rejects(
    artifact: Artifact, work: list[WorkItem] | None, salt: bytes | None, known: dict | None = None
) -> Path | None:
    """Write the local rejects listing: ``path, reason, detail, token`` with real paths.

    ``rejects.parquet`` holds salted path tokens; this maps them back through the work
    list (``token`` is the value in ``rejects.parquet``, to cross-reference). ``known``
    adds token -> path pairs from elsewhere (the parts of a merge). The file is created
    mode 0600 beside the artifact and is never part of it. Returns its path, or None
    when nothing was rejected (a stale listing is removed).
    """
    target = local_rejects_path(artifact.path)
    rejects = pq.read_table(artifact.file(REJECTS_FILE)).to_pylist()
    if not rejects:
        target.unlink(missing_ok=True)
        return None
    real = dict(known or {})
    if work is not None and salt is not None:
        pseudo = Pseudonymizer(salt)
        real.update({pseudo.path_token(path): path for path, _ in work})
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["path", "reason", "detail", "token"])
        for row in rejects:
            shown = printable_path(real.get(row["path"], row["path"]))  # \xNN: not UTF-8
            out.writerow([shown, row["reason"], row["detail"], row["path"]])
    os.chmod(tmp, 0o600)
    os.replace(tmp, target)
    return target


def known_paths(parts: list[Artifact]) -> dict[str, str]:
    """token -> real path from the local rejects listings of merged parts (where present)."""
    known: dict[str, str] = {}
    for part in parts:
        listing = local_rejects_path(part.path)
        if listing.is_file():
            with listing.open(newline="", encoding="utf-8") as handle:
                known.update(
                    {r["token"]: r["path"] for r in csv.DictReader(handle) if r.get("token")}
                )
    return known
