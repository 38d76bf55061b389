"""CheXpert-style labels (1 / 0 / -1 / NaN) for the 14 observations, from report entities.

Conventions are those of the CheXpert labeler (Irvin et al. 2019; its
``stages/aggregate.py`` and ``stages/classify.py``) unless noted:

- Sections (:data:`SECTION_POLICIES`): CheXpert labels the impression it is given.
  ``"impression"`` (the default of ``cxrkit label``) reads the IMPRESSION section of
  a report that has one with words in it, else its findings and header-less text (the
  whole text of a header-less report, like a CheXpert ``Reports`` cell); an impression
  that points back ("As above.", "See findings.") reads the findings too.
  ``"findings+impression"`` (what ``cxrkit annotate`` uses) reads findings, impression
  and header-less text. Both read an ADDENDUM (it amends the report). Indication /
  history / comparison / technique never make a label; a MIMIC-CXR WET READ (the
  preliminary read the final report supersedes) does only in a report with nothing else.
- A mention is negated or uncertain as :mod:`cxrkit.text.negation` says
  (pre-negation uncertainty > negation > post-negation uncertainty).
- Per class, over its mentions: any positive -> 1; else any uncertain -> -1;
  else negated -> 0; no mention -> NaN.
- A positive or uncertain "CHF" / "heart failure" mention (an Edema mention) also
  adds an uncertain Cardiomegaly mention.
- One statement naming both the heart and the mediastinum ("heart size and
  mediastinal contours are normal") counts for Cardiomegaly and Enlarged
  Cardiomediastinum; a "nodular opacity" is a Lung Lesion and a Lung Opacity
  mention (CheXpert matches each of its phrase lists on its own), and so is a
  "nodular density" (a density is a Lung Opacity mention in this lexicon).
- Hierarchy: each class is labelled from its own mentions only. A positive
  child (Consolidation under Lung Opacity, Cardiomegaly under Enlarged
  Cardiomediastinum, ...) does not set its parent -- like the CheXpert labeler,
  which leaves such propagation to the consumer.
- No Finding = 1 unless a mention of a class other than Support Devices, or of
  another finding (the lexicon's findings outside the 14: granuloma, scoliosis,
  emphysema, ... -- CheXpert's ``phrases/mention/no_finding.txt`` does the same),
  is positive or uncertain in the labelled sections. Devices do not block it, except
  those named by "tracheostomy" / "defib..." (also no_finding.txt phrases). So a report with no mention
  at all is No Finding = 1, as in CheXpert. A text with no letter at all (empty,
  whitespace, digits, punctuation, HTML markup) is all NaN: there is no report to label.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from cxrkit.errors import ConfigError
from cxrkit.text.classes import CHEXPERT_CLASSES, CLASS_INDEX
from cxrkit.text.lexicon import FINDING
from cxrkit.text.readable import readable_text
from cxrkit.text.sections import HEADERS, LABEL_SECTIONS, Section, split_sections

if TYPE_CHECKING:
    from cxrkit.text.entities import Entity, EntityExtractor

# The spaCy pipeline (cxrkit.text.entities) is imported when a Labeler is built, not
# here: the rules' identity (RULES_VERSION, SECTION_POLICIES, the classes) is read
# without spaCy, so a no-op `cxrkit annotate` re-run decides before importing it.

NAN = float("nan")
POSITIVE, NEGATIVE, UNCERTAIN = 1.0, 0.0, -1.0

SECTION_POLICIES = ("impression", "findings+impression")
"""Which report sections make labels; see the module docstring."""
DEFAULT_POLICY = "impression"
# Bump when a rule here or in negation.py's code changes (annotate's labeler fingerprint).
RULES_VERSION = 7

_HEART_FAILURE = re.compile(r"\b(?:chf|heart failure)\b", re.IGNORECASE)
_HEART_WORD = re.compile(r"\b(?:heart|cardiac)\b", re.IGNORECASE)
_MEDIASTINUM_WORD = re.compile(
    r"mediastin|pericardial silhouette|hilar|silhouette and vascularity", re.IGNORECASE
)
# A Lung Lesion mention whose words say "opaci" (CheXpert's lung_opacity.txt) or "densit"
# (a bare density is a Lung Opacity mention in this lexicon) is a Lung Opacity mention too:
# the longer "nodular density" must not lose what "density" alone would say.
_OPACITY_WORD = re.compile(r"opaci|densit", re.IGNORECASE)
# Device words of CheXpert's no_finding.txt: unlike other devices they block No Finding.
_NO_FINDING_DEVICE = re.compile(r"tracheostomy|defib", re.IGNORECASE)
_LETTER = re.compile(r"[^\W\d_]")
_WET_READ_WORD = re.compile(r"wet\s+read", re.IGNORECASE)
_POLICY_HEADER = re.compile(
    "|".join(h for h, name in HEADERS.items() if name in ("impression", "wet_read")),
    re.IGNORECASE,
)
# The impression (and an addendum, which amends the report) under the "impression" policy.
_IMPRESSION_SECTIONS = frozenset({"impression", "addendum"})
# An impression that points back at the findings ("IMPRESSION: As above.", "See findings.")
# says them. Only at its start: a footer's "agree with the findings described above" is an
# attestation, not the impression.
_REFERS_BACK = re.compile(
    r"\W*(?:\d{1,2}[.)]\s*)?(?:please\s+)?(?:(?:see|refer\s+to)\s+(?:the\s+)?(?:findings|above)"
    r"|(?:the\s+)?(?:findings\s+)?(?:are\s+)?as\s+(?:\w+\s+)?above)\b",
    re.IGNORECASE,
)
_CARDIOMEGALY, _MEDIASTINUM = CLASS_INDEX["Cardiomegaly"], CLASS_INDEX["Enlarged Cardiomediastinum"]
_OPACITY, _LESION = CLASS_INDEX["Lung Opacity"], CLASS_INDEX["Lung Lesion"]


def mention_value(entity: Entity) -> float:
    """1 / 0 / -1 for one mention (its negation.py flags)."""
    if entity.uncertain:
        return UNCERTAIN
    return NEGATIVE if entity.negated else POSITIVE


def _combine(current: float, value: float) -> float:
    if math.isnan(current):
        return value
    order = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1}
    return value if order[value] > order[current] else current


def label_sections(text: str | None, policy: str = DEFAULT_POLICY) -> frozenset[str]:
    """The section names whose mentions make labels for ``text`` under ``policy``.

    Raises ConfigError for an unknown policy.
    """
    if policy not in SECTION_POLICIES:
        raise ConfigError(f"section policy {policy!r}: use one of {', '.join(SECTION_POLICIES)}")
    if not text:
        return LABEL_SECTIONS
    readable = readable_text(text)[0]  # the text whose sections the entities were given
    return _chosen_sections(readable, None, policy)


def _chosen_sections(text: str, sections: list[Section] | None, policy: str) -> frozenset[str]:
    """:func:`label_sections` of a readable text whose sections may be known already."""
    if not (_WET_READ_WORD if policy == "findings+impression" else _POLICY_HEADER).search(text):
        return LABEL_SECTIONS  # cheap: most texts have no header that changes the choice
    sections = split_sections(text) if sections is None else sections
    said = {s.name for s in sections if _LETTER.search(text, s.content, s.end)}
    chosen = LABEL_SECTIONS
    if policy == "impression" and "impression" in said:
        chosen = _IMPRESSION_SECTIONS
        if any(_REFERS_BACK.match(text, s.content, s.end) for s in sections
               if s.name == "impression"):  # fmt: skip
            chosen = LABEL_SECTIONS
    if "wet_read" in said and not said & LABEL_SECTIONS:
        chosen |= {"wet_read"}
    return chosen


def _classes_of(entity: Entity, index: int) -> list[int]:
    """The class indices one mention counts for (itself plus CheXpert's co-mentions)."""
    out = [index]
    if index == _CARDIOMEGALY and _MEDIASTINUM_WORD.search(entity.text):
        out.append(_MEDIASTINUM)
    elif index == _MEDIASTINUM and _HEART_WORD.search(entity.text):
        out.append(_CARDIOMEGALY)
    elif index == _LESION and _OPACITY_WORD.search(entity.text):
        out.append(_OPACITY)
    return out


def labels_from_entities(
    entities: Iterable[Entity], sections: frozenset[str] = LABEL_SECTIONS, has_text: bool = True
) -> list[float]:
    """The 14 labels (order of CHEXPERT_CLASSES) from a report's entities. Never raises.

    ``sections``: the section names that count (:func:`label_sections`);
    ``has_text=False`` (no report at all) gives all NaN.
    """
    labels = [NAN] * len(CHEXPERT_CLASSES)
    if not has_text:
        return labels
    finding = False  # a positive or uncertain mention that is not a device
    for entity in entities:
        if entity.section not in sections:
            continue
        index = CLASS_INDEX.get(entity.chexpert)
        value = mention_value(entity)
        if index is not None and index != 0:
            for i in _classes_of(entity, index):
                labels[i] = _combine(labels[i], value)
            if value != NEGATIVE and _HEART_FAILURE.search(entity.text):
                labels[_CARDIOMEGALY] = _combine(labels[_CARDIOMEGALY], UNCERTAIN)
            device = entity.chexpert == "Support Devices"
            blocks = not device or bool(_NO_FINDING_DEVICE.search(entity.text))
            finding = finding or (value != NEGATIVE and blocks)
        elif entity.label == FINDING and not entity.chexpert and value != NEGATIVE:
            finding = True
    if not finding:
        labels[0] = POSITIVE
    return labels


def has_letters(text: object) -> bool:
    """Whether ``text`` holds a letter (a report to label, however short or foreign);
    HTML markup and entities ("<br>&nbsp;") are not letters."""
    from cxrkit.text.entities import clean_text

    text = clean_text(text)
    if "<" in text or "&" in text:
        text = readable_text(text)[0]
    return bool(_LETTER.search(text))


class Labeler:
    """Report text -> (labels, entities), streaming; build once per process.

    ``sections`` is the section policy (:data:`SECTION_POLICIES`).
    """

    def __init__(self, scispacy_model: str | Path | None = None, abbreviations: bool = True,
                 extractor: EntityExtractor | None = None,
                 sections: str = DEFAULT_POLICY) -> None:  # fmt: skip
        from cxrkit.text.entities import EntityExtractor

        label_sections("", sections)  # ConfigError now, not at the first report
        self.sections = sections
        self.extractor = extractor or EntityExtractor(scispacy_model, abbreviations)

    def label(self, texts: Iterable[str | None],
              batch_size: int = 256) -> Iterator[tuple[list[float], list[Entity]]]:  # fmt: skip
        """(labels, entities) per text, in input order."""
        from cxrkit.text.entities import clean_text

        pending: deque = deque()

        def remember() -> Iterator[str | None]:
            for text in texts:
                pending.append(text)
                yield text

        for entities, readable, sections in self.extractor.extract_sections(remember(),
                                                                            batch_size):  # fmt: skip
            clean = clean_text(pending.popleft())
            chosen = (
                _chosen_sections(readable, sections, self.sections) if clean else LABEL_SECTIONS
            )
            labels = labels_from_entities(entities, chosen, has_letters(clean))
            yield labels, entities


def format_label(value: float) -> str:
    """CheXpert labeler CSV cell: "1.0" / "0.0" / "-1.0", blank for NaN."""
    return "" if math.isnan(value) else f"{value:.1f}"
