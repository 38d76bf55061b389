"""The shard loader holds a bounded window: rows wait undecoded, a row group is read in
slices, and the batches are exactly those of reading the whole split into memory and
making every sample from its stored row (real pediatric JPEGs, uint8 and uint16)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch
from pretrain_support import SquareTransform, write_annotations, write_dataset

import cxrkit.io.shards as shards
from cxrkit.io.dataset import dataset_shards
from cxrkit.io.shards import ShardDataset, collate, make_loader

NEEDS = frozenset({"image", "image_id", "contour", "labels", "text", "view"})


@pytest.fixture(scope="module", params=[False, True], ids=["uint8", "uint16"])
def data_and_notes(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("window")
    dataset = write_dataset(
        folder / "ds",
        size=40,
        row_group_rows=7,
        val_names=("NORMAL2-IM-1427-0001",),
        uint16=request.param,
    )
    return dataset, write_annotations(folder / "ann", dataset)


def _dataset(artifacts, **kw) -> ShardDataset:
    dataset, notes = artifacts
    return ShardDataset(
        dataset_shards(dataset),
        transform=SquareTransform(24),
        needs=NEEDS,
        annotations=notes.path / "annotations.parquet",
        seed=11,
        **kw,
    )


def _whole_split_batches(data: ShardDataset, first: int, count: int) -> list[dict]:
    """Batches ``first .. first + count - 1`` of the rank's stream, computed the plain way:
    every stored row of the split read at once, each sample made from its own row."""
    stored = {}
    for slot, (file_index, group) in enumerate(zip(data.rg_file, data.rg_group, strict=True)):
        rows = pq.ParquetFile(data.shards[file_index]).read_row_group(int(group)).to_pylist()
        for sample in range(data.rg_start[slot], data.rg_start[slot + 1]):
            stored[sample] = rows[data.sample_row[sample]]
    n, size, out = data.samples_per_rank, data.batch_size, []
    for batch in range(first, first + count):
        samples = []
        for position in range(batch * size, (batch + 1) * size):
            epoch, offset = divmod(position, n)
            sample = int(data.epoch_order(epoch)[1][offset])
            row = stored[sample]
            note = data.annotations.row(row["image_id"])
            samples.append(data._make_sample(epoch, sample, row, note))
        out.append(collate(samples, data.sample_fields))
    return out


def _assert_same(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], torch.Tensor):
                assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape
                # byte for byte (NaN labels included)
                assert (
                    a[key]
                    .contiguous()
                    .view(torch.uint8)
                    .equal(b[key].contiguous().view(torch.uint8))
                ), key
            else:
                assert a[key] == b[key], key


@pytest.mark.parametrize(
    ("rank", "world", "workers", "start", "buffer"),
    [(0, 1, 0, 0, 64), (1, 2, 2, 3, 4), (0, 1, 2, 1, 2)],
    ids=["one-rank-buffer-over-split", "rank1-of-2-two-workers-resumed", "two-workers-buffer-2"],
)
def test_batches_equal_the_whole_split_read_at_once(
    data_and_notes, monkeypatch, rank, world, workers, start, buffer
):
    # Slices of ~2 rows: every 7-row group is read in several pieces (workers fork and inherit).
    row_bytes = 40 * 40 * 2
    monkeypatch.setattr(shards, "SLICE_BYTES", 2 * row_bytes)
    data = _dataset(
        data_and_notes, batch_size=3, rank=rank, world_size=world, shuffle_buffer=buffer
    )
    it = iter(make_loader(data, num_workers=workers, start_batch=start))
    got = [next(it) for _ in range(9)]  # 27 samples: past an epoch boundary (7 or 15 a rank)
    _assert_same(got, _whole_split_batches(data, start, 9))


def test_one_pass_without_shuffle_equals_the_stored_order(data_and_notes):
    data = _dataset(data_and_notes, batch_size=4, shuffle=False, loop=False)
    got = list(data)
    assert [len(b["image_id"]) for b in got] == [4, 4, 4, 3]
    _assert_same(got[:3], _whole_split_batches(data, 0, 3))


def test_a_sample_is_decoded_when_handed_out_not_when_its_row_group_is_read(data_and_notes):
    calls = []

    class Counting(SquareTransform):
        def __call__(self, image, contour, generator):
            calls.append(image.shape)
            return super().__call__(image, contour, generator)

    dataset, notes = data_and_notes
    data = ShardDataset(
        dataset_shards(dataset), transform=Counting(16), batch_size=1, shuffle=False, loop=False
    )
    it = iter(data)
    next(it)
    # The first row group (7 rows, 6 of them train) was read; only the sample handed out was made.
    assert data.rg_start[1] - data.rg_start[0] == 6 and len(calls) == 1
    next(it)
    assert len(calls) == 2
    assert sum(1 for _ in it) == data.num_samples - 2 and len(calls) == data.num_samples
