"""One input file -> one dataset row (or one reject): the per-file work of `cxrkit ingest`.

:class:`RowBuilder` holds everything a worker needs, typed: the salt, the report
source and the pixel settings. It is a frozen dataclass that pickles to its fields
only, so ingest sends it once to each worker process; the pseudonymiser and the
report index are built lazily on first use inside the worker.

Per file: hash the source bytes, decode (:func:`cxrkit.io.decode.read_any`),
reject what is too small, resize and quantise, pseudonymise identifiers and dates,
attach the report, assign the split. Bad input never raises: it becomes a reject
row with a reason, and the file's path never appears in a reject's detail.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import logging
import os
import stat
from dataclasses import dataclass, fields
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from cxrkit.artifacts.manifest import sha256_file
from cxrkit.errors import Reject
from cxrkit.io.decode import MAX_PIXELS, read_any
from cxrkit.io.deid import Pseudonymizer, safe_harbor_age
from cxrkit.io.intensity import quantise, resize_long_side
from cxrkit.io.layouts import layout_keys, mimic_report_beside
from cxrkit.io.mapping import MappingRow
from cxrkit.io.path_scrub import exception_detail, printable_path, scrub_detail
from cxrkit.io.report_index import ReportIndex
from cxrkit.io.reports import Report, parse_report_text, read_report_file
from cxrkit.io.scrub import scrub_report

# (source path, its mapping CSV row or None): one unit of ingest work.
WorkItem = tuple[str, MappingRow | None]


def check_source_file(path: Path) -> None:
    """Reject an input that is not a readable regular file, before any byte is read.

    Raises Reject("missing_file") for a missing path or a broken symbolic link,
    Reject("symlink_loop"), Reject("not_a_file") for a FIFO, device or folder (reading
    a FIFO would block the run), Reject("unreadable_file") for other OS errors.
    """
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        detail = "a broken symbolic link" if path.is_symlink() else "not found"
        raise Reject("missing_file", detail) from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Reject("symlink_loop", "symbolic links point at each other") from exc
        raise Reject("unreadable_file", exc.strerror or type(exc).__name__) from exc
    if not stat.S_ISREG(info.st_mode):
        raise Reject("not_a_file", "a FIFO, device or folder, not a regular file")
    if not os.access(path, os.R_OK):
        raise Reject("unreadable_file", "no read permission")


@lru_cache(maxsize=256)
def _study_report(path: str) -> Report:
    """A MIMIC-CXR study report beside its folder, parsed once for all images of the study.
    Raises Reject("report_unreadable") when it cannot be read."""
    return parse_report_text(read_report_file(Path(path)), source="mimic", uid=Path(path).stem)


@dataclass(frozen=True)
class RowBuilder:
    """Builds dataset rows from files; the settings are those of `IngestConfig`.

    ``salt`` keys every pseudonym and the split; ``reports`` is a report source
    for :meth:`ReportIndex.build` (None: reports only from the mapping CSV).
    """

    salt: bytes
    reports: str | None = None
    image_size: int = 512
    dtype: str = "uint8"
    min_size: int = 128
    window_low_pct: float = 0.5
    window_high_pct: float = 99.5
    allow_burned_in: bool = False
    check_chest: bool = True
    keep_paths: bool = False
    layout_reports: bool = True
    layout_splits: bool = True
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    max_pixels: int = MAX_PIXELS
    scrub_reports: bool = False
    decode_reduce: str = "lossy"  # IngestConfig.decode_reduce: "off" | "lossy" | "all" (J2K, JPEG)

    def __getstate__(self) -> dict[str, Any]:
        # Only the settings travel to workers; each builds its own index and pseudonymiser.
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @cached_property
    def pseudonymizer(self) -> Pseudonymizer:
        return Pseudonymizer(self.salt)

    @cached_property
    def report_index(self) -> ReportIndex | None:
        return ReportIndex.build(Path(self.reports)) if self.reports else None

    def prepare(self) -> RowBuilder:
        """Build the report index and pseudonymiser now (once per worker); returns self."""
        # pydicom logs warnings that quote file paths; the reader records them itself.
        logging.getLogger("pydicom").setLevel(logging.ERROR)
        _ = self.pseudonymizer, self.report_index
        return self

    def __call__(self, item: WorkItem) -> dict:
        """``{"row": dataset row}`` or ``{"reject": rejects row}`` for one file. Never raises
        for bad input (MemoryError propagates)."""
        path_str, mapped = item
        path = Path(path_str)
        try:
            if mapped is not None and mapped.duplicate_of is not None:
                raise Reject(
                    "duplicate_mapping_row",
                    f"mapping line {mapped.line} names the same image as line {mapped.duplicate_of}",
                )
            return {"row": self.build(path, mapped)}
        except Reject as rej:
            return self.reject(path_str, rej.reason, rej.detail)
        except MemoryError:
            raise
        except Exception as exc:  # an unforeseen decoder failure must not stop a 377k-image run
            return self.reject(path_str, "corrupt_pixels", exception_detail(exc, path))

    def reject(self, path_str: str, reason: str, detail: str | None) -> dict:
        """``{"reject": rejects row}`` for a file: its path as stored (a salted token unless
        ``keep_paths``), the reason and the detail, scrubbed of the file's path, folders and
        name whatever raised it (:func:`~cxrkit.io.path_scrub.scrub_detail`)."""
        shown = (
            printable_path(path_str) if self.keep_paths else self.pseudonymizer.path_token(path_str)
        )
        detail = scrub_detail(detail, path_str) if detail is not None else None
        return {"reject": {"path": shown, "reason": reason, "detail": detail}}

    def build(self, path: Path, mapped: MappingRow | None = None) -> dict:
        """The dataset row (DATASET_SCHEMA columns) of one file.

        Raises: Reject for a missing, undecodable, non-chest or too small image.
        """
        check_source_file(path)
        source_sha = sha256_file(path)
        decoded = read_any(
            path,
            allow_burned_in=self.allow_burned_in,
            check_chest=self.check_chest,
            low_pct=self.window_low_pct,
            high_pct=self.window_high_pct,
            max_pixels=self.max_pixels,
            decode_long_side=None if self.decode_reduce == "off" else self.image_size,
            reduce_lossless=self.decode_reduce == "all",
        )
        orig_h, orig_w = decoded.full_shape or decoded.pixels.shape
        if min(orig_h, orig_w) < self.min_size:
            raise Reject("too_small", f"{orig_w}x{orig_h} < min_size {self.min_size}")
        stored = quantise(
            resize_long_side(decoded.pixels, self.image_size, decoded.full_shape), self.dtype
        )
        row = self._identity(path, mapped, source_sha, decoded.meta or {})
        row.update(
            {
                "pixels": stored.tobytes(),
                "dtype": str(stored.dtype),
                "height": int(stored.shape[0]),
                "width": int(stored.shape[1]),
                "orig_height": int(orig_h),
                "orig_width": int(orig_w),
                "source_format": decoded.source_format,
                "photometric": decoded.photometric,
            }
        )
        return row

    def _identity(self, path: Path, mapped: MappingRow | None, source_sha: str, meta: dict) -> dict:
        """Pseudonymised ids, demographics, provenance, labels, report and split of a file.

        Patient and study come from the first of: the mapping row, the dataset layout of
        the path (:func:`~cxrkit.io.layouts.layout_keys`), the DICOM header, the IU report
        the image belongs to, else the image itself. The view from: the mapping row, the
        DICOM header, the path (CheXpert ``view1_frontal``), else ``UNKNOWN``. The split
        from: the mapping row (a mapping CSV's or MIMIC's split table), the dataset's split
        folder (CheXpert ``train/``/``valid/``/``test/``, with ``layout_splits``), else the
        salted patient split (:meth:`split_for`).
        """
        pseudo = self.pseudonymizer
        layout = layout_keys(path)
        report = self._report_for(path, mapped)
        # An IU report (it lists its images) is one patient and one study.
        report_keys = f"iu:{report.uid}" if report and report.images and report.uid else None
        patient_raw = (
            (mapped and mapped.patient_id)
            or (layout and layout.patient)
            or meta.get("patient_id")
            or report_keys
            or f"image:{source_sha}"
        )
        study_raw = (
            (mapped and mapped.study_id)
            or (layout and layout.study)
            or meta.get("study_uid")
            or report_keys
            or f"image:{source_sha}"
        )
        image_raw = meta.get("sop_uid") or source_sha
        patient_id = pseudo.pseudonym("patient", str(patient_raw))
        labels = (mapped and mapped.labels) or None
        view = (mapped and mapped.view) or meta.get("view") or (layout and layout.view)
        return {
            "image_id": pseudo.pseudonym("image", str(image_raw)),
            "study_id": pseudo.pseudonym("study", str(study_raw)),
            "patient_id": patient_id,
            "view": view or "UNKNOWN",
            "sex": (mapped and mapped.sex) or meta.get("sex"),
            "age": safe_harbor_age(
                meta.get("age") if meta.get("age") is not None else (mapped and mapped.age)
            ),
            "study_date": pseudo.shift_date(
                meta.get("study_date") or (mapped and mapped.study_date), str(patient_raw)
            ),
            "pixel_spacing": meta.get("pixel_spacing"),
            "source_sha256": source_sha,
            "source_path": printable_path(str(path))
            if self.keep_paths
            else pseudo.path_token(str(path)),
            "labels": json.dumps(labels, sort_keys=True) if labels else None,
            "report_findings": report.findings if report else None,
            "report_impression": report.impression if report else None,
            "report_text": report.text if report else None,
            "report_source": report.source if report else "none",
            "split": (mapped and mapped.split)
            or (self.layout_splits and layout and layout.split)
            or self.split_for(patient_id),
        }

    def _report_for(self, path: Path, mapped: MappingRow | None) -> Report | None:
        """The mapping row's report (a dataset table's parsed one, text, then file), else
        the report index's, else (with ``layout_reports``) a MIMIC-CXR report beside the
        study folder, else None."""
        if mapped is not None and (
            mapped.report is not None or mapped.report_text or mapped.report_path
        ):
            report = mapped.load_report()  # Reject("report_unreadable"/"report_too_large")
        else:
            index = self.report_index
            report = index.for_image(path) if index is not None else None
            if report is None and self.layout_reports and (beside := mimic_report_beside(path)):
                report = _study_report(str(beside))
        if report is not None and self.scrub_reports:
            report = scrub_report(report)
        return report

    def split_for(self, patient_id: str) -> str:
        """Salted, deterministic split by patient: the same patient is always in one split."""
        digest = hmac.new(self.salt, f"split\0{patient_id}".encode(), hashlib.sha256).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        if u < self.test_fraction:
            return "test"
        if u < self.test_fraction + self.val_fraction:
            return "val"
        return "train"
