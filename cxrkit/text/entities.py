"""Clinical entities in radiology reports: a spaCy pipeline on scispaCy's tokenizer + our lexicon.

The default pipeline needs no trained model: ``spacy.blank("en")`` with
scispaCy's ``combined_rule_tokenizer`` (plus a "/" infix, so
"effusions/pneumothorax" is three tokens), scispaCy's ``AbbreviationDetector``
and an ``EntityRuler`` holding :mod:`cxrkit.text.lexicon`. With
``scispacy_model`` (a local directory or an installed package name) the
model's own pipeline runs first and the lexicon is added after its NER with
``overwrite_ents``: where both found something, the lexicon's entity (which
carries a CheXpert class) wins; the model's other entities are kept with
``chexpert = ""``.

Each mention gets negated / uncertain flags from :mod:`cxrkit.text.negation`
and its report section from :mod:`cxrkit.text.sections`.
"""

from __future__ import annotations

import bisect
import logging
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import spacy
from spacy.attrs import IDX, LENGTH
from spacy.language import Language
from spacy.tokens import Doc

from cxrkit.errors import ConfigError
from cxrkit.text.lexicon import (
    DEVICE,
    FINDING,
    NORMAL,
    SHIELD,
    entity_ruler_patterns,
    split_pattern_id,
    statement_regexes,
)
from cxrkit.text.negation import AssertionTagger
from cxrkit.text.readable import readable_text
from cxrkit.text.sections import Section, split_sections
from cxrkit.text.trie import word_trie

log = logging.getLogger(__name__)

MAX_CHARS = 100_000  # longer "reports" are garbage; only this prefix is read
RULER_NAME = "radiology_lexicon"


@dataclass(frozen=True)
class Entity:
    """One mention. ``start``/``end`` are character offsets into the report text given."""

    text: str
    label: str  # FINDING / ANATOMY / DEVICE / NORMAL, or the scispaCy model's label
    chexpert: str  # CheXpert class, "" when none
    start: int
    end: int
    negated: bool
    uncertain: bool
    section: str  # findings / impression / history / comparison / technique / body / ...

    def as_dict(self) -> dict:
        return asdict(self)


def _split_slashes(nlp: Language) -> None:
    """Add a "/" infix between letters ("effusion/pneumothorax" -> three tokens)."""
    tokenizer = nlp.tokenizer
    old = getattr(tokenizer, "infix_finditer", None)
    extra = r"(?<=[A-Za-z])/(?=[A-Za-z])"
    pattern = extra if old is None else f"{old.__self__.pattern}|{extra}"
    tokenizer.infix_finditer = re.compile(pattern).finditer


def _load_model(name: str | Path) -> Language:
    try:
        return spacy.load(name)
    except (OSError, ValueError, ImportError) as exc:
        raise ConfigError(
            f"--scispacy-model {name}: cannot load a spaCy pipeline from it ({exc}); "
            "give a directory written by nlp.to_disk() or an installed model package name, "
            "or leave the option out to use the model-free pipeline"
        ) from exc


def build_pipeline(
    scispacy_model: str | Path | None = None, abbreviations: bool = True
) -> Language:
    """Build the entity pipeline (once per process; it is the slow part to create).

    Takes an optional scispaCy/spaCy model (directory or package name) and
    whether to run the AbbreviationDetector. Returns a spaCy ``Language``.
    Raises ConfigError when the model cannot be loaded.
    """
    import scispacy.abbreviation  # noqa: F401  (registers the "abbreviation_detector" factory)

    if scispacy_model:
        nlp = _load_model(scispacy_model)
    else:
        from scispacy.custom_tokenizer import combined_rule_tokenizer

        nlp = spacy.blank("en")
        with warnings.catch_warnings():
            # scispaCy's infix regex contains "[[", which Python flags as a possible
            # future set union; the pattern is theirs and behaves as intended today.
            warnings.filterwarnings("ignore", "Possible set union", FutureWarning)
            nlp.tokenizer = combined_rule_tokenizer(nlp)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Possible set union", FutureWarning)
        _split_slashes(nlp)
    if abbreviations and "abbreviation_detector" not in nlp.pipe_names:
        detector = nlp.add_pipe("abbreviation_detector")
        # Its per-doc global matcher is empty between docs and spaCy warns (W036) on every
        # call; one pattern no token can match (tokens never hold a space) keeps it quiet.
        detector.global_matcher.add("__cxrkit_never__", [[{"ORTH": "\x00 \x00"}]])
    after = "ner" if "ner" in nlp.pipe_names else None
    ruler = nlp.add_pipe(
        "entity_ruler",
        name=RULER_NAME,
        after=after,
        config={"phrase_matcher_attr": "LOWER", "overwrite_ents": True},
    )
    ruler.add_patterns(entity_ruler_patterns())
    return nlp


class EntityExtractor:
    """Extracts :class:`Entity` lists from report texts, streaming, with one pipeline."""

    def __init__(self, scispacy_model: str | Path | None = None, abbreviations: bool = True,
                 nlp: Language | None = None) -> None:  # fmt: skip
        self.nlp = nlp if nlp is not None else build_pipeline(scispacy_model, abbreviations)
        self.tagger = AssertionTagger(self.nlp)
        self.abbreviations = "abbreviation_detector" in self.nlp.pipe_names
        # Statements ("the heart size is mildly enlarged") are matched as regexes over the
        # text here rather than as EntityRuler token patterns: spaCy's Matcher with optional
        # tokens costs ~0.5 ms per report, the regexes a few microseconds.
        # A statement can only start at one of its first words: find those with one small
        # regex, then try only the statements that start with the word found.
        self.statements: dict[str, list[tuple]] = {}
        for rx, label, ident, first_words in statement_regexes():
            compiled = (re.compile(rx, re.IGNORECASE), label, *split_pattern_id(ident))
            for word in first_words:
                self.statements.setdefault(word, []).append(compiled)
        self.statement_start = re.compile(rf"\b{word_trie(self.statements)}\b", re.IGNORECASE)

    def extract(self, texts: Iterable[str | None], batch_size: int = 256) -> Iterator[list[Entity]]:
        """Entities per text, in input order. None/empty/non-string texts give []."""
        for entities, _, _ in self.extract_sections(texts, batch_size):
            yield entities

    def extract_sections(self, texts: Iterable[str | None], batch_size: int = 256
                         ) -> Iterator[tuple[list[Entity], str, list[Section]]]:  # fmt: skip
        """(entities, readable text, its sections) per text, in input order: the text the
        pipeline read (:func:`readable_text`) and the sections found in it."""
        items = ((*readable_text(text), text) for text in map(clean_text, texts))
        pairs = ((readable, (text, readable, origin)) for readable, origin, text in items)
        for doc, (text, readable, origin) in self.nlp.pipe(pairs, as_tuples=True,
                                                           batch_size=batch_size):  # fmt: skip
            sections = split_sections(readable)
            yield self.entities(doc, text, readable, origin, sections), readable, sections

    def entities(self, doc: Doc, text: str | None = None, readable: str | None = None,
                 origin: list[int] | None = None,
                 sections: list[Section] | None = None) -> list[Entity]:  # fmt: skip
        """Entities of one processed doc, with assertion flags and sections.

        ``doc`` is the pipeline's run over ``readable`` (:func:`readable_text` of the
        report ``text``; ``origin`` maps its characters back to ``text``, None when
        the offsets are the same). Sections are found in ``readable`` (headers read
        through the debris it removes); offsets are those of ``text``. Without
        ``text``, the doc's text is the report (``doc.text`` is rebuilt from the tokens
        on every access, which is slow).
        """
        if not len(doc):
            return []
        text = doc.text if text is None else text
        readable = text if readable is None else readable
        offsets = doc.to_array([IDX, LENGTH])  # (T, 2): character offset and length per token
        mentions = [(e.start, e.end, e.label_, *split_pattern_id(e.ent_id_)) for e in doc.ents]
        mentions = _longest_first([*self._statements(readable, offsets[:, 0].tolist()),
                                   *mentions])  # fmt: skip
        mentions = [m for m in mentions if m[2] != SHIELD]  # shields only kept words from others
        if self.abbreviations:
            mentions += self._abbreviation_mentions(doc, mentions)
        mentions.sort()
        sections = split_sections(readable) if sections is None else sections
        section_starts = [section.start for section in sections]
        breaks = set()
        if len(sections) > 1:
            breaks = {int(i) for i in np.searchsorted(offsets[:, 0], section_starts)}
        tagged = [m for m in mentions if m[2] != NORMAL and m[4] in ("", "hedged")]
        spans = [(m[0], m[1]) for m in tagged]
        joinable = [m[2] in (FINDING, DEVICE) or bool(m[3]) for m in tagged]
        flags = dict(zip(spans, self.tagger.tag(doc, spans, breaks, joinable), strict=True))
        out = []
        for start, end, label, chexpert, fixed in mentions:
            first, last = int(offsets[start, 0]), int(offsets[end - 1, 0] + offsets[end - 1, 1])
            section = sections[max(bisect.bisect_right(section_starts, first) - 1, 0)]
            if origin is not None:
                first, last = origin[first], max(origin[last], origin[first] + 1)
            negated, uncertain = flags.get((start, end), (fixed == "negated", fixed == "uncertain"))
            if fixed == "hedged" and not negated:  # CheXpert: uncertain unless negated
                uncertain = True
            out.append(Entity(text[first:last], label, chexpert, first, last, negated, uncertain,
                              section.name))  # fmt: skip
        return out

    def _statements(self, text: str, starts: list[int]) -> list[tuple]:
        """Mentions from the lexicon's statement regexes, as token ranges."""
        found = []
        statements = self.statements
        for hit in self.statement_start.finditer(text):
            position = hit.start()
            for regex, label, chexpert, fixed in statements[hit.group().lower()]:
                match = regex.match(text, position)
                if match is not None:
                    first = bisect.bisect_right(starts, position) - 1
                    last = bisect.bisect_left(starts, match.end())
                    found.append((max(first, 0), last, label, chexpert, fixed))
        return found

    @staticmethod
    def _abbreviation_mentions(doc: Doc, mentions: list[tuple]) -> list[tuple]:
        """Short forms defined in the text ("endotracheal tube (ETT)") inherit the long form's class."""
        extra: list[tuple] = []
        taken = {i for m in mentions for i in range(m[0], m[1])}
        for short in doc._.abbreviations:
            long = short._.long_form
            if long is None or any(i in taken for i in range(short.start, short.end)):
                continue
            for start, end, label, chexpert, fixed in mentions:
                if chexpert and start < long.end and end > long.start:
                    extra.append((short.start, short.end, label, chexpert, fixed))
                    taken.update(range(short.start, short.end))
                    break
        return extra


def _longest_first(mentions: list[tuple]) -> list[tuple]:
    """Drop mentions overlapping a longer (or, at equal length, earlier-listed) one."""
    taken: set[int] = set()
    kept = []
    for mention in sorted(mentions, key=lambda m: m[0] - m[1]):  # stable: list order breaks ties
        span = range(mention[0], mention[1])
        if not taken.intersection(span):
            kept.append(mention)
            taken.update(span)
    return kept


def clean_text(text: object) -> str:
    """The text spaCy sees: "" for None/NaN/non-text, truncated at MAX_CHARS (offsets stay valid)."""
    if text is None or isinstance(text, float):
        return ""
    if not isinstance(text, str):
        text = str(text)
    return text[:MAX_CHARS]
