"""The IU X-ray re-distributions (Kaggle, R2Gen) built at test time from the real IU reports.

The reports are the real Indiana University XML bundled with torchxrayvision (CC BY-NC-ND
4.0: read in place, written only into a test's tmp dir, never into the repository). The
XML is read here with ElementTree, not with cxrkit's parser, so the tables are what the
re-distributions hold, not what cxrkit would make of them. Pixels are the real pediatric
JPEGs (the pairing of images with reports is for plumbing, not medicine).
"""

from __future__ import annotations

import csv
import itertools
import json
import re
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from layouts_support import _small_copy

from cxrkit.io.bundled import iu_reports_archive, pediatric_jpegs

KAGGLE_REPORT_COLUMNS = (
    "uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression",
)  # fmt: skip


@dataclass
class XmlReport:
    """One IU report as the XML holds it (raw AbstractText per label)."""

    uid: str  # "CXR1"
    sections: dict[str, str]  # lower-case label -> raw text
    mesh: list[str]
    images: list[str]  # parentImage ids
    caption: str


def xml_reports(count: int | None, images: int | None = 2) -> list[XmlReport]:
    """The first ``count`` IU reports (archive order) with ``images`` parentImages and a
    findings section; ``count=None, images=None``: every report of the archive."""
    found = []
    with tarfile.open(iu_reports_archive(), "r|*") as archive:
        for member in archive:
            if not (member.isfile() and member.name.endswith(".xml")):
                continue
            root = ET.fromstring(archive.extractfile(member).read())
            parents = root.findall("parentImage")
            sections = {
                (e.get("Label") or "").lower(): "".join(e.itertext())
                for e in root.iter("AbstractText")
                if "".join(e.itertext()).strip()
            }
            if images is not None and (len(parents) != images or "findings" not in sections):
                continue
            found.append(
                XmlReport(
                    uid=root.find("uId").get("id"),
                    sections=sections,
                    mesh=[e.text for e in root.findall("MeSH/major") if e.text],
                    images=[p.get("id") for p in parents],
                    caption=(parents[0].findtext("caption") or "") if parents else "",
                )
            )
            if len(found) == count:
                break
    return found


def kaggle_name(image_id: str) -> str:
    """The Kaggle file name of an Open-i image id: ``CXR1_1_IM-0001-4001`` ->
    ``1_IM-0001-4001.dcm.png``, ``CXR10_IM-0002-1001`` -> ``10_IM-0002-1001.dcm.png``."""
    return re.sub(r"^CXR(\d+)(?:_\d+)?_", r"\1_", image_id) + ".dcm.png"


def openi_tree(root: Path, reports: list[XmlReport]) -> Path:
    """``NLMCXR_png/<parentImage id>.png`` (the Open-i layout) for ``reports``."""
    jpegs = itertools.cycle(pediatric_jpegs())
    for report in reports:
        for image_id in report.images:
            _small_copy(next(jpegs), root / "NLMCXR_png" / f"{image_id}.png")
    return root / "NLMCXR_png"


def kaggle_tree(root: Path, reports: list[XmlReport], report_rows: bool = True) -> Path:
    """The Kaggle layout for ``reports``: ``images/images_normalized/<uid>_IM-....dcm.png``
    (the same pixels as :func:`openi_tree` image for image), ``indiana_projections.csv``
    (first image Frontal, second Lateral) and, with ``report_rows``, ``indiana_reports.csv``
    (uid without ``CXR``, MeSH major terms joined by ``;``, sections as the XML has them).
    Returns the ``images/images_normalized`` folder."""
    folder = root / "images" / "images_normalized"
    jpegs = itertools.cycle(pediatric_jpegs())
    projections = []
    for report in reports:
        for image_id, view in zip(report.images, ("Frontal", "Lateral"), strict=False):
            _small_copy(next(jpegs), folder / kaggle_name(image_id))
            projections.append({"uid": report.uid[3:], "filename": kaggle_name(image_id),
                                "projection": view})  # fmt: skip
    write_csv(root / "indiana_projections.csv", ("uid", "filename", "projection"), projections)
    if report_rows:
        kaggle_reports_csv(root / "indiana_reports.csv", reports)
    return folder


def kaggle_reports_csv(path: Path, reports: list[XmlReport]) -> Path:
    """``indiana_reports.csv`` as Kaggle has it: uid without ``CXR``, MeSH major terms
    joined by ``;``, Problems their heads, the image caption, sections as the XML has them."""
    rows = [
        {
            "uid": r.uid[3:],
            "MeSH": ";".join(r.mesh),
            "Problems": ";".join(sorted({m.split("/")[0] for m in r.mesh})),
            "image": r.caption,
            **{k: r.sections.get(k, "") for k in KAGGLE_REPORT_COLUMNS[4:]},
        }
        for r in reports
    ]
    return write_csv(path, KAGGLE_REPORT_COLUMNS, rows)


def r2gen_tree(root: Path, reports: list[XmlReport], splits: list[str]) -> Path:
    """R2Gen's ``iu_xray``: ``images/<id>/0.png``, ``1.png`` (``id`` = the first image id
    without its last number, ``CXR1_1_IM-0001``) and ``annotation.json`` with ``train`` /
    ``val`` / ``test`` lists whose ``report`` is the findings text. Returns ``images``."""
    images = root / "iu_xray" / "images"
    jpegs = itertools.cycle(pediatric_jpegs())
    annotation: dict[str, list] = {"train": [], "val": [], "test": []}
    for report, split in zip(reports, splits, strict=True):
        entry_id = report.images[0].rsplit("-", 1)[0]
        paths = [f"{entry_id}/{i}.png" for i in range(len(report.images))]
        for path in paths:
            _small_copy(next(jpegs), images / path)
        annotation[split].append({"id": entry_id, "report": report.sections["findings"],
                                  "image_path": paths, "split": split})  # fmt: skip
    (root / "iu_xray" / "annotation.json").write_text(json.dumps(annotation))
    return images


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path
