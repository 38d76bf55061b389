"""Split a radiology report into sections (findings, impression, history, ...) by their headers.

Reports arrive as one string, e.g. ``"INDICATION: cough. FINDINGS: ... IMPRESSION: ..."``.
A header is a known name followed by a colon at the start of the text, a line
or a sentence. Text before the first header is the ``body`` section (a report
with no headers at all, like a CheXpert ``Reports`` cell, is one ``body``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

# header text (lower case, plural "s" optional) -> canonical section name
HEADERS: dict[str, str] = {
    "findings": "findings",
    "finding": "findings",
    "impression": "impression",
    "conclusion": "impression",
    "summary": "impression",
    "indication": "history",
    "indications": "history",
    "history": "history",
    "clinical history": "history",
    "clinical information": "history",
    "clinical indication": "history",
    "reason for exam": "history",
    "reason for examination": "history",
    "reason for study": "history",
    "examination": "history",
    "exam": "history",
    "comparison": "comparison",
    "comparisons": "comparison",
    "technique": "technique",
    "procedure": "technique",
    "recommendation": "recommendation",
    "recommendations": "recommendation",
    "notification": "recommendation",
}

LABEL_SECTIONS = frozenset({"findings", "impression", "body"})
"""Sections whose mentions make labels; history/indication/comparison never do."""

_HEADER_RE = re.compile(
    r"(?:^|(?<=[\s.;]))("
    + "|".join(sorted(map(re.escape, HEADERS), key=len, reverse=True))
    + r")\s*:",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Section:
    """A section: canonical ``name`` and its character span ``[start, end)`` (header included)."""

    name: str
    start: int
    end: int


def split_sections(text: str) -> list[Section]:
    """Sections of ``text`` in order, covering it completely.

    Takes the report text; returns a list of :class:`Section` (``body`` for text
    before the first header). Never raises. The last few texts' splits are cached:
    the labeler asks twice per report (entity sections, then the section policy).
    """
    return list(_split(text))


@lru_cache(maxsize=8)
def _split(text: str) -> tuple[Section, ...]:
    sections: list[Section] = []
    position, name = 0, "body"
    for match in _HEADER_RE.finditer(text):
        if match.start() > position:
            sections.append(Section(name, position, match.start()))
        position, name = match.start(), HEADERS[match.group(1).lower()]
    if len(text) > position or not sections:
        sections.append(Section(name, position, len(text)))
    return tuple(sections)


def section_at(sections: list[Section], offset: int) -> str:
    """Name of the section holding character ``offset`` (``body`` if none does)."""
    for section in sections:
        if section.start <= offset < section.end:
            return section.name
    return sections[-1].name if sections else "body"
