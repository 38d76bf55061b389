"""The tables the public datasets ship beside their images: views, official splits, labels.

| file (plain or ``.gz``) | dataset | gives, per image |
|---|---|---|
| ``mimic-cxr-2.0.0-metadata.csv`` | MIMIC-CXR-JPG | view (``ViewPosition``), study date (``StudyDate``), by ``dicom_id`` |
| ``mimic-cxr-2.0.0-split.csv`` | MIMIC-CXR-JPG | official split (``validate`` -> ``val``), by ``dicom_id`` |
| ``mimic-cxr-2.0.0-chexpert.csv`` / ``-negbio.csv`` | MIMIC-CXR-JPG | 14 labels, by ``(subject_id, study_id)`` |
| ``train.csv`` / ``valid.csv`` with ``Path`` and ``Frontal/Lateral`` | CheXpert | view, sex, age, labels, by path |
| ``indiana_projections.csv`` / ``indiana_reports.csv`` | IU (Kaggle) | patient/study, view, report, by file name |
| ``annotation.json`` (R2Gen) | IU (R2Gen ``iu_xray``) | patient/study, official split, report, by path |

:func:`find_tables` looks for them in each source directory and up to two folders
above it (``mimic-cxr-jpg/2.0.0/files`` has them in ``2.0.0/``, ``CheXpert-v1.0-small/train``
in ``CheXpert-v1.0-small/``, Kaggle IU's ``images/images_normalized`` in the folder above
``images/``). :class:`DatasetTables` reads them once and answers
:meth:`DatasetTables.hints_for` per image as a :class:`~cxrkit.io.mapping.MappingRow`
(with a report only for IU), so ingest treats them like a mapping CSV row. MIMIC images are matched
by file stem (``dicom_id``) and study folder, CheXpert images by their last four path
parts (``train/patient00001/study1/view1_frontal.jpg``), IU images as
:mod:`cxrkit.io.iu_tables` says (those rows carry the report and patient/study too).
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from cxrkit.io.iu_tables import IU_TABLES, R2GEN_ANNOTATION, IuTables, is_r2gen_annotation
from cxrkit.io.mapping import MappingRow
from cxrkit.io.table_files import csv_columns, iter_rows
from cxrkit.text.classes import CHEXPERT_CLASSES

MIMIC_METADATA = "mimic-cxr-2.0.0-metadata.csv"
MIMIC_SPLIT = "mimic-cxr-2.0.0-split.csv"
MIMIC_LABELS = {"chexpert": "mimic-cxr-2.0.0-chexpert.csv", "negbio": "mimic-cxr-2.0.0-negbio.csv"}
CHEXPERT_TABLES = ("train.csv", "valid.csv")
_KNOWN = (
    MIMIC_METADATA,
    MIMIC_SPLIT,
    *MIMIC_LABELS.values(),
    *CHEXPERT_TABLES,
    *IU_TABLES,
    R2GEN_ANNOTATION,
)
_SPLITS = {"train": "train", "validate": "val", "val": "val", "valid": "val", "test": "test"}
_SEX = {"male": "M", "female": "F", "m": "M", "f": "F"}
_LOOK_UP = 2  # folders above a source searched for tables


def _is_chexpert_table(path: Path) -> bool:
    return {"Path", "Frontal/Lateral"} <= set(csv_columns(path))


def find_tables(sources: list[str]) -> list[Path]:
    """The known dataset tables in each source directory and up to two folders above it.

    Takes the ingest sources (a glob from the folder before its first pattern part:
    ``files/p1*`` from ``files/``). Returns the tables found, sorted, each
    once; CheXpert ``train.csv``/``valid.csv`` only when the header has ``Path`` and
    ``Frontal/Lateral``, ``annotation.json`` only when it starts as R2Gen's does.
    Never raises.
    """
    found: set[Path] = set()
    for source in sources:
        if any(ch in source for ch in "*?["):  # a glob: from the folder its pattern starts in
            parts = Path(os.path.expanduser(source)).parts
            plain = list(itertools.takewhile(lambda p: not any(c in p for c in "*?["), parts))
            source = str(Path(*plain)) if plain else "."
        folder = Path(os.path.expanduser(source)).resolve()
        if not folder.is_dir():
            folder = folder.parent
        for directory in [folder, *list(folder.parents)[:_LOOK_UP]]:
            for name in _KNOWN:
                for candidate in (directory / name, directory / f"{name}.gz"):
                    if candidate.is_file() and _is_known_table(name, candidate):
                        found.add(candidate)
    return sorted(found)


def _is_known_table(name: str, path: Path) -> bool:
    if name in CHEXPERT_TABLES:
        return _is_chexpert_table(path)
    if name == R2GEN_ANNOTATION:
        return path.suffix != ".gz" and is_r2gen_annotation(path)
    return True


def _label_value(text: str | None) -> float | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value in (1.0, 0.0, -1.0) else None


def _labels(row: dict[str, str]) -> dict[str, float]:
    return {
        name: value
        for name in CHEXPERT_CLASSES
        if (value := _label_value(row.get(name))) is not None
    }


def _base(name: str) -> str:
    return name[:-3] if name.endswith(".gz") else name


@dataclass
class DatasetTables:
    """What the dataset's own tables say about each image (see the module docstring)."""

    paths: list[Path] = field(default_factory=list)
    mimic_views: dict[str, str] = field(default_factory=dict)  # dicom_id -> PA / AP / LATERAL
    mimic_dates: dict[str, str] = field(default_factory=dict)  # dicom_id -> StudyDate YYYYMMDD
    mimic_splits: dict[str, str] = field(default_factory=dict)  # dicom_id -> train / val / test
    mimic_labels: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    chexpert: dict[str, dict] = field(default_factory=dict)  # "train/patientN/studyM/view" -> hints
    iu: IuTables = field(default_factory=IuTables)  # Kaggle / R2Gen IU tables

    @classmethod
    def read(cls, paths: list[Path], mimic_labels: str = "chexpert") -> DatasetTables:
        """Read the tables :func:`find_tables` found.

        ``mimic_labels`` picks the MIMIC labeler (``chexpert`` or ``negbio``); the other
        file is used only when the chosen one is absent. Raises InputError for a table
        that cannot be read or lacks its key columns.
        """
        tables = cls()
        by_name = {_base(p.name): p for p in paths}
        wanted = MIMIC_LABELS[mimic_labels]
        other = MIMIC_LABELS["negbio" if mimic_labels == "chexpert" else "chexpert"]
        label_file = by_name.get(wanted) or by_name.get(other)
        if (path := by_name.get(MIMIC_METADATA)) is not None:
            tables._read_mimic_metadata(path)
        if (path := by_name.get(MIMIC_SPLIT)) is not None:
            tables._read_mimic_split(path)
        if label_file is not None:
            tables._read_mimic_labels(label_file)
        for path in paths:
            if _base(path.name) in CHEXPERT_TABLES:
                tables._read_chexpert(path)
        tables.iu = IuTables.read(paths)
        tables.paths += tables.iu.paths
        return tables

    def _read_mimic_metadata(self, path: Path) -> None:
        self.paths.append(path)
        for row in iter_rows(path, ("dicom_id", "ViewPosition")):
            view = (row.get("ViewPosition") or "").strip().upper()
            if view:
                self.mimic_views[row["dicom_id"].strip()] = view
            # a JPEG has no header: the table's date is the study's (pairing with ECGs
            # and labs needs it)
            date = (row.get("StudyDate") or "").strip()
            if date.isdigit() and len(date) == 8:
                self.mimic_dates[row["dicom_id"].strip()] = date

    def _read_mimic_split(self, path: Path) -> None:
        self.paths.append(path)
        for row in iter_rows(path, ("dicom_id", "split")):
            split = _SPLITS.get((row.get("split") or "").strip().lower())
            if split:
                self.mimic_splits[row["dicom_id"].strip()] = split

    def _read_mimic_labels(self, path: Path) -> None:
        self.paths.append(path)
        for row in iter_rows(path, ("subject_id", "study_id")):
            key = (f"p{row['subject_id'].strip()}", f"s{row['study_id'].strip()}")
            self.mimic_labels[key] = _labels(row)

    def _read_chexpert(self, path: Path) -> None:
        self.paths.append(path)
        for row in iter_rows(path, ("Path", "Frontal/Lateral")):
            parts = [p for p in row["Path"].strip().replace("\\", "/").split("/") if p]
            if len(parts) < 4:
                continue
            frontal = (row.get("Frontal/Lateral") or "").strip().lower() == "frontal"
            projection = (row.get("AP/PA") or "").strip().upper()
            view = (
                (projection if projection in ("AP", "PA") else "FRONTAL") if frontal else "LATERAL"
            )
            try:
                age = float(row.get("Age") or "nan")
            except ValueError:
                age = math.nan
            self.chexpert["/".join(parts[-4:]).lower()] = {
                "view": view,
                "sex": _SEX.get((row.get("Sex") or "").strip().lower()),
                "age": None if math.isnan(age) or age <= 0 else age,
                "labels": _labels(row),
            }

    def __bool__(self) -> bool:
        return bool(self.paths)

    def hints_for(self, image: Path) -> MappingRow | None:
        """What the tables say about one image, as a mapping row (with the report for an
        IU image); None if nothing."""
        parts = image.parts
        if self.chexpert and len(parts) >= 4:
            hint = self.chexpert.get("/".join(parts[-4:]).lower())
            if hint is not None:
                return MappingRow(
                    image_path=image, report_path=None, report_text=None, study_id=None,
                    patient_id=None, split=None, labels=hint["labels"], view=hint["view"],
                    sex=hint["sex"], age=hint["age"],
                )  # fmt: skip
        if self.iu and (iu := self.iu.for_image(image)) is not None:
            return MappingRow(
                image_path=image, report_path=None, report_text=None, study_id=iu.key,
                patient_id=iu.key, split=iu.split, labels={}, view=iu.view, report=iu.report,
            )  # fmt: skip
        dicom_id = image.stem
        view = self.mimic_views.get(dicom_id)
        split = self.mimic_splits.get(dicom_id)
        date = self.mimic_dates.get(dicom_id)
        labels = self.mimic_labels.get(parts[-3:-1] if len(parts) >= 3 else ("", ""), {})
        if view is None and split is None and date is None and not labels:
            return None
        return MappingRow(
            image_path=image, report_path=None, report_text=None, study_id=None,
            patient_id=None, split=split, labels=labels, view=view, study_date=date,
        )  # fmt: skip
