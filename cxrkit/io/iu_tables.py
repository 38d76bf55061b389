"""The Indiana University (IU) chest X-ray collection as its two common re-distributions ship it.

- Kaggle "Chest X-rays (Indiana University)": ``images/images_normalized/1_IM-0001-4001.dcm.png``
  (``<uid>_<image id>.dcm.png``), ``indiana_projections.csv`` (``uid,filename,projection``,
  projection ``Frontal``/``Lateral``) and ``indiana_reports.csv`` (``uid,MeSH,Problems,image,
  indication,comparison,findings,impression``): patient/study from the uid, the view, the
  report. An image absent from the projections takes its uid from its name (view unknown).
- R2Gen ``iu_xray`` (report-generation papers): ``images/CXR1_1_IM-0001/0.png`` and
  ``annotation.json`` (``{"train": [{"id", "report", "image_path": [...], "split"}, ...],
  "val": [...], "test": [...]}``): patient/study from the id, the official split, the report.

IU has no patient ids: one report is one patient and one study, keyed ``iu:CXR<uid>`` as
:func:`cxrkit.io.layouts.layout_keys` keys the Open-i file names, so one report gets the
same pseudonyms (under one salt) whichever distribution it was ingested from. The Kaggle
reports keep the XML's sections apart, and are composed as the XML path composes them
(:func:`cxrkit.io.reports.report_from_sections`). R2Gen's ``report`` is the findings
section alone (its IU preprocessing keeps findings; impression, indication and
comparison are gone), stored as findings. The reports are CC BY-NC-ND 4.0.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cxrkit.errors import InputError
from cxrkit.io.reports import Report, report_from_sections
from cxrkit.io.table_files import read_numbered_rows

IU_REPORTS = "indiana_reports.csv"
IU_PROJECTIONS = "indiana_projections.csv"
R2GEN_ANNOTATION = "annotation.json"
IU_TABLES = (IU_REPORTS, IU_PROJECTIONS)

# re.ASCII: \d would take other scripts' digits, which int() reads as these ("١" -> 1)
_IDS = re.IGNORECASE | re.ASCII
_UID = re.compile(r"(?:CXR)?(\d+)", _IDS)
_KAGGLE_NAME = re.compile(r"(\d+)_IM-\d+-\d+", _IDS)  # 1_IM-0001-4001.dcm.png
_R2GEN_ID = re.compile(r"CXR(\d+)(?:_\d+)?_IM-\d+", _IDS)  # CXR1_1_IM-0001
_OPENI_NAME = re.compile(r"CXR(\d+)(?:_\d+)?_IM-\d+-\d+", _IDS)  # CXR1_1_IM-0001-3001
_R2GEN_START = re.compile(rb'\s*\{\s*"(?:train|val|test)"\s*:\s*\[')
_PROJECTIONS = {"frontal": "FRONTAL", "lateral": "LATERAL"}
_SPLITS = {"train": "train", "val": "val", "valid": "val", "validate": "val", "test": "test"}
_BLANK = {"", "nan"}
_SECTIONS = ("findings", "impression", "indication", "comparison")


def iu_key(uid: str) -> str | None:
    """The patient/study key of an IU report uid: ``1`` or ``CXR1`` -> ``iu:CXR1``;
    None for anything else."""
    match = _UID.fullmatch(uid.strip())
    return f"iu:CXR{int(match.group(1))}" if match else None


def is_r2gen_annotation(path: Path) -> bool:
    """Whether a JSON file starts as R2Gen's ``annotation.json`` does (``{"train": [``);
    reads 64 bytes, never raises."""
    try:
        with path.open("rb") as handle:
            return _R2GEN_START.match(handle.read(64)) is not None
    except OSError:
        return False


@dataclass(frozen=True)
class IuImage:
    """What the IU tables say about one image."""

    key: str | None  # "iu:CXR1": patient and study; None when the tables name no report
    view: str | None = None  # FRONTAL / LATERAL (Kaggle projections)
    split: str | None = None  # train / val / test (R2Gen)
    report: Report | None = None


@dataclass
class IuTables:
    """The Kaggle and R2Gen IU tables read once (see the module docstring)."""

    paths: list[Path] = field(default_factory=list)
    # Kaggle: image file name -> (key, view); key ("iu:CXR1") -> report
    projections: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    reports: dict[str, Report] = field(default_factory=dict)
    # R2Gen: "CXR1_1_IM-0001/0.png" -> (key, split, report); the depths of those paths;
    # key -> (split, report) for the images its lists leave out
    r2gen: dict[str, tuple[str | None, str, Report | None]] = field(default_factory=dict)
    r2gen_where: dict[str, str] = field(default_factory=dict)  # image path -> first entry
    r2gen_depths: set[int] = field(default_factory=set)
    r2gen_keys: dict[str, tuple[str, Report | None]] = field(default_factory=dict)
    # Kaggle rows read: file name -> projection rows naming it; key -> report rows
    projection_rows: dict[str, int] = field(default_factory=dict)
    report_rows: dict[str, int] = field(default_factory=dict)

    @classmethod
    def read(cls, paths: Iterable[Path]) -> IuTables:
        """Read ``indiana_projections.csv``, ``indiana_reports.csv`` (plain or ``.gz``) and
        R2Gen ``annotation.json`` files among ``paths`` (others are ignored).

        Raises InputError naming the file (and line or entry) for a table that cannot be
        read, lacks its columns, has an empty or non-IU uid, a projection other than
        Frontal/Lateral, a file or uid listed twice with different values (an R2Gen image
        under two entries), or one report in two splits. A report row whose sections are all
        empty gives no report; an R2Gen entry naming no IU report (R2Gen's MIMIC-CXR
        annotation) is left out, and an annotation of only such entries is not an IU table.
        """
        tables = cls()
        for path in paths:
            name = path.name[:-3] if path.name.endswith(".gz") else path.name
            if name == IU_PROJECTIONS:
                tables._read_projections(path)
            elif name == IU_REPORTS:
                tables._read_reports(path)
            elif name == R2GEN_ANNOTATION:
                if not tables._read_r2gen(path):
                    continue  # R2Gen's MIMIC-CXR annotation: no IU report in it
            else:
                continue
            tables.paths.append(path)
        return tables

    def __bool__(self) -> bool:
        return bool(self.paths)

    def _read_projections(self, path: Path) -> None:
        for line, row in read_numbered_rows(path, ("uid", "filename", "projection")):
            key = _row_key(path, line, row)
            filename = Path((row.get("filename") or "").strip().replace("\\", "/")).name
            if not filename:
                raise InputError(f"{path}:{line}: filename is empty")
            projection = (row.get("projection") or "").strip().lower()
            if projection not in _PROJECTIONS and projection not in _BLANK:
                raise InputError(
                    f"{path}:{line}: projection {row['projection']!r} is not Frontal or Lateral"
                )
            entry = (key, _PROJECTIONS.get(projection))
            self.projection_rows[filename] = self.projection_rows.get(filename, 0) + 1
            if self.projections.setdefault(filename, entry) != entry:
                raise InputError(f"{path}:{line}: {filename} is listed twice, differently")

    def _read_reports(self, path: Path) -> None:
        for line, row in read_numbered_rows(path, ("uid", "findings", "impression")):
            key = _row_key(path, line, row)
            sections = {name: _cell(row, name) for name in _SECTIONS}
            mesh = (_cell(row, "MeSH") or "").split(";")
            report = report_from_sections(sections, "iu_csv", uid=key[3:], mesh=mesh)
            self.report_rows[key] = self.report_rows.get(key, 0) + 1
            if self.reports.setdefault(key, report) != report:
                raise InputError(
                    f"{path}:{line}: uid {row['uid'].strip()} has a second, different row"
                )

    def _read_r2gen(self, path: Path) -> int:
        """Add the IU entries of an R2Gen annotation; returns how many there were (entries
        whose id and images name no IU report, as R2Gen's MIMIC-CXR one, are left out)."""
        try:
            data = json.loads(path.read_bytes())
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # nested too deep
            raise InputError(
                f"cannot read R2Gen annotation {path}: {exc} "
                "(--set dataset_tables=false ignores the dataset's tables)"
            ) from exc
        if not isinstance(data, dict):
            raise InputError(f"{path}: not an R2Gen annotation (no train/val/test lists)")
        added = 0
        for list_name, entries in data.items():
            split = _SPLITS.get(str(list_name).lower())
            if split is None:
                continue
            if not isinstance(entries, list):
                raise InputError(f"{path}: {list_name!r} is not a list of entries")
            for number, entry in enumerate(entries):
                added += self._add_r2gen(path, f"{list_name}[{number}]", entry, split)
        return added

    def _add_r2gen(self, path: Path, where: str, entry: object, split: str) -> bool:
        if not isinstance(entry, dict):
            raise InputError(f"{path}: {where} is not an object")
        images = entry.get("image_path")
        images = [images] if isinstance(images, str) else images
        if not images or not all(isinstance(p, str) and p.strip() for p in images):
            raise InputError(f"{path}: {where} has no image_path list")
        entry_id = str(entry.get("id") or "")
        key = _key_from(_R2GEN_ID, entry_id) or _key_from(_R2GEN_ID, images[0])
        if key is None:  # no IU report (R2Gen's MIMIC-CXR entries: dicom ids, pNN/ paths)
            return False
        if key in self.r2gen_keys and self.r2gen_keys[key][0] != split:
            raise InputError(
                f"{path}: report {key[3:]} is in {self.r2gen_keys[key][0]} and {split} "
                f"({where}); one report must sit in one split"
            )
        text = entry.get("report")
        report = (
            report_from_sections({"findings": text}, "r2gen", uid=key[3:])
            if isinstance(text, str) and text.strip()
            else None
        )
        self.r2gen_keys.setdefault(key, (split, report))
        for image in images:
            parts = [p for p in image.replace("\\", "/").split("/") if p not in ("", ".")]
            name = "/".join(parts)
            if self.r2gen.setdefault(name, (key, split, report)) != (key, split, report):
                raise InputError(
                    f"{path}: {where} lists {name}, which {self.r2gen_where[name]} lists "
                    "with another report or split; one image must belong to one entry"
                )
            self.r2gen_where.setdefault(name, where)
            self.r2gen_depths.add(len(parts))
        return True

    def unused_rows(self, names: Iterable[str], keys: Iterable[str]) -> dict[str, int]:
        """Counts of the Kaggle rows read and of those no image used: projection rows
        whose file name is not in ``names`` (the images' file names), report rows whose
        uid is not in ``keys`` (the ``iu:CXR<uid>`` keys the images took). Rows read =
        rows used + rows without an image, so none goes uncounted. {} without Kaggle tables.
        """
        counts: dict[str, int] = {}
        if self.projection_rows:
            named = set(names)
            counts["iu_projection_rows"] = sum(self.projection_rows.values())
            counts["iu_projection_rows_without_image"] = sum(
                n for name, n in self.projection_rows.items() if name not in named
            )
        if self.report_rows:
            taken = set(keys)
            counts["iu_report_rows"] = sum(self.report_rows.values())
            counts["iu_report_rows_without_image"] = sum(
                n for key, n in self.report_rows.items() if key not in taken
            )
        return counts

    def for_image(self, image: Path) -> IuImage | None:
        """What the tables say about one image file, or None when they do not know it.

        R2Gen entries match by the image path's last parts (``CXR1_1_IM-0001/0.png``; an
        image their lists leave out by its folder, taking its report's split), Kaggle ones
        by file name (``1_IM-0001-4001.dcm.png``, also when absent from
        ``indiana_projections.csv``: the uid leads the name). The Kaggle report wins over
        R2Gen's findings-only one. An Open-i file (``CXR1_1_IM-0001-3001.png``) of a report
        R2Gen lists takes that report's split only (one patient, one split; its report
        comes from the Open-i XML).
        """
        entry = None
        for depth in sorted(self.r2gen_depths, reverse=True):
            if len(image.parts) >= depth:
                entry = self.r2gen.get("/".join(image.parts[-depth:]))
                if entry is not None:
                    break
        key, view = self.projections.get(image.name, (None, None))
        if key is None and (self.projections or self.reports):
            key = _key_from(_KAGGLE_NAME, image.name)
        if key is None and entry is not None:
            key = entry[0]
        if key is None and self.r2gen_keys:
            key = _key_from(_R2GEN_ID, image.parent.name)
            openi = _key_from(_OPENI_NAME, image.name) if key is None else None
            if openi in self.r2gen_keys:  # an Open-i file of a report R2Gen places
                return IuImage(key=openi, split=self.r2gen_keys[openi][0])
        if key is None and entry is None:
            return None
        split, r2gen_report = entry[1:] if entry else self.r2gen_keys.get(key, (None, None))
        report = self.reports.get(key) if key else None
        report = report if report is not None and report.text else None  # an empty row
        return IuImage(key=key, view=view, split=split, report=report or r2gen_report)


def _key_from(pattern: re.Pattern, name: str) -> str | None:
    match = pattern.match(name)
    return f"iu:CXR{int(match.group(1))}" if match else None


def _cell(row: dict[str, str | None], column: str) -> str | None:
    value = (row.get(column) or "").strip()
    return None if value.lower() in _BLANK else value


def _row_key(path: Path, line: int, row: dict[str, str | None]) -> str:
    uid = (row.get("uid") or "").strip()
    if not uid:
        raise InputError(f"{path}:{line}: uid is empty")
    key = iu_key(uid)
    if key is None:
        raise InputError(f"{path}:{line}: uid {uid!r} is not an IU report number (1, CXR1)")
    return key
