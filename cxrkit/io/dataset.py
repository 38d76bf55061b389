"""Dataset artifacts on disk: listing their shards, and writing them from row tables.

A dataset artifact holds ``shard-NNNNN.parquet`` files (DATASET_SCHEMA) and one
``rejects.parquet`` (REJECTS_SCHEMA). :func:`dataset_shards` is the one rule every
reader uses to find the shards; :func:`decode_pixels`, :func:`unpack_bits` and
:func:`report_text` read a row's columns. Ingest builds rows in resumable chunks
(:func:`write_chunk`, :func:`chunks_done`) and :func:`combine_chunks` /
:func:`write_dataset` turn them into shards, dropping duplicate sources.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cxrkit.artifacts import Artifact
from cxrkit.errors import ArtifactError
from cxrkit.io.parquet import ROW_GROUP_BYTES, SHARD_MAX_BYTES, ShardWriter, write_table_atomic
from cxrkit.io.schema import DATASET_SCHEMA, REJECTS_SCHEMA
from cxrkit.vision.masks import unpack_mask

SHARD_PREFIX = "shard-"
REJECTS_FILE = "rejects.parquet"
_COUNTED = ("view", "split", "sex", "report_source", "source_format")


def dataset_shards(dataset: Artifact, *, allow_empty: bool = False) -> list[Path]:
    """The data shards (``shard-*.parquet``) of a dataset artifact, in manifest order.

    Takes the artifact; ``allow_empty`` accepts a dataset without rows (every input
    rejected). Raises ArtifactError when it lists no shard and ``allow_empty`` is False.
    """
    shards = [p for p in dataset.files(".parquet") if p.name.startswith(SHARD_PREFIX)]
    if not shards and not allow_empty:
        raise ArtifactError(f"{dataset.path}: dataset artifact lists no Parquet shards")
    return shards


# ---------------------------------------------------------------- resumable chunks


def _chunk_path(scratch: Path, index: int) -> Path:
    return scratch / f"chunk-{index:05d}.parquet"


def chunks_done(scratch: Path, count: int) -> list[bool]:
    """For chunks 0..count-1: whether its rows file exists (the chunk is complete)."""
    return [_chunk_path(scratch, i).exists() for i in range(count)]


def write_chunk(scratch: Path, index: int, results: list[dict]) -> None:
    """Write one chunk of ``{"row": ...}`` / ``{"reject": ...}`` results into ``scratch``."""
    rows = [r["row"] for r in results if "row" in r]
    rejects = [r["reject"] for r in results if "reject" in r]
    write_table_atomic(
        pa.Table.from_pylist(rejects, schema=REJECTS_SCHEMA),
        scratch / f"chunk-{index:05d}.rejects.parquet",
    )
    # The rows file is written last: its presence marks the chunk as done.
    write_table_atomic(
        pa.Table.from_pylist(rows, schema=DATASET_SCHEMA), _chunk_path(scratch, index)
    )


def combine_chunks(
    scratch: Path,
    directory: Path,
    shard_max_bytes: int = SHARD_MAX_BYTES,
    row_group_bytes: int = ROW_GROUP_BYTES,
    n_inputs: int | None = None,
) -> dict:
    """Merge the chunk files in ``scratch`` into shards in ``directory``. Returns stats."""
    chunk_files = sorted(scratch.glob("chunk-*[0-9].parquet"))
    reject_tables = [pq.read_table(p) for p in sorted(scratch.glob("chunk-*.rejects.parquet"))]
    tables = (pq.read_table(p, schema=DATASET_SCHEMA) for p in chunk_files)
    return write_dataset(
        tables, reject_tables, directory, shard_max_bytes, row_group_bytes, n_inputs
    )


# ---------------------------------------------------------------- shards + rejects


class _Duplicates:
    """The first occurrence (in input order) of a source hash, image id or stored
    pixel hash is kept; later ones become ``duplicate`` rejects."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.rejects: list[dict] = []

    def keep(self, table: pa.Table) -> pa.Table:
        """The rows of ``table`` not seen before; records the others as rejects."""
        keep = []
        columns = [
            table.column(c).to_pylist() for c in ("source_sha256", "image_id", "source_path")
        ]
        pixels = table.column("pixels")
        for i, (sha, image_id, path) in enumerate(zip(*columns, strict=True)):
            # Same file bytes, same DICOM instance, or the same stored pixels (one image
            # saved in two lossless encodings) count as one image.
            pixel_key = "px:" + hashlib.sha256(pixels[i].as_py()).hexdigest()
            keys = ("src:" + sha, "id:" + image_id, pixel_key)
            if any(k in self.seen for k in keys):
                self.rejects.append(
                    {
                        "path": path,
                        "reason": "duplicate",
                        "detail": "same source bytes, image id or stored pixels as an earlier input",
                    }
                )
                continue
            self.seen.update(keys)
            keep.append(i)
        return table.take(pa.array(keep, type=pa.int64()))


def write_dataset(
    tables: Iterable[pa.Table],
    reject_tables: list[pa.Table],
    directory: Path,
    shard_max_bytes: int = SHARD_MAX_BYTES,
    row_group_bytes: int = ROW_GROUP_BYTES,
    n_inputs: int | None = None,
) -> dict:
    """Write row tables as shards plus rejects.parquet; drop duplicate sources. Returns stats.

    Shared by ingest and ingest-merge so both apply the same duplicate rule
    (see :class:`_Duplicates`). Raises RuntimeError when rows + rejects do not
    add up to ``n_inputs`` (when given).
    """
    duplicates = _Duplicates()
    counts: dict[str, Counter] = {k: Counter() for k in _COUNTED}
    patients: set[str] = set()
    writer = ShardWriter(directory, DATASET_SCHEMA, shard_max_bytes, row_group_bytes)
    for table in tables:
        table = duplicates.keep(table)
        for key, counter in counts.items():
            counter.update(v if v is not None else "unknown" for v in table.column(key).to_pylist())
        patients.update(table.column("patient_id").to_pylist())
        writer.write(table)
    writer.close()
    rejects = pa.concat_tables(
        [t.cast(REJECTS_SCHEMA) for t in reject_tables]
        + [pa.Table.from_pylist(duplicates.rejects, schema=REJECTS_SCHEMA)]
    )
    write_table_atomic(rejects, directory / REJECTS_FILE)
    by_reason = Counter(rejects.column("reason").to_pylist())
    stats = {
        "rows": writer.rows,
        "rejects": rejects.num_rows,
        "patients": len(patients),
        "shards": len(writer.paths),
        "rejects_by_reason": dict(sorted(by_reason.items())),
    }
    stats.update({f"{key}_counts": dict(sorted(c.items())) for key, c in counts.items()})
    if n_inputs is not None and writer.rows + rejects.num_rows != n_inputs:
        raise RuntimeError(
            f"accounting error: {writer.rows} rows + {rejects.num_rows} rejects "
            f"!= {n_inputs} inputs"
        )
    return stats


# ---------------------------------------------------------------- reading rows


def decode_pixels(data: bytes, dtype: str, height: int, width: int) -> np.ndarray:
    """Raw row-major pixel bytes -> writable array (height, width). Raises ArtifactError."""
    if dtype not in ("uint8", "uint16"):
        raise ArtifactError(f"pixel dtype {dtype!r} is not uint8/uint16")
    array = np.frombuffer(data, dtype=np.dtype(dtype))
    if array.size != height * width:
        raise ArtifactError(f"pixels hold {array.size} values, expected {height}x{width}")
    return array.reshape(height, width).copy()  # copy: torch wants writable memory


def unpack_bits(data: bytes, height: int, width: int) -> np.ndarray:
    """np.packbits bytes of a row-major bool mask -> bool array (height, width)."""
    return np.asarray(unpack_mask(data, height, width), dtype=bool)


def report_text(row: dict, section: str = "both") -> str:
    """Findings + impression (or one section), else the whole report, else "".

    The text the loader's ``text`` field delivers (:func:`cxrkit.io.fields.compose_text`).
    """
    from cxrkit.io.fields import compose_text

    return compose_text(row, section)[0]
