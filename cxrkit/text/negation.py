"""Negation and uncertainty of entity mentions, scoped to clauses (a NegEx-style tagger).

A cue phrase ("no", "without", "cannot be excluded", ...) affects the mentions
in its own clause only: pre-cues the mentions after them (within
``PRE_WINDOW`` tokens), post-cues the mentions before them (within
``POST_WINDOW``). Clauses end at sentence punctuation, line breaks, section
headers and terminators ("but", "however", "although", ...). Overlapping cues
resolve to the longest one, so "cannot be excluded" (uncertain) wins over the
"not" inside it, and pseudo-cues ("no change in", "no increase") cancel the
negation they look like. When cues of several kinds reach a mention, the
CheXpert labeler's order decides (``stages/classify.py``): pre-negation
uncertainty ("no new", "cannot exclude", "no evidence to rule out") > negation
("no", "exclude", "rule out", "history of", "clearing of") > post-negation
uncertainty ("possible", "may", "question", "is compatible with", "secondary to",
"not well seen", "X or Y").
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc

# spaCy is imported where the tagger is built and used, not here: the cue lists and
# windows below are read without it (annotate's labeler fingerprint decides a no-op
# re-run before any pipeline is built).

# Negations as CheXpert's negation.txt has them, with one deliberate departure: "absence
# of" and "denies" are not there (its "of" list, line 60, is history|free|disappearance|
# resolution|drainage|removal), so the reference calls "absence of pneumothorax" a
# pneumothorax. That is a gap in its patterns, not a convention a reader would defend, and
# radiologists label such text negative, so they negate here (REFERENCE_DEPARTURES).
REFERENCE_DEPARTURES = ("absence of", "denies")
PRE_NEG = (
    "no", "not", "without", "negative for", "free of", "clear of", "no evidence of",
    "no evidence for", "no radiographic evidence of", "no sign of", "no signs of",
    "no findings of", "no findings to suggest", "absent", "resolution of",
    "resolved", "interval resolution of", "removal of", "interval removal of", "nor",
    "neither", "no definite", "no obvious", "no convincing", "no suspicious", "rather than",
    "never", "no longer", *REFERENCE_DEPARTURES, "are clear of", "is clear of", "are free of", "is free of",
    "remain clear of", "remains clear of", "otherwise clear of",
    # "Negative acute cardiopulmonary abnormality": "negative" before what it denies
    "negative",
    # "Lungs are expanded and clear airspace disease" (a template that drops the "of")
    "and clear",
    # CheXpert's negation.txt: "exclude XXX" and "rule out XXX" are negations; only
    # "cannot exclude / rule out" and "no evidence to rule out" (PRE_XUNC, longer) hedge.
    "exclude", "to exclude", "rule out", "rule-out", "to rule out", "to rule-out", "r/o",
    # negation.txt: "clear|clearing of XXX" ("there has been clearing of the opacities"),
    # "history | disappearance | drainage of XXX" (with resolution / removal / free of)
    "clearing of", "interval clearing of", "clearance of", "disappearance of",
    "interval disappearance of", "drainage of",
    # longer than the post-cue "with interval resolution": what follows "of" is resolved
    "with interval resolution of", "with resolution of",
)  # fmt: skip
POST_NEG = (
    "resolved", "has resolved", "have resolved", "is resolved", "are resolved",
    "not seen", "is not seen", "are not seen", "not identified",
    "not present", "not demonstrated", "not evident", "not detected",
    "absent", "is absent", "are absent", "no longer seen", "no longer present",
    "no longer visualized", "no longer identified", "has been removed", "have been removed",
    "removed", "is gone", "has cleared", "have cleared", "ruled out", "negative",
    "excluded", "is excluded", "are excluded", "has been excluded", "been ruled out",
    "not noted", "not found", "not enlarged", "within normal limits", "within limits of normal",
    "within normal limits for", "is normal", "are normal", "appears normal", "appear normal",
    "is unremarkable", "are unremarkable", "is clear", "are clear", "is within normal limits",
    "are within normal limits", "not in place", "is not in place", "are not in place",
    "no longer in place",
    # negation.txt: "XXX with interval resolution"
    "with interval resolution",
    # "fractures may not be demonstrated": a disclaimer. CheXpert matches the negation
    # ("not demonstrated") before post-negation uncertainty ("may").
    "may not be demonstrated", "may not be seen", "may not be visible", "may not be visualized",
    "may not be detected", "may not be identified", "may not be apparent", "may not be evident",
)  # fmt: skip
# Hedges are those of CheXpert's pattern files, not every word that reads as one: the
# reference has no pattern for likely / most likely / probably / unlikely / perhaps / presumed /
# equivocal / indeterminate / alternatively / suggestive of / suggesting / evaluate for /
# "in the appropriate clinical setting" / "clinical correlation for" / "?", and labels what
# they qualify positive; so do we (users put our labels next to the reference's).
PRE_UNC = (
    "possible", "possibly", "may", "may represent", "may be", "may reflect",
    "may indicate", "might", "could", "could represent", "could be", "could reflect",
    "can represent", "probable", "questionable", "question", "question of",
    "questioned", "suspicious", "suspicious for", "suspect", "suspected", "suspicion for",
    "concern for", "concerning for", "consider", "considered",
    "cannot exclude", "can not exclude", "cannot rule out", "can not rule out",
    "not exclude", "differential", "differential diagnosis",
    "borderline", "presumably",
    "cannot be excluded", "maybe",
    "cannot be entirely excluded", "may be compatible with",
    "correlation for symptoms of", "clinical correlation for symptoms of",
    # CheXpert's post_negation_uncertainty.txt: worrisome for, correlate clinically for,
    # may/could be consistent with, favor, suggestion of.
    "worrisome for", "correlate clinically for", "clinically correlate for",
    "may be consistent with", "might be consistent with", "could be consistent with",
    "can be consistent with", "could be compatible with", "might be compatible with",
    "favor", "favors", "favoring", "favored", "favored as", "favored to be",
    "favored to represent", "suggestion of",
    # post_negation_uncertainty.txt: "compatible with" under a form of "be" ("this appearance
    # is compatible with pneumonia"; without the verb it is not a hedge there).
    "is compatible with", "are compatible with", "be compatible with", "was compatible with",
    "were compatible with",
    # post_negation_uncertainty.txt: "{} <{dependency:/nmod:to/} {lemma:/secondary/}" makes
    # whatever is "secondary to" uncertain ("blunting secondary to a small effusion").
    "secondary to",
    # post_negation_uncertainty.txt lines 67, 76, 82: "would" and "can" hedge too, under
    # represent / reflect / indicate / include, "due to" and (would) "compatible with".
    "would represent", "would reflect", "would indicate", "would include", "can reflect",
    "can indicate", "can include", "would be due to", "can be due to",
    "would be compatible with",
)  # fmt: skip
# Pre-negation uncertainty (CheXpert's patterns/pre_negation_uncertainty.txt): matched before
# negation, so "no new consolidation" and "no evidence to rule out pneumonia" are uncertain.
# "difficult to exclude X" is not one: with neither "cannot" nor a neg under "exclude", the
# reference's negation.txt ("exclude XXX") negates X.
PRE_XUNC = (
    "no new", "no new area of", "no new areas of", "no evidence to rule out",
    "cannot exclude", "can not exclude", "cannot rule out", "can not rule out",
    "not exclude", "cannot be excluded", "cannot be entirely excluded",
)  # fmt: skip
POST_UNC = (
    "cannot be excluded", "can not be excluded", "could not be excluded", "not excluded",
    "is not excluded", "are not excluded", "not entirely excluded", "not be excluded",
    "cannot be entirely excluded", "cannot be ruled out", "can not be ruled out",
    "not ruled out", "not be ruled out", "is possible", "are possible", "is suspected",
    "are suspected", "is questioned", "is not entirely excluded",
    "suspected", "possible", "questionable", "is questionable",
    "may be present", "could be present", "would be difficult to exclude",
    "difficult to exclude", "not completely excluded", "or not", "would be a consideration",
    "be a consideration", "may not be", "may be in place", "might be in place",
    "is favored", "are favored", "another consideration", "is another consideration",
    "a consideration", "is a consideration", "also a consideration", "considerations",
    # CheXpert: "XXX is not well visualized / poorly / incompletely evaluated", "not clearly
    # seen", "obscured" are uncertain, not negated.
    "not well seen", "not well visualized", "not well visualised", "not well evaluated",
    "not well demonstrated", "not well assessed", "not clearly seen", "not clearly visualized",
    "poorly evaluated", "poorly visualized", "poorly seen", "incompletely evaluated",
    "incompletely visualized", "obscured", "is obscured", "are obscured", "may be obscured",
    # "XXX is not visualized" ({lemma:/evaluate|visualize/} > neg) and "XXX was not
    # appreciated" are uncertain there, not negated ("not seen" is a negation)
    "not visualized", "not visualised", "not appreciated",
    # post_negation_uncertainty.txt: "XXX could appear", "XXX may have this appearance". (Its
    # "XXX is less likely", line 38, never matches: it puts a lemma on an edge, and NegBio's
    # edges carry only a dependency; so "less likely" is not a hedge here either.)
    "could appear", "may appear",
    "might appear", "can appear", "may have this appearance", "could have this appearance",
    "might have this appearance", "may also have this appearance",
    "could also have this appearance",
)  # fmt: skip
POST_XUNC = (
    "cannot be excluded", "can not be excluded", "could not be excluded", "not excluded",
    "is not excluded", "are not excluded", "not entirely excluded", "not be excluded",
    "cannot be entirely excluded", "cannot be ruled out", "can not be ruled out",
    "not ruled out", "not be ruled out", "is not entirely excluded",
    "would be difficult to exclude", "difficult to exclude", "not completely excluded",
)  # fmt: skip
PSEUDO = (
    "no change", "no significant change", "no interval change", "no significant interval change",
    "not changed", "not significantly changed", "no increase", "no significant increase",
    "no decrease", "no further", "not only", "without change", "without significant change",
    "without interval change", "no worsening", "not worsened", "no substantial change",
    "no appreciable change", "no definite change", "not appreciably changed",
    "no significant interval", "without significant interval",
)  # fmt: skip
TERMINATORS = (
    "but", "however", "although", "though", "yet", "except", "aside from", "apart from",
    "which", "whereas", "otherwise", "other than", "with", "there is",
    "there are", "as well as",
    # a participle and a comma close a statement: "no definite pleural effusion seen, left
    # hilar calcifications and dense nodule ..." (the nodule is not negated)
    "seen ,", "identified ,", "noted ,", "demonstrated ,", "present ,", "visualized ,",
)  # fmt: skip

# "X versus Y" hedges its two conjuncts only (CheXpert: conj:versus), not every mention
# near it: the nearest finding on each side, within the windows, in the clause.
VERSUS = ("versus", "vs", "vs.", "verses")
OR_GAP = 3  # at most this many tokens between two mentions joined by "or" ("or early")
ATTRIBUTIVE_GAP = 4  # "possible <up to 4 words> effusion": the cue modifies what follows
_OR_WORDS = frozenset({"or", "and/or", "/"})
PRE_WINDOW = 12  # tokens from the end of a pre-cue to the start of its mention
POST_WINDOW = 6  # tokens from the end of a mention to the start of its post-cue

# Negations that reach only their own object, the words right after them up to a comma:
# negation.txt's "history of XXX" (nmod:of), not "given a history of cancer, the nodules
# are suspicious" (the nodules are not history).
NARROW_NEG = ("history of", "a history of", "known history of", "prior history of",
              "past history of")  # fmt: skip
NARROW_WINDOW = 4  # tokens from the end of a narrow negation to the start of its mention

PRE_UNC = tuple(p for p in PRE_UNC if p not in PRE_XUNC)
POST_UNC = tuple(p for p in POST_UNC if p not in POST_XUNC)
_KINDS = {"PRE_NEG": PRE_NEG, "POST_NEG": POST_NEG, "PRE_UNC": PRE_UNC, "POST_UNC": POST_UNC,
          "PRE_XUNC": PRE_XUNC, "POST_XUNC": POST_XUNC, "PSEUDO": PSEUDO,
          "TERM": TERMINATORS, "VS": VERSUS, "PRE_NARROW": NARROW_NEG}  # fmt: skip
_PRE = ("PRE_NEG", "PRE_UNC", "PRE_XUNC", "PRE_NARROW")
_POST = ("POST_NEG", "POST_UNC", "POST_XUNC")
_CLAUSE_END = frozenset({".", ";", "!", ":", "?", "..", "...", "....", ".;", ";.", "?."})


@dataclass(frozen=True)
class Cue:
    """A matched cue: token span ``[start, end)`` and its kind (PRE_NEG, POST_UNC, ...)."""

    kind: str
    start: int
    end: int


class AssertionTagger:
    """Decides, per entity span, whether it is negated and/or uncertain.

    Built once per pipeline (it tokenises the cue lists with ``nlp``'s tokenizer
    so that cues and text split the same way); call :meth:`tag` per document.
    """

    def __init__(self, nlp: Language) -> None:
        from spacy.matcher import PhraseMatcher

        self.matcher = PhraseMatcher(nlp.vocab, attr="LOWER")
        for kind, phrases in _KINDS.items():
            # The tokenizer's exceptions are case-sensitive: "cannot" is two tokens, "CANNOT"
            # one. Matching is on LOWER, so each distinct tokenisation of a cue is added.
            docs = {}
            for phrase in dict.fromkeys(phrases):
                for form in (phrase, phrase.upper(), phrase.capitalize()):
                    doc = nlp.make_doc(form)
                    docs.setdefault(tuple(t.lower_ for t in doc), doc)
            self.matcher.add(kind, list(docs.values()))
        self.strings = nlp.vocab.strings
        self.or_ids = frozenset(nlp.vocab.strings.add(w) for w in _OR_WORDS)
        # Whitespace tokens holding a line break end a clause too; list the common ones.
        ends = [*_CLAUSE_END, *("\n" * n + " " * k for n in range(1, 5) for k in range(4))]
        self.clause_end_ids = frozenset(nlp.vocab.strings.add(t) for t in ends)

    def cues(self, doc: Doc) -> list[Cue]:
        """Non-overlapping cues in ``doc`` (longest match wins), in text order."""
        matches = self.matcher(doc)
        kinds: dict[tuple[int, int], set[str]] = {}
        for match_id, start, end in matches:
            kinds.setdefault((start, end), set()).add(self.strings[match_id])
        # Longest first, then leftmost; a cue overlapping a kept one is dropped.
        taken: set[int] = set()
        kept = []
        for start, end in sorted(kinds, key=lambda se: (se[0] - se[1], se[0])):
            if not taken.intersection(range(start, end)):
                kept.append((start, end))
                taken.update(range(start, end))
        # A kept post-cue ending in a shorter pre-cue still governs what follows: "would be
        # difficult to exclude (POST) a pneumonia" holds "to exclude" (PRE, a negation as in
        # CheXpert's negation.txt); the longest such pre-cue lends its kinds.
        pre_by_end: dict[int, list[tuple[int, set[str]]]] = {}
        for (s, e), ks in kinds.items():
            if ks & set(_PRE):
                pre_by_end.setdefault(e, []).append((s, ks & set(_PRE)))
        for start, end in kept:
            if not kinds[(start, end)] & set(_PRE):
                inner = [(s, ks) for s, ks in pre_by_end.get(end, ()) if s > start]
                if inner:
                    kinds[(start, end)] |= min(inner, key=lambda item: item[0])[1]
        # One phrase may be several kinds ("absent" is PRE_NEG and POST_NEG).
        return [Cue(kind, s, e) for s, e in sorted(kept) for kind in sorted(kinds[(s, e)])]

    def clause_ids(self, doc: Doc, cues: list[Cue], breaks: set[int]) -> np.ndarray:
        """A clause number per token; ``breaks`` holds extra token indices that start a clause."""
        from spacy.attrs import ORTH

        orth = doc.to_array(ORTH)  # (T,)
        starts = np.zeros(len(doc) + 1, dtype=np.int32)
        ends = np.fromiter((o in self.clause_end_ids for o in orth.tolist()), bool, len(orth))
        starts[1:] = ends
        for i in breaks:
            starts[i] = 1
        for cue in cues:
            if cue.kind == "TERM":
                starts[cue.start] = starts[cue.end] = 1
        return np.cumsum(starts[:-1])

    def tag(
        self,
        doc: Doc,
        spans: list[tuple[int, int]],
        breaks: set[int] | None = None,
        alternatives: list[bool] | None = None,
    ) -> list[tuple[bool, bool]]:
        """(negated, uncertain) for each token span ``(start, end)`` of ``doc``, in the
        order given (any order).

        ``alternatives`` marks the spans that "X or Y" can hedge (findings, devices;
        default all): "left or right lung" hedges no anatomy.
        """
        if not spans:
            return []
        cues = self.cues(doc)
        if not cues and len(spans) < 2:  # no cue, no "X or Y": nothing to decide
            return [(False, False)] * len(spans)
        clause = self.clause_ids(doc, cues, breaks or set())
        # Cues are in text order and do not overlap, so their starts and ends are sorted:
        # each mention looks only at the cues in its windows (bisect), never at all of them
        # (a 100,000-character report has thousands of each).
        pre = [c for c in cues if c.kind in _PRE]
        pre_ends = [c.end for c in pre]
        # A hedge inside a negated list is itself negated: "no consolidation, suspicious
        # opacity, or pneumothorax" -> pneumothorax is negated, not uncertain.
        kind_of = {c: self._pre_kind(c, _within(pre, pre_ends, c.start - PRE_WINDOW, c.start),
                                     clause) for c in pre}  # fmt: skip
        joinable = [i for i in range(len(spans)) if alternatives is None or alternatives[i]]
        hedged = {joinable[i] for i in self._alternatives(doc, [spans[i] for i in joinable],
                                                          clause)}  # fmt: skip
        hedged |= self._versus(cues, spans, joinable, clause)
        findings = sorted(spans[i] for i in joinable)  # by start: looked up by bisect
        finding_starts = [s for s, _ in findings]
        post = self._predicative(doc, pre, [c for c in cues if c.kind in _POST], findings,
                                 finding_starts)  # fmt: skip
        pre_starts, post_starts = [c.start for c in pre], [c.start for c in post]
        results = []
        for index, (start, end) in enumerate(spans):
            before = [c for c in _within(pre, pre_ends, start - PRE_WINDOW, start)
                      if clause[c.start] == clause[start]
                      and (c.kind != "PRE_NARROW"
                           or self._narrow_reach(doc, c, start, findings, finding_starts))]  # fmt: skip
            after = [c for c in _within(post, post_starts, end, end + POST_WINDOW)
                     if clause[c.start] == clause[end - 1]]  # fmt: skip
            # The cue nearest to the mention decides, on each side.
            kinds = set()
            if end - start > 2:  # a statement may hold a hedge: "the heart may be enlarged"
                inside = [*_within(pre, pre_starts, start, end - 1),
                          *_within(post, post_starts, start, end - 1)]  # fmt: skip
                kinds = {kind_of.get(c) or c.kind.removeprefix("POST_") for c in inside
                         if c.end <= end}  # fmt: skip
                kinds.discard("NEG")  # a negated statement is its own lexicon entry
            if before:
                kinds.add(kind_of[max(before, key=lambda c: (c.end, c.start))])
            if after:
                kinds.add(min(after, key=lambda c: c.start).kind.removeprefix("POST_"))
            if index in hedged:
                kinds.add("UNC")
            results.append(resolve(kinds))
        return results

    def _alternatives(self, doc: Doc, spans: list[tuple[int, int]], clause) -> set[int]:
        """Indices of spans joined to a neighbour by "or" / "and/or" / "/" ("X or Y").

        CheXpert makes both sides of an "or" uncertain (post-negation, so "no X or Y"
        stays negated); its loader reads "and/or" and "X/Y" as "or".
        """
        order = sorted(range(len(spans)), key=lambda i: spans[i])
        out: set[int] = set()
        lower = None
        for a, b in zip(order, order[1:], strict=False):
            gap_start, gap_end = spans[a][1], spans[b][0]
            if not 0 < gap_end - gap_start <= OR_GAP or clause[spans[a][0]] != clause[gap_end]:
                continue
            if lower is None:
                from spacy.attrs import LOWER

                lower = doc.to_array(LOWER).tolist()
            if any(lower[i] in self.or_ids for i in range(gap_start, gap_end)):
                out.update((a, b))
        return out

    @staticmethod
    def _narrow_reach(doc: Doc, cue: Cue, start: int, findings: list[tuple[int, int]],
                      finding_starts: list[int]) -> bool:  # fmt: skip
        """Whether a narrow negation reaches a mention starting at token ``start``: close,
        no punctuation and no other finding between."""
        return (
            start - cue.end <= NARROW_WINDOW
            and not any(t.is_punct for t in doc[cue.end : start])
            and not any(e <= start for _, e in _within(findings, finding_starts, cue.end, start))
        )

    @staticmethod
    def _predicative(doc: Doc, pre: list[Cue], post: list[Cue], spans: list[tuple[int, int]],
                     span_starts: list[int]) -> list[Cue]:  # fmt: skip
        """``post`` less the cues that also are pre-cues and stand before a finding.

        "possible" / "questionable" / "suspected" / "resolved" before a finding modify
        it ("cardiomegaly and possible small effusion"), not what came before them; only
        a predicate ("pneumonia is possible", "effusion, possible") looks back.
        """
        dual = {(c.start, c.end) for c in pre}
        out = []
        for cue in post:
            if (cue.start, cue.end) in dual and any(
                not any(t.is_punct for t in doc[cue.end : start])
                for start, _ in _within(spans, span_starts, cue.end, cue.end + ATTRIBUTIVE_GAP)
            ):
                continue
            out.append(cue)
        return out

    @staticmethod
    def _versus(cues: list[Cue], spans: list[tuple[int, int]], joinable: list[int],
                clause) -> set[int]:  # fmt: skip
        """Indices of the spans "versus" joins: the nearest joinable span on each side."""
        out: set[int] = set()
        for cue in (c for c in cues if c.kind == "VS"):
            before = [i for i in joinable if spans[i][1] <= cue.start
                      and cue.start - spans[i][1] <= POST_WINDOW
                      and clause[spans[i][1] - 1] == clause[cue.start]]  # fmt: skip
            after = [i for i in joinable if spans[i][0] >= cue.end
                     and spans[i][0] - cue.end <= PRE_WINDOW
                     and clause[spans[i][0]] == clause[cue.start]]  # fmt: skip
            if before:
                out.add(max(before, key=lambda i: spans[i][1]))
            if after:
                out.add(min(after, key=lambda i: spans[i][0]))
        return out

    @staticmethod
    def _pre_kind(cue: Cue, pre: list[Cue], clause: list[int]) -> str:
        """NEG, UNC or XUNC for a pre-cue; a plain hedge under an earlier negation is NEG."""
        if cue.kind == "PRE_NARROW":
            return "NEG"
        if cue.kind != "PRE_UNC":
            return cue.kind.removeprefix("PRE_")
        for other in pre:
            if (other.kind == "PRE_NEG" and other.end <= cue.start
                    and cue.start - other.end <= PRE_WINDOW
                    and clause[other.start] == clause[cue.start]):  # fmt: skip
                return "NEG"
        return "UNC"


def _within(items: list, keys: list[int], low: int, high: int) -> list:
    """The ``items`` whose key (``keys``, sorted, one per item) is in ``[low, high]``."""
    return items[bisect.bisect_left(keys, low) : bisect.bisect_right(keys, high)]


def resolve(kinds: set[str]) -> tuple[bool, bool]:
    """(negated, uncertain) from the cue kinds that reach a mention, in CheXpert's order.

    Pre-negation uncertainty (XUNC: "no new", "cannot exclude") wins over negation
    (NEG), which wins over post-negation uncertainty (UNC: "possible", "or").
    """
    if "XUNC" in kinds:
        return False, True
    if "NEG" in kinds:
        return True, False
    return False, "UNC" in kinds
