"""Ingest of real images arranged as IU, CheXpert and MIMIC-CXR ship them: patients,
studies, splits, views and reports come from each layout."""

from __future__ import annotations

from collections import defaultdict

import layouts_support as layouts
import pyarrow.parquet as pq
import pytest

from cxrkit.artifacts import open_artifact
from cxrkit.io.dataset import dataset_shards
from cxrkit.io.layouts import expand_views, layout_keys, mimic_report_beside
from cxrkit.stages.ingest import IngestConfig, run


def _rows(path) -> list[dict]:
    art = open_artifact(path, kind="dataset")
    return [r for f in dataset_shards(art, allow_empty=True) for r in pq.read_table(f).to_pylist()]


def _ingest(tmp_path, salt_file, sources, **kw) -> list[dict]:
    out = tmp_path / "dataset"
    cfg = IngestConfig(
        sources=[str(s) for s in sources],
        out=str(out),
        image_size=64,
        salt_file=str(salt_file),
        **kw,
    )
    art = run(cfg)
    assert art.stats["rejects"] == 0, art.stats
    return _rows(out)


def _assert_no_patient_in_two_splits(rows: list[dict]) -> None:
    splits = defaultdict(set)
    for row in rows:
        splits[row["patient_id"]].add(row["split"])
    assert all(len(s) == 1 for s in splits.values()), splits


# ---------------------------------------------------------------- path rules
def test_layout_keys_of_each_public_layout():
    mimic = layout_keys("/d/files/p10/p10000032/s50414267/02aa804e.dcm")
    assert (mimic.layout, mimic.patient, mimic.study) == ("mimic", "p10000032", "s50414267")
    chexpert = layout_keys("/d/CheXpert-v1.0/train/patient00002/study1/view2_lateral.jpg")
    assert chexpert.patient == "chexpert:patient00002"
    assert chexpert.study == "chexpert:patient00002/study1"
    assert chexpert.view == "LATERAL"
    assert layout_keys("/d/train/patient00002/study1/view1_frontal.jpg").view == "FRONTAL"
    assert layout_keys("/d/NLMCXR_png/CXR1_1_IM-0001-3001.png").patient == "iu:CXR1"
    assert layout_keys("/d/NLMCXR_png/CXR10_IM-0002-1001.png").study == "iu:CXR10"
    assert layout_keys("/d/images/scan_0001.png") is None


def test_view_filter_names_expand():
    assert expand_views("PA,AP") == {"PA", "AP"}
    assert {"PA", "AP", "FRONTAL"} <= expand_views("frontal")
    assert "LATERAL" not in expand_views("frontal")
    with pytest.raises(ValueError):
        expand_views(" , ")


# ---------------------------------------------------------------- IU
def test_iu_frontal_and_lateral_of_one_report_are_one_patient_and_study(tmp_path, salt_file):
    from cxrkit.io.bundled import iu_reports_archive

    folder = layouts.iu_tree(tmp_path, n_reports=8)
    rows = _ingest(tmp_path, salt_file, [folder], reports=str(iu_reports_archive()))
    assert len(rows) == 16
    assert len({r["patient_id"] for r in rows}) == 8
    assert len({r["study_id"] for r in rows}) == 8
    by_patient = defaultdict(set)
    for row in rows:
        by_patient[row["patient_id"]].add(row["report_text"])
        assert row["report_source"] == "iu_xml"
    assert all(len(texts) == 1 for texts in by_patient.values())
    _assert_no_patient_in_two_splits(rows)


# ---------------------------------------------------------------- CheXpert
def test_chexpert_three_patient_folders_are_three_patients(tmp_path, salt_file):
    rows = _ingest(tmp_path, salt_file, [layouts.chexpert_tree(tmp_path) / "train"])
    assert len(rows) == 6
    assert len({r["patient_id"] for r in rows}) == 3
    assert len({r["study_id"] for r in rows}) == 4
    _assert_no_patient_in_two_splits(rows)


def test_chexpert_views_come_from_the_file_names(tmp_path, salt_file):
    rows = _ingest(tmp_path, salt_file, [layouts.chexpert_tree(tmp_path)])
    assert sorted(r["view"] for r in rows) == ["FRONTAL"] * 4 + ["LATERAL"] * 2


# ---------------------------------------------------------------- MIMIC-CXR
def test_mimic_patients_and_studies_come_from_the_folders(tmp_path, salt_file):
    rows = _ingest(tmp_path, salt_file, [layouts.mimic_tree(tmp_path, with_reports=False)])
    assert len(rows) == 6
    assert len({r["patient_id"] for r in rows}) == 2
    assert len({r["study_id"] for r in rows}) == 3
    _assert_no_patient_in_two_splits(rows)


def test_mimic_reports_beside_the_study_folders_are_attached(tmp_path, salt_file):
    files = layouts.mimic_tree(tmp_path)
    out = tmp_path / "dataset"
    art = run(
        IngestConfig(sources=[str(files)], out=str(out), image_size=64, salt_file=str(salt_file))
    )
    assert art.stats["study_reports_beside"] == 3
    rows = _rows(out)
    assert {r["report_source"] for r in rows} == {"mimic"}
    by_study = defaultdict(set)
    for row in rows:
        assert row["report_findings"] and row["report_impression"]
        by_study[row["study_id"]].add(row["report_text"])
    assert len(by_study) == 3 and all(len(t) == 1 for t in by_study.values())
    assert len({next(iter(t)) for t in by_study.values()}) == 3  # each study its own report


def test_mimic_reports_beside_can_be_turned_off(tmp_path, salt_file):
    files = layouts.mimic_tree(tmp_path)
    rows = _ingest(tmp_path, salt_file, [files], layout_reports=False)
    assert {r["report_source"] for r in rows} == {"none"}


def test_mimic_report_beside_is_found_only_in_the_mimic_layout(tmp_path):
    files = layouts.mimic_tree(tmp_path)
    image = next(files.rglob("*.jpg"))
    assert mimic_report_beside(image) == image.parent.parent / f"{image.parent.name}.txt"
    assert mimic_report_beside(tmp_path / "other" / "x.jpg") is None


def test_mimic_dicom_tree_groups_by_folder(tmp_path, salt_file):
    from cxrkit.io.bundled import rg1_dicoms

    rg1 = rg1_dicoms()["RG1_UNCR"]
    files = tmp_path / "files"
    layouts.copy_dicom(rg1, files / "p10" / "p10000032" / "s50414267" / "a.dcm")
    layouts.mimic_tree(tmp_path)  # JPEGs of the same and other patients beside it
    rows = _ingest(tmp_path, salt_file, [files])
    dicom = next(r for r in rows if r["source_format"] == "dicom")
    same_study = [r for r in rows if r["study_id"] == dicom["study_id"]]
    assert len(same_study) == 3  # the DICOM joins its folder's study, not its own header UID
    assert dicom["report_source"] == "mimic"
    _assert_no_patient_in_two_splits(rows)
