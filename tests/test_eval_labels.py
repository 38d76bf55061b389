"""Label sources: the public label CSVs shipped by torchxrayvision, name matching, policies."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import pytest

from cxrkit.errors import InputError
from cxrkit.evaluate import labels


def _xrv_data(name: str) -> Path:
    try:
        files = importlib.metadata.files("torchxrayvision") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("torchxrayvision (label CSVs) not installed")
    for entry in files:
        if str(entry).endswith(f"data/{name}"):
            return Path(entry.locate())
    pytest.skip(f"torchxrayvision ships no {name}")


def _positives(parsed: labels.LabelFile, name: str) -> int:
    return int(np.sum(parsed.values[:, parsed.classes.index(name)] == 1))


def test_nih_data_entry_parses_pipe_separated_findings():
    parsed = labels.read_label_file(_xrv_data("Data_Entry_2017_v2020.csv.gz"), "nih")
    assert len(parsed.keys) == 112_120
    assert len(parsed.classes) == 15  # 14 findings + No Finding
    assert _positives(parsed, "Pneumonia") == 1_431
    assert _positives(parsed, "No Finding") == 60_361
    assert parsed.patients[0] == "1"


def test_chexpert_csv_keeps_uncertain_and_blank_labels():
    parsed = labels.read_label_file(_xrv_data("chexpert_train.csv.gz"), "chexpert")
    assert len(parsed.keys) == 223_414
    assert parsed.classes[0] == "No Finding" and len(parsed.classes) == 14
    pneumonia = parsed.values[:, parsed.classes.index("Pneumonia")]
    assert int(np.sum(pneumonia == 1)) == 6_039
    assert np.sum(pneumonia == -1) > 0 and np.isnan(pneumonia).sum() > 0
    assert parsed.patients[0] == "patient00001"


def test_rsna_boxes_collapse_to_one_label_per_patient():
    parsed = labels.read_label_file(_xrv_data("kaggle_stage_2_train_labels.csv.zip"), "rsna")
    assert len(parsed.keys) == 26_684
    assert _positives(parsed, "Pneumonia") == 6_012


def test_siim_rle_becomes_binary_pneumothorax():
    parsed = labels.read_label_file(_xrv_data("siim-pneumothorax-train-rle.csv.gz"), "siim")
    assert len(parsed.keys) == 12_047
    assert _positives(parsed, "Pneumothorax") == 2_669
    assert set(np.unique(parsed.values)) == {0.0, 1.0}


def test_padchest_terms_fold_onto_chexpert_classes():
    path = _xrv_data("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz")
    parsed = labels.read_label_file(path, "padchest")
    assert len(parsed.keys) == 160_861
    assert _positives(parsed, "No Finding") == 50_616
    assert _positives(parsed, "Pneumonia") == 8_174  # pneumonia + atypical pneumonia
    assert _positives(parsed, "Pneumothorax") == 573  # pneumothorax + hydropneumothorax


def test_names_match_by_shortest_unique_path_ending():
    parsed = labels.LabelFile(
        classes=["Pneumonia"],
        keys=["train/patient1/study1/view1_frontal.jpg", "train/patient2/study1/view1_frontal.jpg"],
        values=np.array([[1.0], [0.0]]),
        patients=["patient1", "patient2"],
    )
    sources = ["/data/cx/train/patient2/study1/view1_frontal.png", "/elsewhere/other.png"]
    table = labels.match_by_name(parsed, sources, "test.csv")
    assert table.matched == 1
    assert table.values[0, 0] == 0.0 and np.isnan(table.values[1, 0])
    assert table.patients == ["patient2", None]


def test_hashed_source_paths_explain_keep_paths():
    parsed = labels.LabelFile(["Pneumonia"], ["00000001_000.png"], np.array([[1.0]]))
    with pytest.raises(InputError, match="--keep-paths"):
        labels.match_by_name(parsed, ["e65378067efd43dda1b4"], "nih.csv")


def test_dataset_labels_column_and_uncertain_policies():
    table = labels.from_dataset_column(['{"Pneumonia": 1}', None, '{"Pneumonia": -1}'])
    assert table.classes == ["Pneumonia"] and table.matched == 2
    ignore = labels.binarise(table.values, "ignore")[:, 0]
    assert ignore[0] == 1 and np.isnan(ignore[1]) and np.isnan(ignore[2])
    assert labels.binarise(table.values, "positive")[2, 0] == 1
    assert labels.binarise(table.values, "negative")[2, 0] == 0


def test_annotation_labels_and_prompts_come_from_the_annotations_artifact(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cxrkit.artifacts import ArtifactWriter
    from cxrkit.evaluate.runner import resolve_prompts
    from cxrkit.stages.eval import EvalConfig
    from cxrkit.text.labeler import CHEXPERT_CLASSES
    from cxrkit.text.prompts import load_prompts, prompts_bytes

    pneumonia = CHEXPERT_CLASSES.index("Pneumonia")
    row = [float("nan")] * len(CHEXPERT_CLASSES)
    row[pneumonia] = 1.0
    writer = ArtifactWriter(tmp_path / "ann", "annotations", {"test": 1})
    work = writer.begin()
    table = pa.table({"image_id": ["img-b"], "labels": [row]})
    pq.write_table(table, work / "annotations.parquet")
    (work / "prompts.json").write_bytes(prompts_bytes(load_prompts(None)))
    annotations = writer.publish()

    aligned = labels.from_annotations(annotations.path, ["img-a", "img-b"])
    assert aligned.matched == 1 and aligned.classes == list(CHEXPERT_CLASSES)
    assert np.isnan(aligned.values[0, pneumonia]) and aligned.values[1, pneumonia] == 1.0

    cfg = EvalConfig(dataset="d", checkpoint="c", out="o")
    prompts, source = resolve_prompts(cfg, annotations, ["Pneumonia"])
    assert "prompts.json" in source
    assert prompts["Pneumonia"]["negative"]  # MaCo-style pairs need negatives


def test_mimic_label_file_labels_every_image_of_its_study(tmp_path):
    csv_path = tmp_path / "mimic-cxr-2.0.0-chexpert.csv"
    csv_path.write_text(
        "subject_id,study_id,Atelectasis,Cardiomegaly,No Finding,Pneumonia\n"
        "10000032,50414267,,,1.0,\n"
        "10000032,53189527,1.0,-1.0,,0.0\n"
    )
    parsed = labels.read_label_file(csv_path, "mimic")
    assert parsed.classes == ["Atelectasis", "Cardiomegaly", "No Finding", "Pneumonia"]
    assert parsed.study_level and parsed.keys == ["p10000032/s50414267", "p10000032/s53189527"]
    sources = [
        "/d/files/p10/p10000032/s50414267/02aa804e-bde0afdd.jpg",
        "/d/files/p10/p10000032/s50414267/174413ec-4ec4c1f7.jpg",
        "/d/files/p10/p10000032/s53189527/2a2277a9-b0ded155.jpg",
        "/d/files/p10/p10000764/s57375967/096052b7-d256dc40.jpg",
    ]
    table = labels.match_by_name(parsed, sources, str(csv_path))
    assert table.matched == 3
    np.testing.assert_array_equal(table.values[2], [1.0, -1.0, np.nan, 0.0])
    assert table.values[0, 2] == table.values[1, 2] == 1.0
    assert np.isnan(table.values[3]).all()
    assert table.patients[:3] == ["p10000032"] * 3


def test_mimic_format_refuses_a_file_without_study_ids():
    path = _xrv_data("chexpert_train.csv.gz")
    with pytest.raises(InputError, match="--labels-format mimic"):
        labels.read_label_file(path, "mimic")
