"""Ingest's per-file worker (RowBuilder), the dataset shard rule and the annotations reader."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pretrain_support import write_annotations, write_dataset

from cxrkit.errors import ArtifactError, Reject
from cxrkit.io import bundled
from cxrkit.io.annotations import AnnotationIndex, annotations_file, labels_matrix
from cxrkit.io.dataset import dataset_shards
from cxrkit.io.mapping import MappingRow
from cxrkit.io.rows import RowBuilder
from cxrkit.io.schema import DATASET_SCHEMA

SALT = bytes(range(32))


@pytest.fixture(scope="module")
def jpeg():
    return bundled.pediatric_jpegs()[0]


# ---------------------------------------------------------------- RowBuilder


def test_builder_pickles_its_settings_not_its_caches(jpeg):
    builder = RowBuilder(salt=SALT, image_size=64).prepare()
    assert "pseudonymizer" in builder.__dict__  # built by prepare()
    copy = pickle.loads(pickle.dumps(builder))
    assert "pseudonymizer" not in copy.__dict__  # each worker builds its own
    assert copy == builder
    assert copy.build(jpeg) == builder.build(jpeg)


def test_built_row_fits_the_dataset_schema_and_the_size(jpeg):
    row = RowBuilder(salt=SALT, image_size=64).build(jpeg)
    table = pa.Table.from_pylist([row], schema=DATASET_SCHEMA)  # raises on a wrong column
    assert set(row) == set(DATASET_SCHEMA.names)
    assert max(row["height"], row["width"]) == 64
    assert len(row["pixels"]) == row["height"] * row["width"]  # uint8
    assert table.column("source_format").to_pylist() == ["jpeg"]


def test_mapping_row_supplies_ids_split_labels_and_report(jpeg):
    mapped = MappingRow(
        image_path=jpeg,
        report_path=None,
        report_text="FINDINGS: Clear lungs.\n\nIMPRESSION: Normal.",
        study_id="study-1",
        patient_id="patient-1",
        split="val",
        labels={"Pneumonia": 1.0},
    )
    builder = RowBuilder(salt=SALT, image_size=64)
    row = builder.build(jpeg, mapped)
    assert row["patient_id"] == builder.pseudonymizer.pseudonym("patient", "patient-1")
    assert row["split"] == "val"
    assert row["labels"] == '{"Pneumonia": 1.0}'
    assert row["report_source"] == "mapping" and row["report_impression"] == "Normal."


def test_bad_files_become_rejects_without_their_path(tmp_path):
    noise = tmp_path / "secret-name.dcm"
    noise.write_bytes(bytes(4096))
    missing = tmp_path / "gone.png"
    builder = RowBuilder(salt=SALT)
    rejected = builder((str(noise), None))["reject"]
    assert rejected["reason"] == "not_dicom"
    assert "secret-name" not in rejected["path"] + rejected["detail"]
    assert builder((str(missing), None))["reject"]["reason"] == "missing_file"


def _linked_patient_file(tmp_path):
    """inbox/image.dcm -> SMITH_JOHN_MRN123/0001.dcm: a symlink into a folder named for a
    patient, as site exports often are."""
    target = tmp_path / "SMITH_JOHN_MRN123" / "0001.dcm"
    target.parent.mkdir()
    target.write_bytes(bundled.rg1_dicoms()["RG1_UNCR"].read_bytes())
    link = tmp_path / "inbox" / "image.dcm"
    link.parent.mkdir()
    link.symlink_to(target)
    return link, target


def test_a_decoder_failure_quoting_a_symlinks_target_leaves_no_trace(tmp_path, monkeypatch):
    link, target = _linked_patient_file(tmp_path)

    def plugin_fails(path, **kwargs):  # a plugin that opens the resolved file
        raise OSError(f"[Errno 5] Input/output error: '{target}' in {target.parent}")

    monkeypatch.setattr("cxrkit.io.rows.read_any", plugin_fails)
    rejected = RowBuilder(salt=SALT)((str(link), None))["reject"]
    assert rejected["reason"] == "corrupt_pixels"
    assert "SMITH" not in rejected["detail"] and "0001" not in rejected["detail"]
    assert rejected["detail"] == "OSError: [Errno 5] Input/output error: '<file>' in <dir>"


def test_a_reader_reject_quoting_the_folder_is_scrubbed_before_it_is_stored(tmp_path, monkeypatch):
    link, target = _linked_patient_file(tmp_path)

    def reader_rejects(path, **kwargs):
        raise Reject("corrupt_pixels", f"frame table of {link.parent} / {target.parent} broken")

    monkeypatch.setattr("cxrkit.io.rows.read_any", reader_rejects)
    rejected = RowBuilder(salt=SALT)((str(link), None))["reject"]
    assert rejected["detail"] == "frame table of <dir> / <dir> broken"


def test_a_very_long_decoder_error_is_cut(tmp_path, monkeypatch):
    link, _ = _linked_patient_file(tmp_path)

    def chatty(path, **kwargs):
        raise ValueError("tile " + "0123456789 " * 500)

    monkeypatch.setattr("cxrkit.io.rows.read_any", chatty)
    detail = RowBuilder(salt=SALT)((str(link), None))["reject"]["detail"]
    assert detail.startswith("ValueError: tile 0123456789 ") and len(detail) == 200


def test_split_is_a_salted_function_of_the_patient():
    builder = RowBuilder(salt=SALT, val_fraction=0.2, test_fraction=0.2)
    splits = [builder.split_for(f"patient-{i}") for i in range(400)]
    assert splits == [builder.split_for(f"patient-{i}") for i in range(400)]
    shares = {name: splits.count(name) / 400 for name in ("train", "val", "test")}
    assert 0.5 < shares["train"] < 0.7 and 0.13 < shares["val"] < 0.27
    other = RowBuilder(salt=bytes(32), val_fraction=0.2, test_fraction=0.2)
    assert splits != [other.split_for(f"patient-{i}") for i in range(400)]


# ---------------------------------------------------------------- shards and annotations


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("rows") / "ds", size=32)


def test_dataset_shards_are_the_shard_files_without_rejects(dataset):
    shards = dataset_shards(dataset)
    assert [p.name for p in shards] == ["shard-00000.parquet"]
    assert "rejects.parquet" in [p.name for p in dataset.files(".parquet")]


def test_a_dataset_without_shards_is_an_error_unless_allowed(tmp_path):
    from cxrkit.artifacts import ArtifactWriter
    from cxrkit.io.schema import REJECTS_SCHEMA

    writer = ArtifactWriter(tmp_path / "empty", "dataset", {"test": "empty"}, inputs=[])
    work = writer.begin()
    pq.write_table(REJECTS_SCHEMA.empty_table(), work / "rejects.parquet")
    empty = writer.publish()
    with pytest.raises(ArtifactError, match="lists no Parquet shards"):
        dataset_shards(empty)
    assert dataset_shards(empty, allow_empty=True) == []


def test_annotations_reader_takes_artifact_directory_or_file(dataset, tmp_path):
    annotations = write_annotations(tmp_path / "ann", dataset)
    file = annotations.path / "annotations.parquet"
    assert annotations_file(annotations) == annotations_file(annotations.path) == file
    assert annotations_file(file) == file
    with pytest.raises(ArtifactError):
        annotations_file(dataset.path)  # a dataset is not an annotations artifact
    ids, labels = labels_matrix(annotations)
    assert labels.shape == (len(ids), 14) and labels.dtype == np.float32
    index = AnnotationIndex(annotations.path, ["contour_quality"])
    assert index.get(ids[0], "contour_quality") == "ok"
    assert index.get("no-such-image", "contour_quality") is None


def test_unreadable_annotations_name_the_file(tmp_path):
    broken = tmp_path / "annotations.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(ArtifactError, match="annotations.parquet: cannot read annotations"):
        AnnotationIndex(broken, ["labels"])


def _many_row_groups(path, rows: int = 200, group: int = 32, mask_bytes: int = 2048) -> pa.Table:
    """An annotations-like file of ``rows`` rows in row groups of ``group``, big masks."""
    rng = np.random.default_rng(0)
    table = pa.table(
        {
            "image_id": [f"{i:064x}" for i in range(rows)],
            "labels": [[float(i % 3)] * 14 for i in range(rows)],
            "contour_mask": [rng.bytes(mask_bytes) for _ in range(rows)],
        }
    )
    pq.write_table(table, path, row_group_size=group)
    return table


def test_annotation_index_finds_rows_across_row_groups_in_any_order(tmp_path):
    table = _many_row_groups(tmp_path / "annotations.parquet")
    index = AnnotationIndex(tmp_path / "annotations.parquet", ["labels", "contour_mask"])
    wanted = [199, 0, 33, "missing", 31, 32, 150]
    ids = [f"{i:064x}" if isinstance(i, int) else i for i in wanted]
    rows = index.rows(ids)
    expected = table.to_pylist()
    for i, row in zip(wanted, rows, strict=True):
        if i == "missing":
            assert row is None
        else:
            assert row == {k: expected[i][k] for k in ("labels", "contour_mask")}
    assert ids[2] in index and "missing" not in index
    assert index.get(ids[0], "labels") == [1.0] * 14 and index.rows([]) == []


def test_annotation_index_holds_the_ids_not_the_columns(tmp_path):
    """What a DataLoader worker receives does not grow with the masks, only with the ids."""
    table = _many_row_groups(tmp_path / "annotations.parquet", mask_bytes=2048)
    index = AnnotationIndex(tmp_path / "annotations.parquet", ["labels", "contour_mask"])
    index.rows([f"{5:064x}"])  # a row group is now cached; it does not travel to workers
    masks = sum(len(m) for m in table.column("contour_mask").to_pylist())
    assert len(pickle.dumps(index)) < masks / 20
    assert pickle.loads(pickle.dumps(index)).row(f"{5:064x}") == index.row(f"{5:064x}")


def test_annotation_index_names_a_missing_column(tmp_path):
    _many_row_groups(tmp_path / "annotations.parquet", rows=4)
    with pytest.raises(ArtifactError, match="lack column.*entities"):
        AnnotationIndex(tmp_path / "annotations.parquet", ["labels", "entities"])
