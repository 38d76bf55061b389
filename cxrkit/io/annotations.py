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
    """Some columns of an annotations file, looked up by ``image_id``."""

    def __init__(self, source: Artifact | str | Path, columns: Sequence[str]) -> None:
        table = read_annotations(source, ["image_id", *columns])
        self.columns = {name: table.column(name).to_pylist() for name in columns}
        self.index = {
            image_id: i for i, image_id in enumerate(table.column("image_id").to_pylist())
        }

    def get(self, image_id: str, column: str) -> Any:
        """The value of ``column`` for ``image_id``; None for an image without annotations."""
        row = self.index.get(image_id)
        return None if row is None else self.columns[column][row]

    def row(self, image_id: str) -> dict[str, Any] | None:
        """Every loaded column of ``image_id`` as a dict; None for an image without annotations."""
        index = self.index.get(image_id)
        return None if index is None else {c: v[index] for c, v in self.columns.items()}

    def __contains__(self, image_id: object) -> bool:
        return image_id in self.index


def labels_matrix(source: Artifact | str | Path) -> tuple[list[str], np.ndarray]:
    """(image ids, (N, 14) float32 CheXpert labels, NaN = not mentioned) of an annotations file."""
    table = read_annotations(source, ["image_id", "labels"])
    ids = table.column("image_id").to_pylist()
    values = np.array(table.column("labels").to_pylist(), dtype=np.float32).reshape(len(ids), -1)
    return ids, values
