"""The shard loader: order, rank/worker split, resume, decoding, joins (real pediatric JPEGs)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from pretrain_support import SquareTransform, pediatric_images, write_annotations, write_dataset

from cxrkit.errors import InputError
from cxrkit.io.dataset import dataset_shards, decode_pixels, report_text, unpack_bits
from cxrkit.io.shards import (
    ShardDataset,
    _buffer_shuffle,
    make_loader,
)

VAL = ("NORMAL2-IM-1427-0001",)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(
        tmp_path_factory.mktemp("shards") / "ds", size=40, row_group_rows=3, val_names=VAL
    )


def _loader_ids(dataset, batches, *, rank=0, world=1, workers=0, start=0, batch_size=3, **kw):
    data = ShardDataset(
        dataset_shards(dataset),
        transform=SquareTransform(32),
        batch_size=batch_size,
        rank=rank,
        world_size=world,
        seed=7,
        shuffle_buffer=4,
        **kw,
    )
    it = iter(make_loader(data, workers, start))
    return [next(it) for _ in range(batches)], data


def test_split_filter_reads_only_the_requested_split(dataset):
    _, train = _loader_ids(dataset, 1)
    _, val = _loader_ids(dataset, 1, split="val", batch_size=1)
    assert train.num_samples == 15 and val.num_samples == 1


def test_ranks_and_workers_cover_an_epoch_without_duplicates(dataset):
    # 15 train images, 2 ranks: 7 each per epoch (the odd one out is dropped), batch 7.
    seen = []
    for rank in (0, 1):
        batches, data = _loader_ids(dataset, 1, rank=rank, world=2, workers=2, batch_size=7)
        assert data.samples_per_rank == 7
        seen += batches[0]["image_id"]
    assert len(seen) == 14 and len(set(seen)) == 14


def test_batch_sequence_does_not_depend_on_worker_count(dataset):
    alone, _ = _loader_ids(dataset, 7)
    pooled, _ = _loader_ids(dataset, 7, workers=2)
    assert [b["image_id"] for b in alone] == [b["image_id"] for b in pooled]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(alone, pooled, strict=True))


def test_restart_at_batch_k_continues_the_same_stream(dataset):
    full, _ = _loader_ids(dataset, 9)  # 9 batches of 3 = 27 samples: crosses an epoch boundary
    tail, _ = _loader_ids(dataset, 5, start=4, workers=2)
    assert [b["image_id"] for b in tail] == [b["image_id"] for b in full[4:]]
    assert torch.equal(tail[-1]["image"], full[-1]["image"])


def test_each_epoch_is_a_new_permutation_of_the_split(dataset):
    batches, data = _loader_ids(dataset, 10)  # 30 samples = 2 epochs of 15
    ids = [i for b in batches for i in b["image_id"]]
    first, second = ids[:15], ids[15:]
    assert sorted(first) == sorted(second) and len(set(first)) == 15
    assert first != second
    assert np.array_equal(data.epoch_order(1)[1], data.epoch_order(1)[1])  # deterministic


def test_buffer_shuffle_is_a_permutation_that_keeps_items_near_their_place():
    items = np.arange(100)
    out = _buffer_shuffle(items, 4, np.random.default_rng(0))
    assert sorted(out.tolist()) == items.tolist()
    # an item cannot come out before the buffer has read it: position i holds an item < i + 4
    assert all(out[i] < i + 4 for i in range(100))


def test_one_pass_mode_keeps_the_last_partial_batch(dataset):
    data = ShardDataset(
        dataset_shards(dataset),
        transform=SquareTransform(32, flip=False),
        batch_size=4,
        shuffle=False,
        loop=False,
    )
    sizes = [len(b["image_id"]) for b in data]
    assert sizes == [4, 4, 4, 3]


def test_pixels_decode_exactly_for_uint8_and_uint16():
    image = np.array([[0, 1, 2], [250, 255, 7]], dtype=np.uint16) * 257
    assert np.array_equal(decode_pixels(image.tobytes(), "uint16", 2, 3), image)
    small = np.array([[3, 4], [5, 6]], dtype=np.uint8)
    assert np.array_equal(decode_pixels(small.tobytes(), "uint8", 2, 2), small)


def test_images_are_the_stored_pixels_through_the_transform(dataset):
    transform = SquareTransform(40, flip=False)
    data = ShardDataset(
        dataset_shards(dataset), transform=transform, batch_size=2, shuffle=False, loop=False
    )
    batch = next(iter(data))
    _, pixels, _ = pediatric_images(40)[1]  # unshuffled: img-00 is in val, img-01 comes first
    expected, _ = transform(torch.from_numpy(pixels.copy()), None, torch.Generator())
    assert batch["image_id"] == ["img-01", "img-02"] and batch["image"].shape == (2, 1, 40, 40)
    assert torch.equal(batch["image"][0], expected)


def test_annotations_join_gives_contour_and_labels(dataset, tmp_path):
    annotations = write_annotations(tmp_path / "ann", dataset)
    data = ShardDataset(
        dataset_shards(dataset),
        transform=SquareTransform(32, flip=False),
        batch_size=2,
        needs={"contour", "labels"},
        shuffle=False,
        loop=False,
        annotations=annotations.path / "annotations.parquet",
    )
    batch = next(iter(data))
    assert batch["contour"].dtype == torch.bool and batch["contour"].shape == (2, 32, 32)
    assert 0 < batch["contour"].float().mean() < 1
    assert batch["labels"].shape == (2, 14)
    assert torch.isnan(batch["labels"][:, 0]).all() and not torch.isnan(batch["labels"][:, 7]).any()


def test_annotation_join_does_not_depend_on_how_the_file_is_cut(dataset, tmp_path):
    """Joined row group by row group: a file in reverse order and 4-row groups gives the
    batches a one-row-group file gives (contour, labels), over a whole shuffled pass."""
    annotations = write_annotations(tmp_path / "ann", dataset)
    table = pq.read_table(annotations.path / "annotations.parquet")
    cut = tmp_path / "cut" / "annotations.parquet"
    cut.parent.mkdir()
    pq.write_table(table.take(list(range(table.num_rows))[::-1]), cut, row_group_size=4)
    assert pq.ParquetFile(cut).num_row_groups > 1

    def batches(path):
        data = ShardDataset(dataset_shards(dataset), transform=SquareTransform(24, flip=False),
                            batch_size=3, needs={"contour", "labels"}, loop=False, seed=5,
                            annotations=path)  # fmt: skip
        return list(make_loader(data, num_workers=2))

    whole, pieces = batches(annotations.path / "annotations.parquet"), batches(cut)
    assert len(whole) == len(pieces) > 2
    for a, b in zip(whole, pieces, strict=True):
        assert a["image_id"] == b["image_id"]
        assert torch.equal(a["contour"], b["contour"]) and 0 < a["contour"].float().mean() < 1
        assert torch.equal(a["labels"].nan_to_num(-9), b["labels"].nan_to_num(-9))


def test_contour_without_annotations_is_an_input_error(dataset):
    with pytest.raises(InputError, match="annotations"):
        ShardDataset(
            dataset_shards(dataset), transform=SquareTransform(32), batch_size=2, needs={"contour"}
        )


def test_packed_mask_unpacks_row_major():
    mask = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 1]], dtype=bool)
    assert np.array_equal(unpack_bits(np.packbits(mask).tobytes(), 3, 3), mask)


def test_text_is_findings_and_impression_else_the_whole_report():
    assert (
        report_text(
            {"report_findings": "Clear lungs. ", "report_impression": "Normal.", "report_text": "x"}
        )
        == "Clear lungs.\nNormal."
    )
    assert (
        report_text(
            {"report_findings": None, "report_impression": "", "report_text": "FINDINGS: none"}
        )
        == "FINDINGS: none"
    )


def test_more_ranks_than_images_is_an_input_error(dataset):
    with pytest.raises(InputError, match="fewer than"):
        ShardDataset(
            dataset_shards(dataset),
            transform=SquareTransform(32),
            batch_size=1,
            split="val",
            world_size=2,
        )


def test_labels_and_text_come_from_the_dataset_without_annotations(dataset):
    data = ShardDataset(
        dataset_shards(dataset),
        transform=SquareTransform(32, flip=False),
        batch_size=3,
        needs={"labels", "text"},
        shuffle=False,
        loop=False,
    )
    batch = next(iter(data))  # img-01, img-02, img-03 (img-00 is in val)
    labels = {name: label for name, _, label in pediatric_images(40)}
    expected = [labels[name] for name in sorted(labels)[1:4]]
    assert batch["labels"][:, 7].tolist() == expected  # "Pneumonia" is CheXpert class 7
    assert torch.isnan(batch["labels"][:, :7]).all()
    assert batch["text"] == [
        "findings 1.\nimpression 1.",
        "findings 2.\nimpression 2.",
        "whole report 3.",
    ]
