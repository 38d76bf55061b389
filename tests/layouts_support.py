"""Real images arranged exactly as the public datasets ship them (for the layout tests).

Pixels are the real pediatric JPEGs (pneumonia-model-package) and the real adult DICOM
(pydicom-data); reports are real Indiana University reports (torchxrayvision), read in
place. The pairing of images with reports is for plumbing, not medicine.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

from PIL import Image

from cxrkit.io.bundled import iu_reports_archive, pediatric_jpegs
from cxrkit.io.reports import iter_iu_reports


def _small_copy(source: Path, target: Path, size: int = 256) -> Path:
    """Save a downscaled copy of a real JPEG at ``target`` (format from its suffix)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    image = Image.open(source).convert("L")
    image.thumbnail((size, size))
    image.save(target)
    return target


def iu_reports_with_two_images(count: int) -> list:
    """The first ``count`` IU reports that list exactly two images (frontal + lateral)."""
    reports = (r for r in iter_iu_reports(iu_reports_archive()) if len(r.images) == 2)
    return list(itertools.islice(reports, count))


def iu_tree(root: Path, n_reports: int = 8) -> Path:
    """``NLMCXR_png/<parentImage id>.png`` for the two images of ``n_reports`` real reports."""
    folder = root / "NLMCXR_png"
    jpegs = itertools.cycle(pediatric_jpegs())
    for report in iu_reports_with_two_images(n_reports):
        for image_id in report.images:
            _small_copy(next(jpegs), folder / f"{image_id}.png")
    return folder


# (patient folder, study folder, file name) of a CheXpert-v1.0-small style tree.
CHEXPERT_FILES = (
    ("patient00001", "study1", "view1_frontal.jpg"),
    ("patient00001", "study2", "view1_frontal.jpg"),
    ("patient00002", "study1", "view1_frontal.jpg"),
    ("patient00002", "study1", "view2_lateral.jpg"),
    ("patient00003", "study1", "view1_frontal.jpg"),
    ("patient00003", "study1", "view2_lateral.jpg"),
)


def chexpert_tree(root: Path) -> Path:
    """``CheXpert-v1.0-small/train/patientN/studyM/viewK_*.jpg``: 3 patients, 6 images."""
    base = root / "CheXpert-v1.0-small"
    for source, (patient, study, name) in zip(pediatric_jpegs(), CHEXPERT_FILES, strict=False):
        _small_copy(source, base / "train" / patient / study / name)
    return base


# (patient, study, dicom_id) of a MIMIC-CXR-JPG style tree: 2 patients, 3 studies, 6 images.
MIMIC_FILES = (
    ("p10000032", "s50414267", "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"),
    ("p10000032", "s50414267", "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962"),
    ("p10000032", "s53189527", "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab"),
    ("p10000032", "s53189527", "e084de3b-be89b11e-20fe3f9f-9c8d8dfe-4cfd202c"),
    ("p10000764", "s57375967", "096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4"),
    ("p10000764", "s57375967", "b79e55c3-735ce5ac-64412506-cdc9ea79-f1af521f"),
)
MIMIC_VIEWS = ("PA", "LATERAL", "AP", "LATERAL", "PA", "LL")


def mimic_tree(root: Path, with_reports: bool = True) -> Path:
    """``files/p10/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg`` plus (optionally) the study reports
    beside the study folders (``files/p10/pNNNNNNNN/sNNNNNNNN.txt``, real IU report text)."""
    files = root / "files"
    reports = iter(iu_reports_with_two_images(3))
    written: set[str] = set()
    for source, (patient, study, dicom_id) in zip(pediatric_jpegs(), MIMIC_FILES, strict=False):
        _small_copy(source, files / patient[:3] / patient / study / f"{dicom_id}.jpg")
        if with_reports and study not in written:
            report = next(reports)
            text = (
                f"FINAL REPORT\n\nFINDINGS: {report.findings}\n\nIMPRESSION: {report.impression}\n"
            )
            (files / patient[:3] / patient / f"{study}.txt").write_text(text)
            written.add(study)
    return files


def mimic_metadata_csv(root: Path) -> Path:
    """``mimic-cxr-2.0.0-metadata.csv`` for :data:`MIMIC_FILES` (ViewPosition per dicom_id)."""
    path = root / "mimic-cxr-2.0.0-metadata.csv"
    lines = ["dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition"]
    for (patient, study, dicom_id), view in zip(MIMIC_FILES, MIMIC_VIEWS, strict=True):
        lines.append(f"{dicom_id},{patient[1:]},{study[1:]},CHEST (PA AND LAT),{view}")
    path.write_text("\n".join(lines) + "\n")
    return path


def copy_dicom(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def chexpert_tree_from_real_csv(root: Path, n_rows: int = 5) -> tuple[Path, list[dict]]:
    """A CheXpert tree for the first ``n_rows`` rows of CheXpert's real ``train.csv``
    (torchxrayvision), with those rows written as ``CheXpert-v1.0-small/train.csv``.

    Returns (the ``train`` folder, the CSV rows used)."""
    import csv
    import gzip

    from cxrkit.io.bundled import chexpert_train_csv

    with gzip.open(chexpert_train_csv(), "rt", newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames
        rows = list(itertools.islice(reader, n_rows))
    base = root / "CheXpert-v1.0-small"
    for source, row in zip(pediatric_jpegs(), rows, strict=False):
        _small_copy(source, root / row["Path"])
    base.mkdir(parents=True, exist_ok=True)
    with (base / "train.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return base / "train", rows


def chexpert_split_tree(root: Path) -> tuple[Path, dict[str, list[tuple[Path, int]]]]:
    """CheXpert as it ships its split: ``CheXpert-v1.0-small/{train,valid,test}/patientN/
    study1/view1_frontal.jpg`` holding all 16 real pediatric JPEGs (train 4 normal + 4
    pneumonia, valid 2 + 2, test 2 + 2; one patient each), with ``train.csv`` and
    ``valid.csv`` in the real ``train.csv``'s columns carrying each image's real label
    (Pneumonia 1/0 from the file name). The test images get no CSV (CheXpert's test
    labels ship apart). Returns (the ``CheXpert-v1.0-small`` folder, ``{folder: [(image,
    pneumonia label)]}``)."""
    import csv
    import gzip

    from cxrkit.io.bundled import chexpert_train_csv, pediatric_label

    with gzip.open(chexpert_train_csv(), "rt", newline="") as handle:
        header = csv.DictReader(handle).fieldnames
    jpegs = pediatric_jpegs()
    by_label = {v: [p for p in jpegs if pediatric_label(p) == v] for v in (0, 1)}
    counts = {"train": 4, "valid": 2, "test": 2}
    first_patient = {"train": 1, "valid": 64541, "test": 64741}  # CheXpert's own numbering
    base = root / "CheXpert-v1.0-small"
    images: dict[str, list[tuple[Path, int]]] = {}
    for folder, n in counts.items():
        sources = [by_label[v].pop(0) for v in (0, 1) for _ in range(n)]
        rows = []
        for i, source in enumerate(sources):
            rel = f"{folder}/patient{first_patient[folder] + i:05d}/study1/view1_frontal.jpg"
            label = pediatric_label(source)
            images.setdefault(folder, []).append((_small_copy(source, base / rel), label))
            row = dict.fromkeys(header, "")
            row.update(
                {"Path": f"{base.name}/{rel}", "Sex": "Female", "Age": "50",
                 "Frontal/Lateral": "Frontal", "AP/PA": "PA",
                 "Pneumonia": f"{float(label)}"}
            )  # fmt: skip
            rows.append(row)
        if folder != "test":
            with (base / f"{folder}.csv").open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=header)
                writer.writeheader()
                writer.writerows(rows)
    return base, images


def mimic_tables(root: Path) -> dict[str, Path]:
    """MIMIC-CXR-JPG's split and chexpert label CSVs for :data:`MIMIC_FILES`, in the real
    column layout (values chosen for the test: one study per label pattern)."""
    split = root / "mimic-cxr-2.0.0-split.csv"
    lines = ["dicom_id,study_id,subject_id,split"]
    for (patient, study, dicom_id), name in zip(
        MIMIC_FILES, ("train", "train", "train", "train", "validate", "validate"), strict=True
    ):
        lines.append(f"{dicom_id},{study[1:]},{patient[1:]},{name}")
    split.write_text("\n".join(lines) + "\n")
    labels = root / "mimic-cxr-2.0.0-chexpert.csv"
    header = (
        "subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,"
        "Enlarged Cardiomediastinum,Fracture,Lung Lesion,Lung Opacity,No Finding,"
        "Pleural Effusion,Pleural Other,Pneumonia,Pneumothorax,Support Devices"
    )
    labels.write_text(
        header + "\n"
        "10000032,50414267,,,,,,,,,1.0,,,,,\n"
        "10000032,53189527,,1.0,,-1.0,,,,,,0.0,,,,\n"
        "10000764,57375967,,,1.0,,,,,,,,,-1.0,,\n"
    )
    return {"split": split, "labels": labels}
