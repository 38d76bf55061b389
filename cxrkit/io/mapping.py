"""Mapping CSVs: one row per image pairing it with a report, ids, a split and labels.

The CSV is how users bring their own dataset to ``cxrkit ingest`` (see
:func:`read_mapping_csv` for the columns). Reports named by a row are parsed with
:mod:`cxrkit.io.reports`; label columns are read as CheXpert-style 1 / 0 / -1.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from cxrkit.errors import InputError, Reject
from cxrkit.io.reports import (
    Report,
    check_report_file,
    parse_iu_xml,
    parse_report_text,
    read_report_file,
)
from cxrkit.text.classes import CHEXPERT_CLASSES

# Column spellings from other label sets (NIH, older CheXpert) that mean the same class.
_LABEL_ALIASES = {"effusion": "Pleural Effusion", "airspace opacity": "Lung Opacity"}
_LABEL_COLUMNS = {c.lower(): c for c in CHEXPERT_CLASSES} | _LABEL_ALIASES
_SPLITS = {"train", "val", "test"}
_BLANK = {"", "nan", "na", "none", "null"}


def _label_key(column: str) -> str | None:
    return _LABEL_COLUMNS.get(" ".join(column.replace("_", " ").replace("-", " ").lower().split()))


@dataclass
class MappingRow:
    """One row of a mapping CSV: an image, its report (path or text), ids, split, labels."""

    image_path: Path
    report_path: Path | None
    report_text: str | None
    study_id: str | None
    patient_id: str | None
    split: str | None
    labels: dict[str, float]  # CheXpert class -> 1.0 / 0.0 / -1.0; absent = not given
    line: int = 0  # line of the CSV this row came from
    duplicate_of: int | None = None  # set by ingest: an earlier line names the same image
    view: str | None = None  # PA / AP / LATERAL / FRONTAL ... (upper case); None = not given
    sex: str | None = None  # M / F, from a dataset's own table (CheXpert CSV)
    age: float | None = None  # years, from a dataset's own table (CheXpert CSV)
    study_date: str | None = None  # YYYYMMDD, from a dataset's own table (MIMIC-CXR-JPG metadata)
    report: Report | None = None  # already parsed, from a dataset's own table (IU Kaggle CSV)

    def load_report(self) -> Report | None:
        """The row's report: the parsed one a dataset table gave (its own source), else
        from its text or file (``source="mapping"``); None if it has none.

        Raises:
            Reject: the report file is missing or unreadable (``report_unreadable``).
        """
        if self.report is not None:
            return self.report
        if self.report_text:
            return parse_report_text(self.report_text, source="mapping")
        if self.report_path is None:
            return None
        if self.report_path.suffix.lower() == ".xml":
            check_report_file(self.report_path)
            try:
                report = parse_iu_xml(self.report_path)
            except InputError as exc:
                raise Reject("report_unreadable", "unparseable IU XML report") from exc
            return dataclasses.replace(report, source="mapping")
        text = read_report_file(self.report_path)
        return parse_report_text(text, source="mapping", uid=self.report_path.stem)


def _cell(row: dict[str, str | None], column: str | None) -> str | None:
    value = row.get(column) if column else None
    value = value.strip() if value else ""
    return None if value.lower() in _BLANK else value


def _resolve(base: Path, value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def read_mapping_csv(path: str | Path) -> list[MappingRow]:
    """Read a mapping CSV that pairs images with reports, ids, splits and labels.

    Header: ``image_path`` plus ``report_path`` and/or ``report_text`` (required);
    optional ``study_id``, ``patient_id``, ``view`` (PA, AP, LATERAL, ...; the DICOM
    ViewPosition spelling), ``split`` (train/val/test or blank) and any
    CheXpert class column (case-insensitive, ``_`` = space; values 1/0/-1, blank = absent).
    Relative paths are resolved against the CSV's directory. Other columns are ignored.
    Raises:
        InputError: unreadable CSV, missing required columns, a bad row (named by line), or
            a ``patient_id`` given two different ``split`` values (patient leakage between
            train / val / test; the message counts the patients and names the first).
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = {name.strip().lower(): name for name in reader.fieldnames or []}
            _check_header(path, columns)
            labels = {c: key for c in (reader.fieldnames or []) if (key := _label_key(c))}
            rows = [_mapping_row(path, reader.line_num, row, columns, labels) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read mapping CSV {path}: {exc}") from exc
    _check_patient_splits(path, rows)
    return rows


def _check_patient_splits(path: Path, rows: list[MappingRow]) -> None:
    """InputError when one patient_id has rows in two splits (never silent leakage)."""
    splits: dict[str, set[str]] = {}
    for row in rows:
        if row.patient_id is not None and row.split is not None:
            splits.setdefault(row.patient_id, set()).add(row.split)
    mixed = [patient for patient, names in splits.items() if len(names) > 1]
    if mixed:
        first = mixed[0]
        raise InputError(
            f"mapping CSV {path}: {len(mixed)} patient(s) appear in more than one split "
            f"(e.g. patient_id {first!r} in {', '.join(sorted(splits[first]))}); images of "
            "one patient must share a split, or train and test leak into each other"
        )


def _check_header(path: Path, columns: dict[str, str]) -> None:
    if not columns:
        raise InputError(f"mapping CSV {path} is empty: it needs a header row")
    missing = [] if "image_path" in columns else ["image_path"]
    if not {"report_path", "report_text"} & columns.keys():
        missing.append("report_path or report_text")
    if missing:
        raise InputError(
            f"mapping CSV {path} lacks the column(s) {', '.join(missing)}; "
            f"its header has: {', '.join(columns.values())}"
        )


def _mapping_row(
    path: Path,
    line: int,
    row: dict[str, str | None],
    columns: dict[str, str],
    label_columns: dict[str, str],
) -> MappingRow:
    where = f"{path}:{line}"
    if None in row:
        raise InputError(f"{where}: more fields than the header has (unquoted comma?)")
    image = _cell(row, columns["image_path"])
    if image is None:
        raise InputError(f"{where}: image_path is empty")
    split = _cell(row, columns.get("split"))
    if split is not None and split.lower() not in _SPLITS:
        raise InputError(f"{where}: split {split!r} is not one of train, val, test (or blank)")
    labels: dict[str, float] = {}
    for column, key in label_columns.items():
        value = _cell(row, column)
        if value is None:
            continue
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if number not in (1.0, 0.0, -1.0):
            raise InputError(f"{where}: label {column}={value!r} must be 1, 0, -1 or blank")
        labels[key] = number
    base = path.parent
    return MappingRow(
        image_path=_resolve(base, image),
        report_path=_resolve(base, _cell(row, columns.get("report_path"))),
        report_text=_cell(row, columns.get("report_text")),
        study_id=_cell(row, columns.get("study_id")),
        patient_id=_cell(row, columns.get("patient_id")),
        split=split.lower() if split else None,
        labels=labels,
        line=line,
        view=view.upper() if (view := _cell(row, columns.get("view"))) else None,
    )
