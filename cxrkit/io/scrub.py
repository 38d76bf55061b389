"""Rule-based scrubbing of report text (``cxrkit ingest --set scrub_reports=true``).

Off by default: MIMIC-CXR and IU reports are already de-identified (their
placeholders ``___`` and ``XXXX`` pass through unchanged). Turn it on for a site's
own reports. It replaces, with bracketed tags:

- names after a title or role: ``Dr. Jane Smith`` -> ``Dr. [NAME]``, ``discussed
  with John Doe`` -> ``discussed with [NAME]``;
- phone and pager numbers: ``617-555-0123``, ``(617) 555 0123``, ``pager 12345``;
- record numbers: ``MRN: 12345678``, ``accession 987654``, ``acc# A12345``;
- dates: ``03/14/2019``, ``2019-03-14``, ``14 March 2019``, ``March 14, 2019``;
- e-mail addresses.

Rules are conservative and will miss names written without a title or role; a
rule-based scrubber is a safety net, not a de-identification certificate.
Intervals like "in 2 weeks" or measurements ("3 cm") are left alone.
"""

from __future__ import annotations

import dataclasses
import re

from cxrkit.io.reports import Report

_NAME = r"[A-Z][a-zA-Z'\-]+(?:\s+[A-Z]\.)?(?:\s+[A-Z][a-zA-Z'\-]+){0,2}"
_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|Jun(?:e)?|Jul(?:y)?|"
    r"Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
)

RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"), "[EMAIL]"),
    (
        re.compile(
            r"\b(?:MRN|MR#|medical record(?: number| no\.?)?|accession(?: number| no\.?| #)?|"
            r"acc(?:ession)?#?|patient id|pt id)\s*[:#]?\s*[A-Z]{0,3}\d[\d\-]{3,}\b",
            re.IGNORECASE,
        ),
        "[ID]",
    ),
    (
        re.compile(r"(?<!\d)(?:\+?1[\s.-]?)?\(?\d{3}\)?[\s.-]?\d{3}[\s.-]\d{4}(?!\d)"),
        "[PHONE]",
    ),
    (re.compile(r"\b(?:pager|beeper|ext\.?|extension)\s*[:#]?\s*\d{3,6}\b", re.I), "[PHONE]"),
    (re.compile(r"\b\d{1,2}[/.-]\d{1,2}[/.-](?:\d{4}|\d{2})\b"), "[DATE]"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}\b"), "[DATE]"),
    (re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH}\s*,?\s+\d{{4}}\b", re.I), "[DATE]"),
    (re.compile(rf"\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?\s*,?\s+\d{{4}}\b", re.I), "[DATE]"),
]
# Title or role, then a capitalised name: keep the title, replace the name.
_TITLED = re.compile(
    r"\b(Dr\.?|Doctor|Mr\.?|Mrs\.?|Ms\.?|Miss|Prof\.?|Nurse|RN|NP|PA-C)\s+" + _NAME
)
_ROLE = re.compile(
    r"\b((?i:(?:discussed|reviewed|communicated|conveyed|called|paged|spoke|reported|given)"
    r"\s+(?:with|to)|notified|informed|called|paged|dictated by|signed by|read by|"
    r"attending:?|resident:?|radiologist:?|physician:?))\s+"
    r"(?!(?:the|a|an|patient|ED|ICU|Dr|Doctor|Mr|Mrs|Ms|Miss|Prof|Nurse|Radiology|Cardiology|"
    r"Surgery|Emergency|Oncology|Pulmonology|Medicine|Team|Clinic)\b)" + _NAME
)


def scrub_text(text: str | None) -> str | None:
    """Replace names after titles/roles, phone numbers, record numbers, dates and e-mails.

    Takes any text (None passes through). Returns the scrubbed text; tags are
    ``[NAME]``, ``[PHONE]``, ``[ID]``, ``[DATE]``, ``[EMAIL]``.
    """
    if not text:
        return text
    for pattern, tag in RULES:
        text = pattern.sub(tag, text)
    text = _TITLED.sub(lambda m: f"{m.group(1)} [NAME]", text)
    return _ROLE.sub(lambda m: f"{m.group(1)} [NAME]", text)


def scrub_report(report: Report) -> Report:
    """The report with :func:`scrub_text` applied to its text, findings and impression."""
    return dataclasses.replace(
        report,
        text=scrub_text(report.text),
        findings=scrub_text(report.findings),
        impression=scrub_text(report.impression),
    )
