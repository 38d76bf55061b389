"""Evaluation labels: from the dataset, an annotations artifact, or a public label file.

Every source ends as a :class:`LabelTable` aligned to the dataset's rows:
``values`` (N, C) float with 1 positive, 0 negative, -1 uncertain, NaN unknown.

Public label files (``--labels FILE --labels-format nih|chexpert|mimic|rsna|siim|padchest``)
are matched to images by file name (MIMIC-CXR-JPG's ``mimic-cxr-2.0.0-chexpert.csv`` /
``-negbio.csv`` label studies, so those match the ``pNNN/sNNN`` study folder). That needs the dataset to keep its source
paths (``cxrkit ingest --keep-paths``); otherwise ``source_path`` is a salted hash
and nothing can match. Matching compares path endings without the extension,
case-insensitively: the file name first, then as many parent folders as it takes to
be unique (CheXpert names every image ``view1_frontal.jpg``).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from cxrkit.errors import ConfigError, InputError

MAX_SUFFIX_PARTS = 4


@dataclass
class LabelTable:
    """Labels aligned to dataset rows. ``patients`` is set when the label file knows them."""

    classes: list[str]
    values: np.ndarray  # (N, C) float: 1 / 0 / -1 / NaN
    source: str
    patients: list[str | None] | None = None
    matched: int = 0


@dataclass
class LabelFile:
    """A parsed public label file: one row per image key."""

    classes: list[str]
    keys: list[str]
    values: np.ndarray  # (M, C)
    patients: list[str | None] | None = None
    study_level: bool = False  # keys name study folders (MIMIC), not image files


def binarise(values: np.ndarray, uncertain: str) -> np.ndarray:
    """Map -1 (uncertain) by policy: "ignore" -> NaN, "positive" -> 1, "negative" -> 0."""
    out = np.array(values, dtype=np.float64, copy=True)
    replacement = {"ignore": np.nan, "positive": 1.0, "negative": 0.0}
    if uncertain not in replacement:
        raise ConfigError(f"uncertain = {uncertain!r}: use ignore, positive or negative")
    out[out == -1] = replacement[uncertain]
    return out


def from_dataset_column(labels_json: Sequence[str | None]) -> LabelTable:
    """Labels from the dataset's ``labels`` column (JSON {class: 1/0/-1} or null per row)."""
    parsed = [json.loads(text) if text else {} for text in labels_json]
    classes = sorted({name for row in parsed for name in row})
    values = np.full((len(parsed), len(classes)), np.nan)
    for i, row in enumerate(parsed):
        for j, name in enumerate(classes):
            if row.get(name) is not None:
                values[i, j] = float(row[name])
    matched = int(np.sum(~np.all(np.isnan(values), axis=1))) if classes else 0
    return LabelTable(classes, values, "dataset labels column", matched=matched)


def from_annotations(annotations_dir: Path, image_ids: Sequence[str]) -> LabelTable:
    """Report-derived labels from an annotations artifact, aligned to ``image_ids``."""
    from cxrkit.io.annotations import AnnotationIndex
    from cxrkit.text.classes import CHEXPERT_CLASSES

    by_id = AnnotationIndex(annotations_dir, ["labels"])
    values = np.full((len(image_ids), len(CHEXPERT_CLASSES)), np.nan)
    matched = 0
    for i, row in enumerate(by_id.rows(list(image_ids))):
        if row is not None:
            values[i] = np.asarray(row["labels"], dtype=np.float64)
            matched += 1
    return LabelTable(
        list(CHEXPERT_CLASSES), values, f"annotations {annotations_dir}", None, matched
    )


# ------------------------------------------------------------------ public label files
def _key_parts(path: str) -> list[str]:
    parts = [p for p in re.split(r"[\\/]", path.strip().lower()) if p]
    if parts:
        stem, dot, ext = parts[-1].rpartition(".")
        if dot and ext in ("png", "jpg", "jpeg", "dcm", "dicom"):
            parts[-1] = stem
    return parts


def _csv_source(path: Path) -> tuple[str | bytes, str]:
    """The CSV as a path (plain or .gz) or as bytes (first .csv in a .zip), plus its header line."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(".csv")]
            if not names:
                raise InputError(f"{path}: no .csv inside the zip")
            data = archive.read(names[0])
        return data, data.split(b"\n", 1)[0].decode("utf-8-sig")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig") as handle:
        return str(path), handle.readline()


def _read_csv(path: Path, columns: Sequence[str], floats: Sequence[str] = ()) -> pa.Table:
    """Read the named columns (header names compared without surrounding spaces).

    Columns in ``floats`` are parsed as numbers (blank = null), the rest as strings.
    Raises InputError when the file is unreadable or lacks a column.
    """
    try:
        source, header_line = _csv_source(path)
        header = next(csv.reader([header_line]))
        by_name = {name.strip(): name for name in header}
        missing = [c for c in columns if c not in by_name]
        if missing:
            raise InputError(
                f"{path}: missing column(s) {', '.join(missing)}; is --labels-format right?"
            )
        real = [by_name[c] for c in columns]
        types = {by_name[c]: (pa.float64() if c in floats else pa.string()) for c in columns}
        table = pacsv.read_csv(
            io.BytesIO(source) if isinstance(source, bytes) else source,
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(include_columns=real, column_types=types),
        )
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: cannot read as a label CSV ({exc})") from exc
    return table.select(real).rename_columns(list(columns))


def _float_column(table: pa.Table, name: str) -> np.ndarray:
    return pc.fill_null(table.column(name), float("nan")).to_numpy().astype(np.float64)


def _collapse(
    keys: Sequence[str], values: np.ndarray, classes: Sequence[str], patients=None
) -> LabelFile:
    """One row per key; repeated keys (RSNA/SIIM list one row per box) take the max label."""
    if len(set(keys)) == len(keys):  # the common case: nothing to collapse
        return LabelFile(list(classes), list(keys), values, list(patients) if patients else None)
    unique, first, inverse = np.unique(
        np.asarray(keys, dtype=object).astype(str), return_index=True, return_inverse=True
    )
    order = np.argsort(first, kind="stable")  # keep the file's order
    collapsed = np.full((unique.size, len(classes)), np.nan)
    np.fmax.at(collapsed, inverse, values)
    patient_list = None
    if patients is not None:
        patient_list = [patients[i] for i in first[order]]
    return LabelFile(list(classes), unique[order].tolist(), collapsed[order], patient_list)


def read_nih(path: Path) -> LabelFile:
    """NIH ChestX-ray14 ``Data_Entry`` CSV: pipe-separated "Finding Labels", all definite."""
    table = _read_csv(path, ["Image Index", "Finding Labels", "Patient ID"])
    encoded = pc.dictionary_encode(table.column(1)).combine_chunks()  # ~800 distinct lists
    lists = [set((text or "").split("|")) - {""} for text in encoded.dictionary.to_pylist()]
    classes = sorted(set().union(*lists))
    per_list = np.array([[float(c in found) for c in classes] for found in lists])
    values = per_list[pc.fill_null(encoded.indices, 0).to_numpy()]
    return _collapse(table.column(0).to_pylist(), values, classes, table.column(2).to_pylist())


def read_chexpert(path: Path) -> LabelFile:
    """CheXpert CSV: "Path" plus one column per class from "No Finding" on; 1/0/-1, blank unknown."""
    header = next(csv.reader([_csv_source(Path(path))[1]]))
    names = [h.strip() for h in header]
    if "No Finding" not in names:
        raise InputError(f"{path}: no 'No Finding' column; is --labels-format chexpert right?")
    classes = names[names.index("No Finding") :]
    table = _read_csv(path, ["Path", *classes], floats=classes)
    values = np.column_stack([_float_column(table, c) for c in classes])
    paths = table.column(0).to_pylist()
    found = pc.extract_regex(table.column(0), r"(?P<patient>patient\d+)")
    patients = pc.struct_field(found, "patient").to_pylist()  # null where no match
    return _collapse(paths, values, classes, patients)


def read_mimic(path: Path) -> LabelFile:
    """MIMIC-CXR-JPG ``mimic-cxr-2.0.0-chexpert.csv`` or ``-negbio.csv``: one row per study
    (``subject_id``, ``study_id``), 14 classes, 1/0/-1, blank unknown. Keys are the study
    folders ``p<subject_id>/s<study_id>``; every image of a study gets its labels."""
    header = next(csv.reader([_csv_source(Path(path))[1]]))
    names = [h.strip() for h in header]
    if "subject_id" not in names or "study_id" not in names:
        raise InputError(
            f"{path}: no subject_id/study_id columns; is --labels-format mimic right? "
            "(it reads mimic-cxr-2.0.0-chexpert.csv or -negbio.csv)"
        )
    classes = [n for n in names if n not in ("subject_id", "study_id")]
    table = _read_csv(path, ["subject_id", "study_id", *classes], floats=classes)
    values = np.column_stack([_float_column(table, c) for c in classes])
    subjects = [str(s).strip() for s in table.column(0).to_pylist()]
    studies = [str(s).strip() for s in table.column(1).to_pylist()]
    keys = [f"p{a}/s{b}" for a, b in zip(subjects, studies, strict=True)]
    label_file = _collapse(keys, values, classes, [f"p{a}" for a in subjects])
    label_file.study_level = True
    return label_file


def read_rsna(path: Path) -> LabelFile:
    """RSNA Pneumonia Detection ``stage_2_train_labels`` (one row per box): Target -> Pneumonia."""
    table = _read_csv(path, ["patientId", "Target"], floats=["Target"])
    keys = table.column(0).to_pylist()
    return _collapse(keys, _float_column(table, "Target")[:, None], ["Pneumonia"], keys)


def read_siim(path: Path) -> LabelFile:
    """SIIM-ACR pneumothorax RLE CSV: "-1" = no pneumothorax, any mask = positive."""
    table = _read_csv(path, ["ImageId", "EncodedPixels"])
    positive = [(rle or "").strip() not in ("-1", "") for rle in table.column(1).to_pylist()]
    values = np.asarray(positive, dtype=np.float64)[:, None]
    return _collapse(table.column(0).to_pylist(), values, ["Pneumothorax"])


# PadChest's radiologist vocabulary, folded onto the CheXpert classes it maps to
# unambiguously. PadChest lists every finding of a report, so absence is negative.
PADCHEST_MAP: dict[str, Callable[[str], bool]] = {
    "No Finding": lambda t: t == "normal",
    "Cardiomegaly": lambda t: t == "cardiomegaly",
    "Pleural Effusion": lambda t: t in ("pleural effusion", "loculated pleural effusion"),
    "Pneumonia": lambda t: t in ("pneumonia", "atypical pneumonia"),
    "Atelectasis": lambda t: "atelectasis" in t,
    "Consolidation": lambda t: t == "consolidation",
    "Edema": lambda t: t == "pulmonary edema",
    "Pneumothorax": lambda t: t in ("pneumothorax", "hydropneumothorax"),
    "Lung Lesion": lambda t: t in ("nodule", "multiple nodules", "pulmonary mass", "mass"),
    "Fracture": lambda t: t.endswith("fracture"),
    "Enlarged Cardiomediastinum": lambda t: t.endswith("mediastinal enlargement"),
    "Pleural Other": lambda t: t.endswith("pleural thickening"),
    "Support Devices": lambda t: any(w in t for w in ("tube", "catheter", "device", "pacemaker")),
}


def read_padchest(path: Path) -> LabelFile:
    """PadChest CSV: "Labels" is a list literal of findings; rows without labels stay unknown."""
    table = _read_csv(path, ["ImageID", "PatientID", "Labels"])
    classes = list(PADCHEST_MAP)
    # ~160k rows hold far fewer distinct label lists: classify each distinct list once
    encoded = pc.dictionary_encode(table.column(2)).combine_chunks()
    per_list = np.full((len(encoded.dictionary) + 1, len(classes)), np.nan)  # last row: null
    for i, text in enumerate(encoded.dictionary.to_pylist()):
        terms = [t.strip() for t in re.findall(r"'([^']*)'", text or "") if t.strip()]
        if terms:
            per_list[i] = [float(any(map(PADCHEST_MAP[c], terms))) for c in classes]
    index = pc.fill_null(encoded.indices, len(encoded.dictionary)).to_numpy()
    values = per_list[index]
    return _collapse(table.column(0).to_pylist(), values, classes, table.column(1).to_pylist())


LABEL_FORMATS: dict[str, Callable[[Path], LabelFile]] = {
    "nih": read_nih,
    "chexpert": read_chexpert,
    "mimic": read_mimic,
    "rsna": read_rsna,
    "siim": read_siim,
    "padchest": read_padchest,
}


def read_label_file(path: Path, fmt: str) -> LabelFile:
    """Parse a public label file. Raises ConfigError for an unknown format, InputError if unreadable."""
    if fmt not in LABEL_FORMATS:
        raise ConfigError(f"--labels-format {fmt!r}: use one of {', '.join(LABEL_FORMATS)}")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: label file not found")
    return LABEL_FORMATS[fmt](path)


def match_by_name(
    label_file: LabelFile, source_paths: Sequence[str | None], what: str
) -> LabelTable:
    """Align a label file to dataset rows by path ending (see module docstring).

    Raises InputError when no row matches, naming ``--keep-paths`` as the usual cause.
    """
    index: dict[tuple[str, ...], int] = {}
    for row, key in enumerate(label_file.keys):
        parts = _key_parts(key)
        for k in range(1, min(len(parts), MAX_SUFFIX_PARTS) + 1):
            suffix = tuple(parts[-k:])
            index[suffix] = -1 if suffix in index and index[suffix] != row else row
    values = np.full((len(source_paths), len(label_file.classes)), np.nan)
    patients: list[str | None] = [None] * len(source_paths)
    matched = 0
    for i, source in enumerate(source_paths):
        parts = _key_parts(source or "")
        if label_file.study_level:
            parts = parts[:-1]  # the study folder names the labels, not the file
        for k in range(1, min(len(parts), MAX_SUFFIX_PARTS) + 1):
            row = index.get(tuple(parts[-k:]))
            if row is not None and row >= 0:
                values[i] = label_file.values[row]
                if label_file.patients is not None:
                    patients[i] = label_file.patients[row]
                matched += 1
                break
    if matched == 0:
        raise InputError(
            f"{what}: no dataset image matched a label row by file name. Matching needs the "
            "source paths: re-run `cxrkit ingest --keep-paths` (without it source_path is a "
            "salted hash), and check the label file belongs to these images."
        )
    has_patients = label_file.patients is not None
    return LabelTable(label_file.classes, values, what, patients if has_patients else None, matched)
