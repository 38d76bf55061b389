"""Radiology reports: MIMIC-CXR free text and Indiana University XML.

Everything here is streaming and cheap: the IU archive is read without extracting
it to disk. Finding the report of an image (MIMIC study files, IU parentImage ids,
sidecars) is :class:`cxrkit.io.report_index.ReportIndex`.

Report text layout: when a source has sections, :attr:`Report.text` is rebuilt
as ``"FINDINGS: ...\\n\\nIMPRESSION: ..."`` followed by the other clinical
sections (findings and impression first, so short text encoders see them);
otherwise it is the raw text, stripped. Section values have their whitespace
collapsed (MIMIC wraps lines at ~80 characters).

XML safety: IU files are parsed with the standard library's expat-based
``ElementTree``, which never fetches external entities; documents carrying a
``<!DOCTYPE`` (the only way to declare entities) are refused outright, the same
policy as ``defusedxml``.

The IU reports are CC BY-NC-ND 4.0: read them in place, never copy them.
"""

from __future__ import annotations

import re
import stat
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cxrkit.errors import InputError, Reject


@dataclass
class Report:
    """One radiology report, split into the sections the pipeline uses."""

    findings: str | None
    impression: str | None
    text: str  # FINDINGS/IMPRESSION/... rebuilt when sections exist, else the raw text
    source: str  # "mimic" | "iu_xml" | "mapping" | "text"
    indication: str | None = None
    history: str | None = None
    comparison: str | None = None
    mesh: list[str] = field(default_factory=list)  # IU MeSH major terms, e.g. "Cardiomegaly/mild"
    mesh_automatic: list[str] = field(default_factory=list)  # IU MeSH automatic terms
    uid: str | None = None  # IU "CXR1", MIMIC "s50414267", or the file stem
    images: list[str] = field(default_factory=list)  # IU parentImage ids

    def columns(self) -> dict[str, str | None]:
        """The dataset artifact's report columns (``report_findings`` ... ``report_source``)."""
        return {
            "report_findings": self.findings,
            "report_impression": self.impression,
            "report_text": self.text,
            "report_source": self.source,
        }


# ---------------------------------------------------------------- section splitting

# Header spelling -> canonical section. Learnt from MIMIC-CXR's frequent headers;
# combined "findings and impression" counts as impression (it is the conclusion).
_ALIASES: dict[str, str] = {
    alias: key
    for key, spellings in {
        "findings": "findings|finding",
        "impression": "impression|impressions|conclusion|conclusions|summary|"
        "findings and impression|findings/impression|impression and recommendations",
        "indication": "indication|indications|clinical indication|reason for exam|"
        "reason for examination|reason for study",
        "history": "history|clinical history|clinical information|patient history",
        "comparison": "comparison|comparisons|prior studies",
        "technique": "technique|procedure",
        "examination": "examination|exam|type of examination",
        "final_report": "final report",
        "wet_read": "wet read",
        "addendum": "addendum",
        "notification": "notification",
        "recommendation": "recommendation|recommendations|recommendation(s)",
    }.items()
    for alias in spellings.split("|")
}
_ALIAS_PATTERN = "|".join(
    r"[ \t]+".join(re.escape(word) for word in alias.split())
    for alias in sorted(_ALIASES, key=len, reverse=True)
)
# A known header, any case, then ":" (content may follow on the line) or the end of line.
_KNOWN_HEADER = re.compile(
    rf"[ \t]*(?P<name>{_ALIAS_PATTERN})(?:[ \t]+version[ \t]*#?\d+)?[ \t]*(?::|$)",
    re.IGNORECASE,
)
# Any other ALL-CAPS label ending in ":" at the start of a line ends the section before it.
_GENERIC_HEADER = re.compile(r"[ \t]*(?P<name>[A-Z][A-Z0-9 ,/&()'#-]{2,60}?)[ \t]*:")
_BLANK_LINE = re.compile(r"\n[ \t]*\r?\n")
# Sections whose content is one paragraph; text after their first blank line is the
# unheaded report body ("COMPARISON: None.\n\nThe lungs are clear...").
_SHORT_SECTIONS = {
    "indication",
    "history",
    "comparison",
    "technique",
    "examination",
    "final_report",
}
# Sections kept in Report.text, in this order.
_TEXT_ORDER = (
    "findings",
    "impression",
    "indication",
    "history",
    "comparison",
    "technique",
    "examination",
    "recommendation",
    "addendum",
)


_RULE = re.compile(r"_{4,}")  # separator lines; "___" alone is MIMIC's de-identification mark


def _clean(text: str) -> str:
    return " ".join(_RULE.sub(" ", text).split())


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _find_headers(text: str) -> list[tuple[str, int, int]]:
    """(section key, header start, content start) for every header line, in order."""
    headers = []
    pos = 0
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        match = _KNOWN_HEADER.match(body)
        if match:
            key = _ALIASES[" ".join(match.group("name").lower().split())]
        else:
            match = _GENERIC_HEADER.match(body)
            key = " ".join(match.group("name").lower().split()) if match else ""
            # Right under a header with nothing yet ("FINDINGS:\nPA AND LATERAL VIEWS: ..."),
            # an ALL-CAPS label is a sub-title of that section, not a new one.
            if match and headers and not text[headers[-1][2] : pos].strip():
                match = None
        if match:
            headers.append((key, pos + match.start("name"), pos + match.end()))
        pos += len(line)
    return headers


def section_spans(text: str) -> list[tuple[str, int, int]]:
    """Locate report sections as character spans of ``text``.

    Takes free text (MIMIC-CXR style: headers such as ``FINDINGS:``, ``Impression``,
    ``FINAL REPORT``, ``WET READ: ...``, in any case, alone on a line or followed by text).
    Returns ``[(key, start, end), ...]`` in text order, whitespace-trimmed, empty sections
    left out. Keys: canonical names (``findings``, ``impression``, ``indication``,
    ``history``, ``comparison``, ``technique``, ``examination``, ``final_report``,
    ``wet_read``, ``addendum``, ``notification``, ``recommendation``), ``preamble`` for
    text before the first header, ``body`` for unheaded paragraphs after a one-paragraph
    section, and the lower-cased label of any other ALL-CAPS header.
    """
    headers = _find_headers(text)
    spans: list[tuple[str, int, int]] = []
    start, end = _strip_span(text, 0, headers[0][1] if headers else len(text))
    if end > start:
        spans.append(("preamble", start, end))
    for i, (key, _, content_start) in enumerate(headers):
        stop = headers[i + 1][1] if i + 1 < len(headers) else len(text)
        start, end = _strip_span(text, content_start, stop)
        if end <= start:
            continue
        blank = _BLANK_LINE.search(text, start, end) if key in _SHORT_SECTIONS else None
        if blank is None:
            spans.append((key, start, end))
            continue
        spans.append((key, start, blank.start()))
        body_start, body_end = _strip_span(text, blank.end(), end)
        spans.append(("body", body_start, body_end))
    return spans


def split_sections(text: str) -> dict[str, str]:
    """Split report text into ``{section key: cleaned text}`` (see :func:`section_spans`).

    Repeated sections (e.g. two IMPRESSIONs around an addendum) are joined with a space.
    """
    sections: dict[str, str] = {}
    for key, start, end in section_spans(text):
        value = _clean(text[start:end])
        sections[key] = f"{sections[key]} {value}" if key in sections else value
    return sections


def _compose(sections: dict[str, str | None]) -> str:
    return "\n\n".join(
        f"{key.upper()}: {sections[key]}" for key in _TEXT_ORDER if sections.get(key)
    )


def parse_report_text(text: str, source: str = "text", uid: str | None = None) -> Report:
    """Parse one free-text report.

    Findings come from a FINDINGS section or, failing that, the unheaded body after a
    one-paragraph section (``COMPARISON: ...\\n\\n<body>``). With neither findings nor
    impression the layout is unknown: both are None and ``text`` is the raw text, stripped.
    """
    sections: dict[str, str | None] = dict(split_sections(text))
    sections["findings"] = sections.get("findings") or sections.get("body")
    findings, impression = sections["findings"], sections.get("impression")
    structured = findings is not None or impression is not None
    return Report(
        findings=findings,
        impression=impression,
        text=_compose(sections) if structured else text.strip(),
        source=source,
        indication=sections.get("indication"),
        history=sections.get("history"),
        comparison=sections.get("comparison"),
        uid=uid,
    )


# ---------------------------------------------------------------- Indiana University XML


def parse_iu_xml(data: bytes | str | Path, name: str | None = None) -> Report:
    """Parse one Indiana University report (``ecgen-radiology/N.xml``).

    Takes the XML as bytes, as text (a ``str`` starting with ``<``), or a path (``Path``
    or any other ``str``); ``name`` labels error messages.
    Returns a Report with findings/impression/indication/comparison from the
    ``AbstractText Label=...`` elements, MeSH terms, ``uid`` ("CXR1") and parentImage ids.
    Raises:
        InputError: unreadable file, malformed XML, a DOCTYPE, or not an IU report.
    """
    if isinstance(data, Path) or (isinstance(data, str) and not data.lstrip().startswith("<")):
        name = name or str(data)
        try:
            data = Path(data).read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read IU report {name}: {exc}") from exc
    raw = data.encode("utf-8") if isinstance(data, str) else data
    name = name or "<IU report>"
    if b"<!doctype" in raw.lower():
        raise InputError(f"{name}: XML with a DOCTYPE is refused (entity declarations are unsafe)")
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise InputError(f"{name}: not well-formed XML ({exc})") from exc
    if root.tag != "eCitation":
        raise InputError(f"{name}: root element <{root.tag}> is not an IU report <eCitation>")
    sections: dict[str, str] = {}
    for element in root.iter("AbstractText"):
        label = (element.get("Label") or "").strip().lower()
        if label:
            sections[label] = "".join(element.itertext())
    uid = root.find("uId")
    report = report_from_sections(
        sections,
        source="iu_xml",
        uid=uid.get("id") if uid is not None else None,
        mesh=[e.text for e in root.findall("MeSH/major") if e.text],
    )
    report.mesh_automatic = [
        _clean(e.text) for e in root.findall("MeSH/automatic") if e.text and e.text.strip()
    ]
    report.images = [e.get("id") for e in root.findall("parentImage") if e.get("id")]
    return report


def report_from_sections(
    sections: dict[str, str | None],
    source: str,
    uid: str | None = None,
    mesh: list[str] | tuple[str, ...] = (),
) -> Report:
    """A Report from sections that a source already keeps apart (IU XML ``AbstractText``
    labels, the IU Kaggle CSV's columns).

    Takes ``{section key: raw text}`` with lower-case keys (``findings``, ``impression``,
    ``indication``, ``comparison``, ...; None or blank = absent), the source name, the
    report uid and MeSH terms. Values have their whitespace collapsed; ``text`` is
    composed as for every sectioned source (findings and impression first). Never raises.
    """
    clean = {key: value for key, raw in sections.items() if raw and (value := _clean(raw))}
    return Report(
        findings=clean.get("findings"),
        impression=clean.get("impression"),
        text=_compose(clean),
        source=source,
        indication=clean.get("indication"),
        history=clean.get("history"),
        comparison=clean.get("comparison"),
        mesh=[term for raw in mesh if raw and (term := _clean(raw))],
        uid=uid,
    )


def iter_iu_reports(archive: Path | None = None) -> Iterator[Report]:
    """Stream the IU reports out of a tar archive without extracting it to disk.

    Takes the archive path (default: the copy bundled with torchxrayvision, see
    :func:`cxrkit.io.bundled.iu_reports_archive`). Yields one Report per ``.xml`` member,
    in archive order.
    Raises:
        InputError: the archive or one of its members cannot be read or parsed.
    """
    if archive is None:
        from cxrkit.io.bundled import iu_reports_archive

        archive = iu_reports_archive()
    archive = Path(archive)
    try:
        with tarfile.open(archive, "r|*") as tar:  # stream mode: no seeking, no extraction
            for member in tar:
                if not (member.isfile() and member.name.endswith(".xml")):
                    continue
                if member.size > MAX_REPORT_BYTES:  # a 400 MB "report" is not read into memory
                    raise InputError(
                        f"the report archive {archive} holds a {member.size:,}-byte member "
                        f"{member.name!r}; reports are at most {MAX_REPORT_BYTES:,} bytes"
                    )
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                yield parse_iu_xml(handle.read(), name=f"{archive}:{member.name}")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"cannot read the report archive {archive}: {exc}") from exc


# ---------------------------------------------------------------- reading


MAX_REPORT_BYTES = 1 << 20  # a radiology report is a few kB; 1 MB is never a report


def check_report_file(path: Path, max_bytes: int = MAX_REPORT_BYTES) -> None:
    """Reject a report path that is missing, not a regular file (a FIFO would block) or huge.

    Raises Reject("report_unreadable") (missing, FIFO, folder, no permission) or
    Reject("report_too_large"); the detail never names the path (it may hold PHI).
    """
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        raise Reject(
            "report_unreadable", "the report file named in the mapping is missing"
        ) from exc
    except OSError as exc:
        raise Reject("report_unreadable", f"cannot stat the report: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise Reject("report_unreadable", "the report is not a regular file (FIFO, device, folder)")
    if info.st_size > max_bytes:
        raise Reject("report_too_large", f"report of {info.st_size:,} bytes > {max_bytes:,}")


def read_report_file(path: Path) -> str:
    """A report file's text (UTF-8, undecodable bytes replaced).

    Raises Reject("report_unreadable"/"report_too_large") when the
    file cannot be read (see :func:`check_report_file`), so that one bad report
    rejects its image rather than the run.
    """
    check_report_file(path)
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise Reject("report_unreadable", f"cannot read the report: {exc.strerror}") from exc
