"""Split a radiology report into sections (findings, impression, history, ...) by their headers.

Reports arrive as one string, e.g. ``"INDICATION: cough. FINDINGS: ... IMPRESSION: ..."``.
A header is a known name followed by a colon at the start of the text, a line
or a sentence, or a known name alone on its line. Text before the first header is the ``body`` section (a report
with no headers at all, like a CheXpert ``Reports`` cell, is one ``body``).
A one-paragraph section (history / indication / comparison / technique) ends at
its first blank line: MIMIC-CXR reports often write their findings, unheaded,
after ``COMPARISON: ...`` and a blank line; that text is ``body`` too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from cxrkit.text.trie import word_trie

# header text (lower case, plural "s" optional) -> canonical section name
HEADERS: dict[str, str] = {
    "findings": "findings",
    "finding": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "summary": "impression",
    "findings and impression": "impression",
    "findings/impression": "impression",
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
    "type of examination": "history",
    "patient history": "history",
    "comparison": "comparison",
    "comparisons": "comparison",
    "technique": "technique",
    "procedure": "technique",
    "recommendation": "recommendation",
    "recommendations": "recommendation",
    "notification": "recommendation",
    # MIMIC-CXR: a preliminary read above the final report, and amendments to it
    "wet read": "wet_read",
    "addendum": "addendum",
}

LABEL_SECTIONS = frozenset({"findings", "impression", "body", "addendum"})
"""Sections whose mentions make labels; history/indication/comparison never do."""
SHORT_SECTIONS = frozenset({"history", "comparison", "technique"})
"""Sections of one paragraph: text after their first blank line is ``body``."""
_BLANK_LINE = re.compile(r"\n[ \t]*\r?\n")
_CONTENT = re.compile(r"\S")

_NAMES = word_trie(HEADERS)  # the names, longest first, as one prefix tree (faster)
# "NAME:" at the start of the text, a line or a sentence; or a name alone on its line
# (MIMIC-CXR writes some headers without the colon).
# MIMIC-CXR numbers some: "WET READ VERSION #1", "ADDENDUM #2:".
_NUMBER = r"(?:[ \t]+(?:version[ \t]*)?#?[ \t]*\d{1,2})?"
_HEADER_RE = re.compile(
    rf"(?:^|(?<=[\s.;]))({_NAMES}){_NUMBER}\s*:|^[ \t]*({_NAMES}){_NUMBER}[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass(frozen=True)
class Section:
    """A section: canonical ``name``, its character span ``[start, end)`` (header included)
    and where its content starts (after the header's colon; ``start`` for ``body``)."""

    name: str
    start: int
    end: int
    content: int


def split_sections(text: str) -> list[Section]:
    """Sections of ``text`` in order, covering it completely.

    Takes the report text; returns a list of :class:`Section` (``body`` for text
    before the first header). Never raises. The last few texts' splits are cached:
    the labeler asks twice per report (entity sections, then the section policy).
    """
    return list(_split(text))


@lru_cache(maxsize=8)
def _split(text: str) -> tuple[Section, ...]:
    heads = [(0, 0, "body")]
    heads += [(m.start(), m.end(), HEADERS[(m.group(1) or m.group(2)).lower()])
              for m in _HEADER_RE.finditer(text)]  # fmt: skip
    sections: list[Section] = []
    for i, (start, content, name) in enumerate(heads):
        end = heads[i + 1][0] if i + 1 < len(heads) else len(text)
        if end <= start:
            continue
        first = _CONTENT.search(text, content, end) if name in SHORT_SECTIONS else None
        blank = _BLANK_LINE.search(text, first.start(), end) if first else None
        if blank is None:
            sections.append(Section(name, start, end, content))
        else:
            sections.append(Section(name, start, blank.start(), content))
            sections.append(Section("body", blank.start(), end, blank.start()))
    return tuple(sections) or (Section("body", 0, 0, 0),)


def section_at(sections: list[Section], offset: int) -> str:
    """Name of the section holding character ``offset`` (``body`` if none does)."""
    for section in sections:
        if section.start <= offset < section.end:
            return section.name
    return sections[-1].name if sections else "body"
