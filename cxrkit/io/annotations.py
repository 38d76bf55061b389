"""Reading an annotations artifact's ``annotations.parquet`` (ANNOTATIONS_SCHEMA).

The one reader every consumer uses: training (contours, labels), the
reconstruction preview, evaluation (report-derived labels). The schema itself
lives in :mod:`cxrkit.io.schema`; ``cxrkit annotate`` writes the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cxrkit.artifacts import Artifact, open_artifact
from cxrkit.errors import ArtifactError

ANNOTATIONS_FILE = "annotations.parquet"
_SLICE = 65536  # ids converted per step when an index is built


def annotations_file(source: Artifact | str | Path) -> Path:
    """The ``annotations.parquet`` of ``source``.

    Takes an opened annotations Artifact, an annotations artifact directory
    (opened and checked to be of kind ``annotations``), or a ``.parquet`` file itself.
    Raises ArtifactError when the directory is not an annotations artifact or
    does not list the file.
    """
    if isinstance(source, Artifact):
        return source.file(ANNOTATIONS_FILE)
    path = Path(source)
    if path.suffix == ".parquet":
        return path
    return open_artifact(path, kind="annotations").file(ANNOTATIONS_FILE)


def read_annotations(
    source: Artifact | str | Path, columns: Sequence[str] | None = None
) -> pa.Table:
    """``columns`` (all when None) of an annotations file (see :func:`annotations_file`).

    Raises ArtifactError when the file cannot be read or lacks a column.
    """
    path = annotations_file(source)
    try:
        return pq.read_table(path, columns=list(columns) if columns is not None else None)
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(f"{path}: cannot read annotations ({exc})") from exc


class AnnotationIndex:
    """Some columns of an annotations file, looked up by ``image_id``, one row group at a time.

    Memory does not grow with the columns' size: only the ``image_id`` column is
    held (sorted, as fixed-width bytes, plus the row numbers: about ``N x (id
    length + 8)`` bytes, 27 MB for 377k 64-character ids); the wanted columns are
    read per Parquet row group when asked for, and the last row group read is
    kept (as Arrow data) for the next lookup. ``cxrkit annotate`` writes one
    row group per dataset row group, in dataset order, so a loader that reads a
    dataset row group reads the one matching annotations row group.
    Raises ArtifactError when the file cannot be read or lacks a column.
    """

    def __init__(self, source: Artifact | str | Path, columns: Sequence[str]) -> None:
        self.path = annotations_file(source)
        self.names = list(columns)
        ids = read_annotations(self.path, ["image_id"]).column("image_id")
        try:
            parquet = pq.ParquetFile(self.path)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{self.path}: cannot read annotations ({exc})") from exc
        missing = [c for c in self.names if c not in parquet.schema_arrow.names]
        if missing:
            raise ArtifactError(f"{self.path}: annotations lack column(s) {', '.join(missing)}")
        sizes = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
        self._group_start = np.cumsum([0, *sizes], dtype=np.int64)  # (G + 1,)
        # Fixed-width bytes: np.searchsorted finds ids without a dict of Python strings.
        # Converted in slices so the transient Python strings stay small too.
        parts = [
            np.array([v.encode() for v in ids.slice(i, _SLICE).to_pylist()], dtype=bytes)
            for i in range(0, len(ids), _SLICE)
        ]
        values = np.concatenate(parts) if parts else np.zeros(0, dtype="S1")
        self._order = np.argsort(values, kind="stable")  # (N,) row of the i-th smallest id
        self._sorted = values[self._order]
        self._cached: tuple[int, pa.Table] | None = None
        self._file: pq.ParquetFile | None = None  # opened on the first row group read

    def __getstate__(self) -> dict:
        # A DataLoader worker gets the index without the open file or the cached row group.
        return {**self.__dict__, "_cached": None, "_file": None}

    def _positions(self, image_ids: Sequence[str]) -> np.ndarray:
        """File row of each id (-1 where the file has none), (len(image_ids),) int64."""
        if not len(image_ids) or not len(self._sorted):
            return np.full(len(image_ids), -1, dtype=np.int64)
        query = np.array([str(i).encode() for i in image_ids], dtype=bytes)
        slot = np.minimum(np.searchsorted(self._sorted, query), len(self._sorted) - 1)
        found = self._sorted[slot] == query
        return np.where(found, self._order[slot], -1).astype(np.int64)

    def _group(self, group: int) -> pa.Table:
        if self._cached is None or self._cached[0] != group:
            try:
                if self._file is None:  # the footer is parsed once, not per row group
                    self._file = pq.ParquetFile(self.path)
                table = self._file.read_row_group(group, columns=self.names)
            except (OSError, ValueError) as exc:
                raise ArtifactError(f"{self.path}: cannot read annotations ({exc})") from exc
            self._cached = (group, table)
        return self._cached[1]

    def rows(self, image_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """The loaded columns of each id as a dict (None for an image without annotations).

        Reads each row group the ids fall in once, in file order.
        """
        positions = self._positions(image_ids)
        out: list[dict[str, Any] | None] = [None] * len(image_ids)
        groups = np.searchsorted(self._group_start, positions, side="right") - 1
        for group in np.unique(groups[positions >= 0]):
            members = np.flatnonzero((groups == group) & (positions >= 0))
            local = positions[members] - self._group_start[group]
            picked = self._group(int(group)).take(pa.array(local)).to_pydict()
            for k, i in enumerate(members):
                out[int(i)] = {name: picked[name][k] for name in self.names}
        return out

    def row(self, image_id: str) -> dict[str, Any] | None:
        """Every loaded column of ``image_id`` as a dict; None for an image without annotations."""
        return self.rows([image_id])[0]

    def get(self, image_id: str, column: str) -> Any:
        """The value of ``column`` for ``image_id``; None for an image without annotations."""
        row = self.row(image_id)
        return None if row is None else row[column]

    def __contains__(self, image_id: object) -> bool:
        return bool(self._positions([str(image_id)])[0] >= 0)


def labels_matrix(source: Artifact | str | Path) -> tuple[list[str], np.ndarray]:
    """(image ids, (N, 14) float32 CheXpert labels, NaN = not mentioned) of an annotations file."""
    table = read_annotations(source, ["image_id", "labels"])
    ids = table.column("image_id").to_pylist()
    values = np.array(table.column("labels").to_pylist(), dtype=np.float32).reshape(len(ids), -1)
    return ids, values
