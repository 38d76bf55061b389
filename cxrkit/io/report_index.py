"""Report lookup: which report belongs to which image.

:class:`ReportIndex` indexes a report source once (a MIMIC-CXR tree, IU XML files
or archive, ``<image stem>.txt`` sidecars, or one report for every image) and
answers :meth:`ReportIndex.for_image` once per image during ingest. MIMIC reports
are read lazily on first use; parsing itself is :mod:`cxrkit.io.reports`.
"""

from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

from cxrkit.errors import InputError, Reject
from cxrkit.io.reports import (
    Report,
    iter_iu_reports,
    parse_iu_xml,
    parse_report_text,
    read_report_file,
)

log = logging.getLogger(__name__)

_STUDY_DIR = re.compile(r"s\d+")
_PATIENT_DIR = re.compile(r"p\d+")
_IU_COPY_TABLES = ("indiana_reports.csv", "indiana_projections.csv", "annotation.json")
_ID_CUTS = "_. "  # separators after which a file stem may carry a suffix past an IU id


def patient_study_for_image(image_path: str | Path) -> tuple[str, str] | None:
    """``(patient_key, study_key)`` such as ``("p10000032", "s50414267")`` from a MIMIC path.

    Looks for the nearest ``sNNN`` directory above the image whose parent is ``pNNN``;
    returns None when the path does not follow the MIMIC-CXR layout.
    """
    parts = Path(image_path).parent.parts
    for i in range(len(parts) - 1, 0, -1):
        if _STUDY_DIR.fullmatch(parts[i]) and _PATIENT_DIR.fullmatch(parts[i - 1]):
            return parts[i - 1], parts[i]
    return None


def _id_candidates(stem: str) -> Iterator[str]:
    """The stem, then its prefixes ending before a separator, longest first."""
    yield stem
    for i in range(len(stem) - 1, 0, -1):
        if stem[i] in _ID_CUTS:
            yield stem[:i]


class ReportIndex:
    """Finds the report of an image: MIMIC study files, IU reports, sidecars, or one report.

    Build with :meth:`build`. MIMIC reports are indexed by study directory name and read
    on first use (a small cache serves the other images of the study).
    """

    _CACHE_SIZE = 256

    def __init__(self) -> None:
        self.root: Path | None = None
        self._studies: dict[str, Path] = {}  # "s50414267" -> .../s50414267.txt
        self._sidecars: dict[str, Path] = {}  # image stem -> <stem>.txt
        self._by_image: dict[str, Report] = {}  # IU parentImage id -> report
        self._single: Report | None = None
        self._cache: OrderedDict[str, Report] = OrderedDict()
        self.n_reports = 0

    @classmethod
    def build(cls, path: str | Path) -> ReportIndex:
        """Index the reports under ``path``.

        Takes a MIMIC-CXR style tree (``pXX/pXXXXXXXX/sXXXXXXXX.txt``), a directory of IU
        XML files, an IU ``.tgz``, a directory of ``<image stem>.txt`` sidecars (any mix of
        these), or a single ``.txt`` / ``.xml`` report that applies to every image.
        Raises:
            InputError: ``path`` does not exist, or holds no report.
        """
        path = Path(path)
        index = cls()
        index.root = path
        name = path.name.lower()
        if path.is_file() and name.endswith((".tgz", ".tar.gz", ".tar")):
            for report in iter_iu_reports(path):
                index._add_iu(report)
        elif path.is_file() and name in _IU_COPY_TABLES:
            raise InputError(
                f"{path} is a table of IU's Kaggle or R2Gen copy, read from beside the images, "
                "not with --reports: give the images folder as the source (the table is "
                "found there or up to two folders above)"
            )
        elif path.is_file() and name.endswith(".csv"):
            raise InputError(f"{path} looks like a mapping CSV: pass it as the mapping instead")
        elif path.is_file() and name.endswith(".xml"):
            index._single = parse_iu_xml(path)
        elif path.is_file():
            index._single = parse_report_text(_read_text_or_fail(path), uid=path.stem)
        elif path.is_dir():
            index._scan_dir(path)
        else:
            raise InputError(f"report path {path} does not exist")
        index.n_reports += index._single is not None
        if index.n_reports == 0:
            raise InputError(
                f"no reports found under {path}: expected MIMIC sXXXXXXXX.txt files, "
                "IU .xml files, <image stem>.txt sidecars or an IU .tgz"
            )
        log.info("indexed %d reports from %s", index.n_reports, path)
        return index

    def _add_iu(self, report: Report) -> None:
        self.n_reports += 1
        for image_id in report.images:
            self._by_image[image_id] = report

    def _scan_dir(self, root: Path) -> None:
        for dirpath, _, filenames in os.walk(root):
            for filename in filenames:
                stem, suffix = os.path.splitext(filename)
                if suffix.lower() == ".xml":
                    try:
                        self._add_iu(parse_iu_xml(Path(dirpath, filename)))
                    except InputError as exc:  # one stray XML must not sink a whole tree
                        log.warning("skipping %s", exc)
                elif suffix.lower() == ".txt" and _STUDY_DIR.fullmatch(stem):
                    self._studies[stem] = Path(dirpath, filename)
                    self.n_reports += 1
                elif suffix.lower() == ".txt":
                    self._sidecars[stem] = Path(dirpath, filename)
                    self.n_reports += 1

    def __len__(self) -> int:
        return self.n_reports

    def for_image(self, image_path: str | Path) -> Report | None:
        """The report of one image, or None when the index has none for it.

        Matching order: the single report; an IU parentImage id equal to the file stem (or
        to its prefix before ``_``, ``.`` or a space); a ``<stem>.txt`` sidecar; the MIMIC
        study directory ``sXXXXXXXX`` nearest above the image.
        Raises:
            Reject: the matching report file cannot be read (``report_unreadable``).
        """
        if self._single is not None:
            return self._single
        image_path = Path(image_path)
        if self._by_image:
            for candidate in _id_candidates(image_path.stem):
                if candidate in self._by_image:
                    return self._by_image[candidate]
        if image_path.stem in self._sidecars:
            return self._cached(f"sidecar:{image_path.stem}", self._sidecars[image_path.stem])
        for part in reversed(image_path.parent.parts):
            if part in self._studies:
                return self._cached(part, self._studies[part], source="mimic")
        return None

    def _cached(self, key: str, path: Path, source: str = "text") -> Report:
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        report = parse_report_text(read_report_file(path), source=source, uid=path.stem)
        self._cache[key] = report
        if len(self._cache) > self._CACHE_SIZE:
            self._cache.popitem(last=False)
        return report

    patient_study_for_image = staticmethod(patient_study_for_image)


def _read_text_or_fail(path: Path) -> str:
    try:
        return read_report_file(path)
    except Reject as exc:
        raise InputError(exc.detail) from exc
