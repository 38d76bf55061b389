"""Writing dataset shards: size-bounded Parquet files with size-bounded row groups."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SHARD_MAX_BYTES = 512 * 1024 * 1024  # DESIGN.md §3: shards <= ~512 MB
ROW_GROUP_BYTES = (
    100 * 1024 * 1024
)  # ~100 MB row groups: big enough to stream, small enough to shuffle


def write_table_atomic(table: pa.Table, path: Path, **kwargs) -> None:
    """Write one Parquet file to a temp name and rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd", **kwargs)
    os.replace(tmp, path)


class ShardWriter:
    """Appends record batches to ``shard-NNNNN.parquet`` files in a directory.

    A new row group starts every ``row_group_bytes`` of data, a new shard every
    ``shard_max_bytes``; sizes are estimated from Arrow buffer sizes before
    compression, so files end up somewhat smaller than the bounds.
    """

    def __init__(
        self,
        directory: Path,
        schema: pa.Schema,
        shard_max_bytes: int = SHARD_MAX_BYTES,
        row_group_bytes: int = ROW_GROUP_BYTES,
        prefix: str = "shard",
    ) -> None:
        self.directory = Path(directory)
        self.schema = schema
        self.shard_max_bytes = shard_max_bytes
        self.row_group_bytes = row_group_bytes
        self.prefix = prefix
        self.paths: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._shard_bytes = 0
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0
        self.rows = 0

    def write(self, batches: Iterable[pa.RecordBatch] | pa.Table) -> None:
        """Append rows (a table or record batches conforming to the schema)."""
        if isinstance(batches, pa.Table):
            batches = batches.cast(self.schema).to_batches(max_chunksize=64)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            self._pending.append(batch)
            self._pending_bytes += batch.nbytes
            self.rows += batch.num_rows
            if self._pending_bytes >= self.row_group_bytes:
                self._flush_row_group()

    def _flush_row_group(self) -> None:
        if not self._pending:
            return
        if self._writer is None or self._shard_bytes >= self.shard_max_bytes:
            self._open_next()
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        self._writer.write_table(table, row_group_size=table.num_rows)
        self._shard_bytes += self._pending_bytes
        self._pending, self._pending_bytes = [], 0

    def _open_next(self) -> None:
        if self._writer is not None:
            self._writer.close()
        path = self.directory / f"{self.prefix}-{len(self.paths):05d}.parquet"
        self.paths.append(path)
        self._writer = pq.ParquetWriter(path, self.schema, compression="zstd")
        self._shard_bytes = 0

    def close(self) -> list[Path]:
        """Flush and close; returns the shard paths written (at least one, maybe empty)."""
        self._flush_row_group()
        if self._writer is None:
            self._open_next()  # an empty dataset still has one (empty) shard with the schema
        self._writer.close()
        self._writer = None
        return self.paths
