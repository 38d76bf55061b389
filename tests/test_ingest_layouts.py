"""Ingest of real images arranged as IU, CheXpert and MIMIC-CXR ship them: patients,
studies, splits, views and reports come from each layout."""

from __future__ import annotations

import dataclasses
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


def test_every_mimic_view_position_is_in_a_view_group():
    """MIMIC-CXR-JPG's metadata ViewPosition values (stored as given): the decubitus
    frontals are frontal, the cross-table and swimmer's laterals lateral."""
    assert {"PA", "AP", "AP AXIAL", "AP LLD", "AP RLD", "PA LLD", "PA RLD"} <= expand_views(
        "frontal"
    )
    assert {"LATERAL", "LL", "XTABLE LATERAL", "SWIMMERS"} <= expand_views("lateral")


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
def test_chexpert_split_folder_is_read_from_the_path():
    base = "/d/CheXpert-v1.0-small"
    assert layout_keys(f"{base}/train/patient00001/study1/view1_frontal.jpg").split == "train"
    assert layout_keys(f"{base}/valid/patient64541/study1/view1_frontal.jpg").split == "val"
    assert layout_keys(f"{base}/test/patient64741/study1/view1_frontal.jpg").split == "test"
    assert layout_keys("/d/other/patient00001/study1/view1_frontal.jpg").split is None
    assert layout_keys("/d/files/p10/p10000032/s50414267/02aa804e.dcm").split is None


def _split_by_folder(rows: list[dict]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        folder = row["source_path"].split("/CheXpert-v1.0-small/")[1].split("/")[0]
        found[folder].add(row["split"])
    return dict(found)


def test_chexpert_train_and_valid_folders_give_the_official_split(tmp_path, salt_file):
    base, images = layouts.chexpert_split_tree(tmp_path)
    rows = _ingest(
        tmp_path, salt_file, [base / "train", base / "valid", base / "test"], keep_paths=True
    )
    assert len(rows) == 16
    assert _split_by_folder(rows) == {"train": {"train"}, "valid": {"val"}, "test": {"test"}}
    labelled = [r for r in rows if r["labels"]]  # train.csv and valid.csv rows
    assert len(labelled) == 12
    art = open_artifact(tmp_path / "dataset")
    assert art.stats["split_counts"] == {"train": 8, "val": 4, "test": 4}
    assert art.stats["folder_splits"] == 16 and art.params["folder_splits"] == 16


def test_a_tree_of_file_links_keeps_its_layout(tmp_path, salt_file):
    """Files linked into the layout from a flat content store (DVC, git-annex, a hub cache):
    patients, views, splits and train.csv labels come from the link's path, not the target's."""
    base, images = layouts.chexpert_split_tree(tmp_path / "real")
    store = tmp_path / "store"
    store.mkdir()
    linked = tmp_path / "linked" / base.name
    for k, path in enumerate(sorted(base.rglob("*.*"))):
        target = linked / path.relative_to(base)
        target.parent.mkdir(parents=True, exist_ok=True)
        blob = store / f"{k:040x}"  # the store's name says nothing of the layout
        path.rename(blob)
        target.symlink_to(blob)
    rows = _ingest(tmp_path, salt_file, [linked], keep_paths=True)
    assert len(rows) == 16
    assert _split_by_folder(rows) == {"train": {"train"}, "valid": {"val"}, "test": {"test"}}
    assert len({r["patient_id"] for r in rows}) == 16
    assert {r["view"] for r in rows} == {"PA", "FRONTAL"}  # PA from the CSVs, test/ by name
    assert sum(bool(r["labels"]) for r in rows) == 12


def test_linked_patient_folders_inside_a_source_are_reported_not_skipped_silently(
    tmp_path, salt_file, caplog
):
    """A subset made of links to patient folders: ingest does not descend into linked
    folders (as find and rsync), and says so; given as sources they are read."""
    base, _ = layouts.chexpert_split_tree(tmp_path / "real")
    subset = tmp_path / "subset" / "train"
    subset.mkdir(parents=True)
    for patient in ("patient00001", "patient00002"):
        (subset / patient).symlink_to(base / "train" / patient, target_is_directory=True)
    own = subset / "patient00009/study1/view1_frontal.jpg"
    layouts._small_copy(layouts.pediatric_jpegs()[0], own, size=200)  # not the tree's bytes
    with caplog.at_level("WARNING", logger="cxrkit"):
        rows = _ingest(tmp_path, salt_file, [subset.parent])
    assert len(rows) == 1
    assert "2 linked folder(s)" in caplog.text and str(subset / "patient00001") in caplog.text
    rows = _ingest(tmp_path / "again", salt_file, sorted(subset.iterdir()))
    assert len(rows) == 3 and {r["split"] for r in rows} == {"train"}


def test_a_mapping_split_wins_over_the_split_folder(tmp_path, salt_file):
    base, images = layouts.chexpert_split_tree(tmp_path)
    moved, kept = (path for path, _ in images["train"][:2])
    mapping = tmp_path / "map.csv"
    mapping.write_text(f"image_path,report_text,split\n{moved},,test\n{kept},,\n")
    out = tmp_path / "dataset"
    run(
        IngestConfig(
            sources=[str(base / "train")],
            mapping=str(mapping),
            out=str(out),
            image_size=64,
            salt_file=str(salt_file),
            keep_paths=True,
        )
    )
    split = {r["source_path"]: r["split"] for r in _rows(out)}
    assert split[str(moved)] == "test"  # the mapping's split
    assert split[str(kept)] == "train"  # a mapping row without one: the folder
    assert sum(s == "train" for s in split.values()) == 7
    assert open_artifact(out).params["folder_splits"] == 7


def test_a_patient_in_two_split_folders_is_refused(tmp_path, salt_file):
    """CheXpert numbers patients across train/ valid/ test/; one patient folder in two of
    them would leak train into val: refused like a mapping CSV that does it (exit 3)."""
    from cxrkit.errors import InputError

    base, images = layouts.chexpert_split_tree(tmp_path)
    # train/ holds patient00001/study1; its second study turns up in valid/
    moved = base / "valid" / "patient00001" / "study2" / "view1_frontal.jpg"
    moved.parent.mkdir(parents=True)
    images["train"][1][0].rename(moved)  # another train image's pixels (no duplicate)
    cfg = IngestConfig(sources=[str(base)], out=str(tmp_path / "ds"), image_size=64,
                       salt_file=str(salt_file))  # fmt: skip
    with pytest.raises(InputError, match=r"1 patient\(s\) .* more than one split") as err:
        run(cfg)
    assert "chexpert:patient00001 in train, val" in str(err.value)
    assert "layout_splits=false" in str(err.value)
    assert not (tmp_path / "ds").exists()
    ok = run(dataclasses.replace(cfg, layout_splits=False))  # the salted split: one per patient
    _assert_no_patient_in_two_splits(_rows(ok.path))


def test_layout_splits_off_gives_the_salted_patient_split(tmp_path, salt_file):
    from cxrkit.io.deid import load_or_create_salt
    from cxrkit.io.rows import RowBuilder

    base, _ = layouts.chexpert_split_tree(tmp_path)
    rows = _ingest(tmp_path, salt_file, [base], layout_splits=False)
    builder = RowBuilder(salt=load_or_create_salt(salt_file))
    assert [r["split"] for r in rows] == [builder.split_for(r["patient_id"]) for r in rows]
    assert "folder_splits" not in open_artifact(tmp_path / "dataset").params


def test_a_dataset_without_split_folders_keeps_its_id(tmp_path, salt_file):
    """Reading split folders changed no id of a dataset that has none (nothing re-ingests)."""
    out = tmp_path / "dataset"
    cfg = dict(sources=[str(layouts.mimic_tree(tmp_path))], image_size=64, salt_file=str(salt_file))
    on = run(IngestConfig(out=str(out), **cfg))
    off = run(IngestConfig(out=str(tmp_path / "off"), layout_splits=False, **cfg))
    assert "folder_splits" not in on.params and on.id == off.id


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


# ---------------------------------------------------------------- the datasets' own tables
def test_mimic_metadata_csv_gives_views_split_and_labels(tmp_path, salt_file):
    import json

    files = layouts.mimic_tree(tmp_path, with_reports=False)
    layouts.mimic_metadata_csv(tmp_path)  # beside files/, as MIMIC-CXR-JPG ships it
    layouts.mimic_tables(tmp_path)
    out = tmp_path / "dataset"
    art = run(
        IngestConfig(sources=[str(files)], out=str(out), image_size=64, salt_file=str(salt_file))
    )
    assert sorted(art.stats["dataset_tables"]) == [
        "mimic-cxr-2.0.0-chexpert.csv",
        "mimic-cxr-2.0.0-metadata.csv",
        "mimic-cxr-2.0.0-split.csv",
    ]
    rows = _rows(out)
    assert sorted(r["view"] for r in rows) == sorted(layouts.MIMIC_VIEWS)
    assert sorted(r["split"] for r in rows) == ["train"] * 4 + ["val"] * 2
    labels = sorted(json.dumps(json.loads(r["labels"]), sort_keys=True) for r in rows)
    assert labels.count('{"No Finding": 1.0}') == 2
    assert labels.count('{"Consolidation": 1.0, "Pneumonia": -1.0}') == 2
    assert labels.count('{"Cardiomegaly": 1.0, "Edema": -1.0, "Pleural Effusion": 0.0}') == 2


def test_a_glob_source_finds_the_tables_above_its_folder(tmp_path, salt_file):
    """`cxrkit ingest 'files/p1*'` (a quoted glob, as in an array job) reads MIMIC's
    tables like `files/` does: official split, views."""
    files = layouts.mimic_tree(tmp_path, with_reports=False)
    layouts.mimic_metadata_csv(tmp_path)
    layouts.mimic_tables(tmp_path)
    rows = _ingest(tmp_path, salt_file, [files / "p1*"])
    assert sorted(r["view"] for r in rows) == sorted(layouts.MIMIC_VIEWS)
    assert sorted(r["split"] for r in rows) == ["train"] * 4 + ["val"] * 2


def test_a_truncated_gzip_train_csv_is_not_taken_for_a_chexpert_table(tmp_path):
    """find_tables never raises: a `train.csv.gz` cut short (EOFError from gzip) is
    simply not CheXpert's table; its own reader would name the file if it were read."""
    import gzip

    from cxrkit.io.tables import find_tables

    whole = gzip.compress(b"Path,Sex,Frontal/Lateral\n")
    (tmp_path / "train.csv.gz").write_bytes(whole[:15])
    assert find_tables([str(tmp_path)]) == []


def test_chexpert_train_csv_gives_projection_sex_age_and_labels(tmp_path, salt_file):
    import json

    train, csv_rows = layouts.chexpert_tree_from_real_csv(tmp_path, n_rows=5)
    rows = _ingest(tmp_path, salt_file, [train])
    assert len(rows) == 5
    assert len({r["patient_id"] for r in rows}) == 3
    want_views = sorted(
        r["AP/PA"] if r["Frontal/Lateral"] == "Frontal" else "LATERAL" for r in csv_rows
    )
    assert sorted(r["view"] for r in rows) == want_views
    assert sorted(r["sex"] for r in rows) == sorted(r["Sex"][0] for r in csv_rows)
    assert sorted(r["age"] for r in rows) == sorted(float(r["Age"]) for r in csv_rows)
    first = csv_rows[0]  # patient00001/study1: No Finding 1, Pneumothorax 0, Support Devices 1
    want = {k: float(first[k]) for k in ("No Finding", "Pneumothorax", "Support Devices")}
    assert {json.dumps(json.loads(r["labels"]), sort_keys=True) for r in rows} >= {
        json.dumps(want, sort_keys=True)
    }


def test_mapping_csv_view_column_is_stored(tmp_path, salt_file):
    from cxrkit.io.bundled import pediatric_jpegs

    images = [
        layouts._small_copy(p, tmp_path / "img" / f"{i}.png")
        for i, p in enumerate(pediatric_jpegs()[:3])
    ]
    mapping = tmp_path / "map.csv"
    mapping.write_text(
        "image_path,report_text,patient_id,view\n"
        + "".join(
            f"{p},Clear lungs.,P{i},{v}\n"
            for i, (p, v) in enumerate(zip(images, ["pa", "AP", ""], strict=True))
        )
    )
    out = tmp_path / "dataset"
    run(IngestConfig(mapping=str(mapping), out=str(out), image_size=64, salt_file=str(salt_file)))
    assert sorted(r["view"] for r in _rows(out)) == ["AP", "PA", "UNKNOWN"]


# ---------------------------------------------------------------- view filters downstream
def test_training_reads_only_the_chosen_views(tmp_path, salt_file):
    from cxrkit.io.shards import ShardDataset
    from cxrkit.vision.transforms import EvalTransform

    out = tmp_path / "dataset"
    run(
        IngestConfig(
            sources=[str(layouts.chexpert_tree(tmp_path))],
            out=str(out),
            image_size=64,
            salt_file=str(salt_file),
        )
    )
    shards = dataset_shards(open_artifact(out))

    def count(views):
        data = ShardDataset(
            shards, transform=EvalTransform(32), batch_size=1, split=None, views=views, loop=False
        )
        return data.num_samples

    assert count(None) == 6
    assert count(expand_views("frontal")) == 4
    assert count(expand_views("lateral")) == 2
    with pytest.raises(Exception, match="no images in split None with views PA"):
        count(expand_views("PA"))


def test_eval_view_filter_unlabels_other_views(tmp_path, salt_file):
    import numpy as np

    from cxrkit.errors import InputError
    from cxrkit.evaluate.features import read_rows
    from cxrkit.evaluate.runner import _filter_views

    out = tmp_path / "dataset"
    run(
        IngestConfig(
            sources=[str(layouts.chexpert_tree(tmp_path))],
            out=str(out),
            image_size=64,
            salt_file=str(salt_file),
        )
    )
    rows = read_rows(open_artifact(out))
    raw = np.ones((len(rows), 2))
    summary = _filter_views(rows, raw, ["frontal"])
    assert summary["rows_in_views"] == 4
    lateral = [i for i, v in enumerate(rows.views) if v == "LATERAL"]
    assert np.isnan(raw[lateral]).all() and not np.isnan(np.delete(raw, lateral, 0)).any()
    assert all(rows.splits[i] is None for i in lateral)
    with pytest.raises(InputError, match="views in the dataset: FRONTAL, LATERAL"):
        _filter_views(read_rows(open_artifact(out)), np.ones((6, 1)), ["PA"])


def test_iu_report_named_by_a_mapping_csv_groups_its_images(tmp_path, salt_file):
    """A mapping row pointing at an IU XML (no patient_id column) still groups by report."""
    import tarfile

    from cxrkit.io.bundled import iu_reports_archive, pediatric_jpegs

    report = layouts.iu_reports_with_two_images(1)[0]
    xml_dir = tmp_path / "xml"
    xml_dir.mkdir()
    with tarfile.open(iu_reports_archive()) as archive:  # read in place, one file to tmp
        member = next(
            m
            for m in archive.getmembers()
            if m.name.endswith(".xml") and _uid(archive, m) == report.uid
        )
        (xml_dir / "report.xml").write_bytes(archive.extractfile(member).read())
    images = [
        layouts._small_copy(p, tmp_path / "img" / f"scan{i}.png")
        for i, p in enumerate(pediatric_jpegs()[:2])
    ]
    mapping = tmp_path / "map.csv"
    mapping.write_text(
        "image_path,report_path\n" + "".join(f"{p},{xml_dir / 'report.xml'}\n" for p in images)
    )
    out = tmp_path / "dataset"
    run(IngestConfig(mapping=str(mapping), out=str(out), image_size=64, salt_file=str(salt_file)))
    rows = _rows(out)
    assert len(rows) == 2 and len({r["patient_id"] for r in rows}) == 1
    assert len({r["study_id"] for r in rows}) == 1


def _uid(archive, member) -> str | None:
    import re

    text = archive.extractfile(member).read(4096).decode("utf-8", "replace")
    found = re.search(r'<uId id="([^"]+)"', text)
    return found.group(1) if found else None


def test_eval_probe_chooses_c_on_chexperts_valid_folder(tmp_path, salt_file):
    """The linear probe picks C by validation AUROC on CheXpert's valid/ images and scores
    test/ (labelled by a mapping CSV without a split: the folder gives it)."""
    import torch

    from cxrkit.artifacts import ArtifactWriter
    from cxrkit.objectives.base import build_objective
    from cxrkit.objectives.loading import save_objective
    from cxrkit.stages.eval import EvalConfig, metrics_of
    from cxrkit.stages.eval import run as run_eval

    base, images = layouts.chexpert_split_tree(tmp_path)
    mapping = tmp_path / "test_labels.csv"
    mapping.write_text(
        "image_path,report_text,Pneumonia\n"
        + "".join(f"{path},,{float(label)}\n" for path, label in images["test"])
    )
    dataset = tmp_path / "dataset"
    run(
        IngestConfig(
            sources=[str(base / "train"), str(base / "valid")],
            mapping=str(mapping),
            out=str(dataset),
            image_size=64,
            salt_file=str(salt_file),
        )
    )
    assert open_artifact(dataset).stats["split_counts"] == {"train": 8, "val": 4, "test": 4}
    config = {
        "model": {"arch": "vit_tiny_patch16_224", "image_size": 64, "patch_size": 16, "depth": 1},
        **{"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2},
    }
    writer = ArtifactWriter(tmp_path / "ckpt", "checkpoint", {"tiny": config})
    torch.manual_seed(0)
    save_objective(build_objective("mae", config), writer.begin())
    checkpoint = writer.publish().path
    cfg = EvalConfig(
        dataset=str(dataset),
        checkpoint=str(checkpoint),
        out=str(tmp_path / "eval"),
        tasks=["probe"],
        fractions=[1.0],
        seeds=[0],
        bootstrap=20,
        min_count=2,
        cache=False,
        plots=False,
    )
    report = metrics_of(run_eval(cfg))["tasks"]["probe"]["fractions"]["1"]["seeds"]["0"]
    fold = report["train_images"]["folds"][0]
    assert fold["images"] == 8  # train/ only
    pneumonia = fold["classes"]["Pneumonia"]
    assert pneumonia["C_source"].startswith("max validation AUROC")
    assert pneumonia["C"] in cfg.probe_c_grid
    assert report["classes"]["Pneumonia"]["n_pos"] + report["classes"]["Pneumonia"]["n_neg"] == 4


def test_mimic_metadata_study_date_dates_the_jpegs(tmp_path, salt_file):
    import mimic4_support

    from cxrkit.io.deid import load_or_create_salt
    from cxrkit.io.rows import RowBuilder

    files = layouts.mimic_tree(tmp_path, with_reports=False)
    mimic4_support.write_cxr_metadata(tmp_path)  # MIMIC-CXR-JPG's columns, StudyDate included
    rows = _ingest(tmp_path, salt_file, [files])
    pseudo = RowBuilder(salt=load_or_create_salt(salt_file)).pseudonymizer
    want = {
        pseudo.pseudonym("study", study): pseudo.shift_date(
            mimic4_support.STUDY_DATES[study], patient
        )
        for patient, study, _ in layouts.MIMIC_FILES
    }
    assert {r["study_id"]: r["study_date"] for r in rows} == want
    assert None not in want.values()
