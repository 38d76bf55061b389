"""Streaming loader over a dataset artifact's Parquet row groups.

Order of one epoch, the same on every rank and worker (it depends only on the
seed, the epoch and the artifact):

1. row groups are permuted, and the rows inside each row group too;
2. the sequence is cut into ``world_size`` equal contiguous slices (the tail
   that does not divide is dropped, so every rank steps the same number of
   times); rank ``r`` reads slice ``r``, i.e. about ``1/world_size`` of the
   row groups;
3. each rank mixes its slice through a shuffle buffer of ``shuffle_buffer``
   samples (simulated on sample indices, so no worker has to decode a sample
   it does not own);
4. the rank's stream, epoch after epoch, is cut into batches; DataLoader
   worker ``w`` of ``W`` builds batches ``w, w + W, ...`` and the DataLoader
   hands them back in order, so the batch sequence does not depend on the
   number of workers.

Resume is exact: the state is the number of samples a rank has consumed; the
loader restarts at that batch, and every random choice (order, augmentation)
is a function of (seed, epoch, sample), never of a worker's history.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from cxrkit.artifacts import Artifact, open_artifact
from cxrkit.errors import ArtifactError, ConfigError, InputError
from cxrkit.io.annotations import AnnotationIndex, annotations_file
from cxrkit.io.dataset import decode_pixels, unpack_bits
from cxrkit.io.fields import (
    FIELDS,
    TEXT_SECTIONS,
    SampleContext,
    SampleTransform,
    load_prompts_file,
    resolve_fields,
)

log = logging.getLogger(__name__)

SLICE_BYTES = 8 << 20  # a row group is read in slices of about this many stored bytes
READ_BUFFER_BYTES = 1 << 20  # Parquet read buffer (streams a column chunk page by page)

# (image uint8/uint16 (H, W), contour bool (H, W) | None, generator) -> (image, contour)
Transform = Callable[
    [torch.Tensor, torch.Tensor | None, torch.Generator], tuple[torch.Tensor, torch.Tensor | None]
]


class ShardDataset(IterableDataset):
    """Batches of decoded, transformed images (plus what the objective ``needs``).

    Takes the shard paths of a dataset artifact, the split to read, the
    ``needs`` of the objective (batch field names, see :mod:`cxrkit.io.fields`;
    ``image`` and ``image_id`` always come), a ``transform`` with the
    ``cxrkit.vision.transforms`` call signature, the per-rank batch size, the
    seed, the shuffle buffer size, this process's rank and the world size,
    the report section delivered as ``text`` and an optional per-sample
    ``sample_transform`` (run in the workers). With ``loop=False`` it makes one
    pass (keeping the last partial batch) instead of cycling epochs. Raises
    ConfigError for an unknown field, InputError when the split is empty, holds
    fewer samples than ranks, or a field needs annotations that were not given.
    """

    def __init__(
        self,
        shards: list[Path],
        *,
        transform: Transform,
        batch_size: int,
        needs: frozenset[str] | set[str] = frozenset({"image"}),
        split: str | None = "train",
        views: frozenset[str] | None = None,
        annotations: Artifact | Path | None = None,
        seed: int = 0,
        shuffle: bool = True,
        shuffle_buffer: int = 1024,
        rank: int = 0,
        world_size: int = 1,
        loop: bool = True,
        text_section: str = "both",
        sample_transform: SampleTransform | None = None,
    ) -> None:
        super().__init__()
        self.shards = [Path(p) for p in shards]
        self.transform, self.batch_size, self.split = transform, int(batch_size), split
        self.views = frozenset(v.upper() for v in views) if views else None
        fields = resolve_fields(needs)
        self.needs = frozenset(f.name for f in fields)
        # Names only: the Field objects hold closures, the dataset must pickle for workers.
        self.sample_fields = [f.name for f in fields if f.kind == "sample"]
        self.dataset_field_names = [f.name for f in fields if f.kind == "dataset"]
        if text_section not in TEXT_SECTIONS:
            raise ConfigError(f"text section {text_section!r} is not one of {TEXT_SECTIONS}")
        self.text_section, self.sample_transform = text_section, sample_transform
        self.seed, self.shuffle, self.loop = int(seed), shuffle, loop
        self.shuffle_buffer = max(1, int(shuffle_buffer))
        self.rank, self.world_size = int(rank), int(world_size)
        self.start_batch = 0
        self._build_index()
        self.annotations = None
        self.annotations_file = annotations_file(annotations) if annotations is not None else None
        needing = [f.name for f in fields if f.requires_annotations]
        if annotations is None and needing:
            raise InputError(
                f"the objective needs {', '.join(needing)} from an annotations artifact but "
                "none was given; run `cxrkit annotate` and pass --annotations DIR"
            )
        wanted = sorted({c for f in fields if f.kind == "sample" for c in f.annotation_columns})
        if annotations is not None and wanted:
            self.annotations = AnnotationIndex(annotations, wanted)
        self._columns = sorted(
            {c for f in fields for c in f.columns}
            | {c for f in fields if self.annotations is None for c in f.columns_without_annotations}
        )
        self._files: dict[int, pq.ParquetFile] = {}

    def dataset_fields(self) -> dict[str, Any]:
        """The per-dataset fields the objective needs (e.g. ``prompts``), read once."""
        values: dict[str, Any] = {}
        if "prompts" in self.dataset_field_names and self.annotations_file is not None:
            values["prompts"] = load_prompts_file(self.annotations_file)
        return values

    # ------------------------------------------------------------ index and order
    def _build_index(self) -> None:
        rg_file, rg_group, rows, starts = [], [], [], [0]
        for file_index, path in enumerate(self.shards):
            try:
                parquet = pq.ParquetFile(path)
            except (OSError, ValueError) as exc:
                raise ArtifactError(f"{path}: cannot read Parquet shard ({exc})") from exc
            for group in range(parquet.num_row_groups):
                keep = self._rows_kept(parquet, group)
                if len(keep) == 0:
                    continue
                rg_file.append(file_index)
                rg_group.append(group)
                rows.append(keep.astype(np.int64))
                starts.append(starts[-1] + len(keep))
        self.rg_file = np.asarray(rg_file, dtype=np.int64)
        self.rg_group = np.asarray(rg_group, dtype=np.int64)
        self.rg_start = np.asarray(starts, dtype=np.int64)
        self.sample_row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        # (N,) row-group slot of each sample
        self.sample_rg = np.repeat(np.arange(len(rg_file)), np.diff(self.rg_start))
        total = len(self.sample_row)
        if self.loop:  # equal slices, tail dropped: every rank steps the same number of times
            share = total // self.world_size
            self._slice = (self.rank * share, (self.rank + 1) * share)
        else:  # one pass over everything: slices may differ by one sample
            self._slice = (
                self.rank * total // self.world_size,
                (self.rank + 1) * total // self.world_size,
            )
        self.samples_per_rank = self._slice[1] - self._slice[0]
        if total == 0:
            views = f" with views {', '.join(sorted(self.views))}" if self.views else ""
            raise InputError(f"{self.shards[0].parent}: no images in split {self.split!r}{views}")
        if self.samples_per_rank == 0:
            raise InputError(
                f"{self.shards[0].parent}: split {self.split!r} has {total} images, "
                f"fewer than the {self.world_size} processes"
            )

    def _rows_kept(self, parquet: pq.ParquetFile, group: int) -> np.ndarray:
        """Row indices of one row group in the split and (when filtered) the views."""
        mask = np.ones(parquet.metadata.row_group(group).num_rows, dtype=bool)
        columns = [c for c, on in (("split", self.split), ("view", self.views)) if on]
        if columns:
            table = parquet.read_row_group(group, columns=columns)
            if self.split is not None:
                mask &= np.asarray(table.column("split").to_pylist(), dtype=object) == self.split
            if self.views is not None:
                views = table.column("view").to_pylist()
                mask &= np.fromiter(
                    ((v or "UNKNOWN") in self.views for v in views), bool, len(views)
                )
        return np.flatnonzero(mask)

    @property
    def num_samples(self) -> int:
        """Samples in the split (all ranks)."""
        return len(self.sample_row)

    def epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(read order, output order) of this rank's samples in ``epoch``, as sample ids (n,)."""
        count = len(self.rg_file)
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch])
            groups = rng.permutation(count)
            order = np.concatenate(
                [
                    self.rg_start[g] + rng.permutation(self.rg_start[g + 1] - self.rg_start[g])
                    for g in groups
                ]
            )
        else:
            order = np.arange(self.num_samples)
        read = order[self._slice[0] : self._slice[1]]
        if not self.shuffle or self.shuffle_buffer <= 1:
            return read, read
        return read, _buffer_shuffle(
            read, self.shuffle_buffer, np.random.default_rng([self.seed, epoch, self.rank, 1])
        )

    # ------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        n, size = self.samples_per_rank, self.batch_size
        batch = self.start_batch + worker
        stream: _EpochStream | None = None
        while True:
            first = batch * size
            if not self.loop and first >= n:
                return
            last = first + size if self.loop else min(first + size, n)
            samples = []
            for position in range(first, last):
                epoch, offset = divmod(position, n)
                if stream is None or stream.epoch != epoch:
                    stream = _EpochStream(
                        self, epoch, self._worker_positions(epoch, worker, workers)
                    )
                samples.append(stream.take(offset))
            yield collate(samples, self.sample_fields, self.sample_transform)
            batch += workers

    def _worker_positions(self, epoch: int, worker: int, workers: int) -> np.ndarray:
        n = self.samples_per_rank
        batch = (epoch * n + np.arange(n)) // self.batch_size
        mine = (batch >= self.start_batch) & ((batch - self.start_batch) % workers == worker)
        return np.flatnonzero(mine)

    def _parquet(self, file_index: int) -> pq.ParquetFile:
        if file_index not in self._files:
            # Unbuffered whole-chunk reads would hold a row group's compressed pixel column
            # next to the decoded one; a small read buffer streams it page by page instead.
            self._files[file_index] = pq.ParquetFile(
                self.shards[file_index], pre_buffer=False, buffer_size=READ_BUFFER_BYTES
            )
        return self._files[file_index]

    def read_rows(self, sample_ids: list[int]) -> dict[int, _Row]:
        """The stored rows of samples that all sit in one row group, not yet decoded.

        The row group is read in slices of about ``SLICE_BYTES`` (only these
        samples' rows are kept from each slice); pixels stay Arrow memory until
        the sample is made (:meth:`make_sample`), so a worker holds at most the
        row group's stored pixels of the samples it owns, never their decoded or
        transformed copies.
        """
        slot = int(self.sample_rg[sample_ids[0]])
        parquet = self._parquet(int(self.rg_file[slot]))
        group = int(self.rg_group[slot])
        base = ["image_id", "pixels", "dtype", "height", "width"]
        columns = base + [c for c in self._columns if c not in base]
        ids = np.asarray(sample_ids, dtype=np.int64)
        local = self.sample_row[ids]  # row inside the row group
        order = np.argsort(local, kind="stable")
        ids, local = ids[order], local[order]
        meta = parquet.metadata.row_group(group)
        step = max(1, SLICE_BYTES // max(1, meta.total_byte_size // max(1, meta.num_rows)))
        rows: dict[int, _Row] = {}
        start = taken = 0
        for batch in parquet.iter_batches(
            batch_size=step, row_groups=[group], columns=columns, use_threads=False
        ):
            end = start + batch.num_rows
            stop = int(np.searchsorted(local, end))
            if stop > taken:
                picks = local[taken:stop] - start
                if len(picks) < batch.num_rows:  # keep only the rows asked for (a copy)
                    batch = batch.take(pa.array(picks))
                    picks = np.arange(len(picks))
                # Pixels stay in Arrow memory (views); the small columns become Python values.
                pixels = batch.column("pixels")
                small = batch.drop_columns(["pixels"]).to_pydict()
                for sid, index in zip(ids[taken:stop].tolist(), picks.tolist(), strict=True):
                    row = {name: values[index] for name, values in small.items()}
                    rows[sid] = _Row(row, pixels[index].as_buffer())
                taken = stop
            start = end
        if taken != len(ids):
            raise ArtifactError(
                f"{self.shards[int(self.rg_file[slot])]}: row group {group} holds fewer rows "
                "than its metadata says"
            )
        if self.annotations is not None:
            # The join with the annotations, one row group at a time (never the whole file).
            found = list(rows.values())
            notes = self.annotations.rows([r.row["image_id"] for r in found])
            for entry, note in zip(found, notes, strict=True):
                entry.note = note
        return rows

    def make_sample(self, epoch: int, sample_id: int, entry: _Row) -> dict[str, Any]:
        """Decode and transform one row read by :meth:`read_rows`."""
        row = {**entry.row, "pixels": entry.pixels}
        return self._make_sample(epoch, sample_id, row, entry.note)

    def _make_sample(
        self, epoch: int, sample_id: int, row: dict, notes: dict[str, Any] | None
    ) -> dict[str, Any]:
        height, width = int(row["height"]), int(row["width"])
        image = decode_pixels(row["pixels"], row["dtype"], height, width)
        contour = None
        if "contour" in self.needs:
            packed = notes.get("contour_mask") if notes is not None else None
            contour = torch.from_numpy(_contour(packed, height, width))
        seed = sample_seed(self.seed, epoch, sample_id)
        generator = torch.Generator().manual_seed(seed)
        image_t, contour_t = self.transform(torch.from_numpy(image), contour, generator)
        context = SampleContext(row, notes, image_t, contour_t, self.text_section, {})
        sample = {name: FIELDS[name].provide(context) for name in self.sample_fields}
        if self.sample_transform is not None:
            # Its own seed stream, so adding a transform never shifts the image augmentation.
            sample.update(self.sample_transform({**sample, "seed": _mix64(seed ^ 0x5A17) >> 1}))
        return sample


def _contour(packed: bytes | None, height: int, width: int) -> np.ndarray:
    if not packed:
        # No usable contour: treat the whole image as chest (contour masking falls back to random).
        return np.ones((height, width), dtype=bool)
    return unpack_bits(packed, height, width)


class _Row:
    """One sample's stored row between reading and decoding: small columns as Python
    values, pixels as an Arrow view (or bytes once detached), its annotations (or None)."""

    __slots__ = ("row", "pixels", "note")

    def __init__(self, row: dict[str, Any], pixels: Any, note: dict | None = None) -> None:
        self.row, self.pixels, self.note = row, pixels, note

    def detach(self) -> None:
        """Copy the pixels out of the Arrow data they were read into (so it can be freed)."""
        if not isinstance(self.pixels, bytes):
            self.pixels = self.pixels.to_pybytes()


class _EpochStream:
    """Yields one worker's samples of one epoch in output order, reading row groups lazily.

    Rows read but not yet handed out wait undecoded; each sample is decoded and
    transformed when it is taken. When the next row group is read, the rows still
    waiting from earlier ones (at most about a shuffle buffer of them) get their
    own copy of their pixels, so an old row group's Arrow data is freed instead
    of living on for a few buffered samples.
    """

    def __init__(self, dataset: ShardDataset, epoch: int, positions: np.ndarray) -> None:
        self.dataset, self.epoch = dataset, epoch
        self.read, output = dataset.epoch_order(epoch)
        self.wanted = {int(s) for s in output[positions]}
        self.output = output
        self.cursor = 0  # next index into self.read
        self.pending: dict[int, _Row] = {}
        self.fresh: list[int] = []  # sample ids of the last row group read

    def take(self, offset: int) -> dict[str, Any]:
        sample_id = int(self.output[offset])
        while sample_id not in self.pending:
            if self.cursor >= len(self.read):
                raise RuntimeError(f"sample {sample_id} not in this worker's read order")
            self._read_next_group()
        return self.dataset.make_sample(self.epoch, sample_id, self.pending.pop(sample_id))

    def _read_next_group(self) -> None:
        slots = self.dataset.sample_rg
        start = self.cursor
        slot = slots[self.read[start]]
        end = start + 1
        while end < len(self.read) and slots[self.read[end]] == slot:
            end += 1
        self.cursor = end
        needed = [int(s) for s in self.read[start:end] if int(s) in self.wanted]
        if needed:
            for sample_id in self.fresh:
                if sample_id in self.pending:
                    self.pending[sample_id].detach()
            self.fresh = needed
            self.pending.update(self.dataset.read_rows(needed))


def _buffer_shuffle(items: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """The order a streaming shuffle buffer of ``size`` emits ``items`` in."""
    buffer = list(items[:size])
    picks = rng.integers(0, np.iinfo(np.int64).max, size=len(items))
    out = np.empty(len(items), dtype=items.dtype)
    for i, item in enumerate(items[size:]):
        k = int(picks[i] % len(buffer))
        out[i] = buffer[k]
        buffer[k] = item
    tail = len(items) - len(buffer)
    out[tail:] = np.asarray(buffer, dtype=items.dtype)[rng.permutation(len(buffer))]
    return out


_MASK64 = (1 << 64) - 1


def _mix64(value: int) -> int:
    # splitmix64 finaliser: a cheap, well-spread 64-bit hash of an integer.
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def sample_seed(seed: int, epoch: int, sample_id: int) -> int:
    """Augmentation seed of one sample in one epoch (independent of rank and worker)."""
    return _mix64(_mix64(_mix64(seed & _MASK64) ^ epoch) ^ sample_id) >> 1


def collate(
    samples: list[dict[str, Any]],
    fields: list[str] | frozenset[str],
    sample_transform: SampleTransform | None = None,
) -> dict[str, Any]:
    """Stack samples into a batch: each field by its own rule, then the transform's outputs.

    Takes the samples, the per-sample field names (:mod:`cxrkit.io.fields`) and
    the sample transform that added the other keys (None: no other keys).
    """
    names = [n for n in fields if FIELDS[n].kind == "sample"]
    batch: dict[str, Any] = {n: FIELDS[n].collate([s[n] for s in samples]) for n in names}
    if sample_transform is not None:
        for key in samples[0]:
            if key not in batch:
                batch[key] = sample_transform.collate(key, [s[key] for s in samples])
    return batch


def make_loader(
    dataset: ShardDataset, num_workers: int = 0, start_batch: int = 0, pin_memory: bool = False
) -> DataLoader:
    """A DataLoader over ``dataset`` starting at batch ``start_batch`` of this rank's stream.

    The DataLoader gets its own generator so creating it never draws from the
    global torch RNG (which the objective's masking uses; resume stays exact).
    """
    dataset.start_batch = int(start_batch)
    extra = {"prefetch_factor": 4, "worker_init_fn": _ignore_stop_signals} if num_workers else {}
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(dataset.seed),
        **extra,
    )


def _ignore_stop_signals(worker_id: int) -> None:
    # Schedulers signal every process of a job; only the main process decides when to stop.
    import signal

    for name in ("SIGINT", "SIGTERM", "SIGUSR1"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


def open_dataset(path: Path) -> Artifact:
    """Open a dataset artifact (kind checked)."""
    return open_artifact(path, kind="dataset")
