"""The text the entity pipeline reads, and the map from it back to the report's characters.

Reports arrive with the debris of the systems that wrote them: MIMIC-CXR wraps lines at
~80 columns and indents each with a space, exports carry CRLF, tabs, no-break spaces,
typographic dashes and quotes, soft hyphens, zero-width characters and HTML entities
("&nbsp;"). spaCy splits on single spaces only, so every extra space, indentation or
foreign space character becomes a token of its own and breaks a phrase or cue that spans
it ("cannot be\\n excluded", "pleural&nbsp;effusion").

:func:`readable_text` rewrites all that into plain text (single spaces, "\\n" line breaks,
ASCII punctuation) and returns, with it, where each of its characters came from, so that
mentions are reported at their exact offsets in the text the user gave.
"""

from __future__ import annotations

import html
import re
import unicodedata
from functools import lru_cache
from typing import NamedTuple

from cxrkit.text.sections import HEADERS

# "3.no effusion", "2)Cardiomegaly": list numbering glued to the next word.
_GLUED_NUMBER = re.compile(r"(?<![\w.])(\d{1,2})[.)](?=[A-Za-z])")
_GLUED_HINT = re.compile(r"\d[.)][A-Za-z]")

# Pass 1: CRLF, HTML character references and formatting tags, and any character that is
# not printable ASCII, a space or "\n". Block tags end a line, inline ones are a space;
# only these names are tags ("nodule <5 mm" is text).
_BLOCK_TAGS = "br|p|div|li|ul|ol|tr|td|th|table|tbody|thead|h[1-6]|pre|hr|blockquote"
_INLINE_TAGS = "b|i|u|em|strong|span|font|sup|sub|small|big|a|code|tt"
_SPECIAL = re.compile(
    r"\r\n|&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});"
    rf"|<(?P<block>/?(?:{_BLOCK_TAGS})\b[^<>]{{0,200}})>|<(?P<inline>/?(?:{_INLINE_TAGS})\b[^<>]{{0,200}})>"
    r"|[^\n\x20-\x7e]",
    re.IGNORECASE,
)
_SPECIAL_HINT = re.compile(r"[^\n\x20-\x25\x27-\x3b\x3d-\x7e]")  # what _SPECIAL may match
_LINE_BREAKS = frozenset("\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
_QUOTES = {"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
           "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
           "\u00ab": '"', "\u00bb": '"'}  # fmt: skip

# Pass 2: runs of spaces and line breaks. A run is one space, or its line breaks: one,
# or a blank line for two or more. A single break inside a sentence (a wrapped line:
# after a word or comma, before a lower-case word) is a space. A blank line, or a break
# after sentence punctuation, stays a break.
# Before a capital the case cannot tell: a break is a wrap when its line ran to the wrap
# column (at least WRAP_COLUMN characters), the next line is neither a section header
# alone nor an upper-case title in mixed-case text, and the line runs on or a sentence
# ends inside it or the next line; a list item otherwise.
_SPACE_RUN = re.compile(r"[ \n]{2,}|\n")
# A wrap, not a list item, shows itself: the line runs on (a comma, an article, a
# preposition, a conjunction) or the text around it writes sentences with full stops
# (impression lists are often written without them).
_RUNS_ON = re.compile(
    r"(?:,|\b(?:a|an|the|of|to|in|on|at|by|for|from|with|without|since|than|and|or|as|per|into|"
    r"is|are|was|were|no|not|any|evidence|likely|possible|possibly))$",
    re.IGNORECASE,
)
_SENTENCE_INSIDE = re.compile(r"[A-Za-z]{2}[.!?;] +[A-Za-z]")
_SPACE_HINT = re.compile(r"  | \n|\n |\n\n\n|[A-Za-z,]\n[a-zA-Z]")
WRAP_COLUMN = 60


@lru_cache(maxsize=4096)
def _plain(char: str) -> str:
    """What one non-ASCII (or control) character reads as: "" for an invisible one."""
    if char in _LINE_BREAKS:
        return "\n"
    if char == "\t":
        return " "
    category = unicodedata.category(char)
    if category == "Zs":  # no-break, thin, em ... spaces
        return " "
    if category == "Pd":  # en / em dashes, hyphens
        return "-"
    if category in ("Cf", "Cc", "Co", "Cs", "Cn"):  # soft hyphen, zero-width, BOM, controls
        return ""
    if char in _QUOTES:
        return _QUOTES[char]
    normal = unicodedata.normalize("NFKC", char)  # full-width letters, ligatures
    return char if normal == char else "".join(c if c.isascii() else _plain(c) for c in normal)


def _replacement(match: re.Match) -> str:
    piece = match.group()
    if piece == "\r\n":
        return "\n"
    if match.group("block") is not None:
        return "\n"
    if match.group("inline") is not None:
        return " "
    if piece[0] == "&":
        decoded = html.unescape(piece)
        return piece if decoded == piece else "".join(map(_plain_or_ascii, decoded))
    return _plain(piece)


def _plain_or_ascii(char: str) -> str:
    return char if "\x20" <= char <= "\x7e" or char == "\n" else _plain(char)


def _space_run(text: str, match: re.Match) -> str:
    run = match.group()
    breaks = run.count("\n")
    if not breaks:
        return " "
    if breaks >= 2:
        return "\n\n"
    start, end = match.start(), match.end()
    if not (start > 0 and (text[start - 1].isalpha() or text[start - 1] == ",")
            and end < len(text) and text[end].isalpha()):  # fmt: skip
        return "\n"
    if text[end].islower():
        return " "
    line_start = text.rfind("\n", 0, start) + 1
    if start - line_start < WRAP_COLUMN:
        return "\n"
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end
    following = text[end:line_end]
    if following.strip(" :").lower() in HEADERS:
        return "\n"
    line = text[line_start:start]
    if not (_RUNS_ON.search(line) or _SENTENCE_INSIDE.search(line)
            or _SENTENCE_INSIDE.search(following)):  # fmt: skip
        return "\n"  # a list item of its own: no full stop around it, nothing left open
    caps = not any(c.islower() for c in text[line_start:start])
    return " " if caps or any(c.islower() for c in following) else "\n"


def _rewrite(text: str, pattern: re.Pattern, replace) -> tuple[str, list[int], list[int]] | None:
    """Apply ``replace(match) -> str`` at every match; None when nothing changes.

    Returns the new text and, per new character, where in the old text the piece it
    comes from starts and ends (a copied character: itself; a replacement's
    characters: what it replaced; a blank line's two breaks: one break of the run
    each), plus ``len(text)`` at the end of both.
    """
    pieces: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    position = 0
    changed = False
    for match in pattern.finditer(text):
        new = replace(match)
        if new == match.group():
            continue
        changed = True
        start, end = match.span()
        pieces.append(text[position:start])
        starts.extend(range(position, start))
        ends.extend(range(position + 1, start + 1))
        pieces.append(new)
        if new == "\n\n":  # a blank line: each break from a break of the run
            first = text.index("\n", start)
            second = text.index("\n", first + 1)
            starts.extend((first, second))
            ends.extend((first + 1, second + 1))
        else:
            starts.extend([start] * len(new))
            ends.extend([end] * len(new))
        position = end
    if not changed:
        return None
    pieces.append(text[position:])
    starts.extend(range(position, len(text) + 1))
    ends.extend(range(position + 1, len(text) + 2))
    ends[-1] = len(text)
    return "".join(pieces), starts, ends


def readable_text(text: str) -> tuple[str, Origin | None]:
    """The text the pipeline reads, and where its characters come from in ``text``.

    Returns ``(readable, origin)``: ``readable[i]`` comes from the characters
    ``text[origin.starts[i]:origin.ends[i]]`` (both lists hold ``len(text)`` at index
    ``len(readable)``); :meth:`Origin.span` maps a span. ``origin`` is None when
    neither rewriting pass changed anything (the common case: offsets are the same;
    ungluing list numbers keeps them), else a map even where offsets did not move
    (a tab made a space).

    Rewrites: CRLF and other line breaks -> "\\n"; tabs and unicode spaces -> " ";
    HTML character references decoded, HTML block tags (``<br>``, ``<p>``, ...) ->
    "\\n", inline ones (``<b>``, ``<span ...>``) -> " "; unicode dashes -> "-", curly quotes -> ASCII
    ones, other characters NFKC-normalised (full-width letters); invisible
    characters (soft hyphen, zero-width space, controls) dropped; runs of spaces ->
    one; a line break with its indentation -> "\\n", blank lines -> "\\n\\n"; a
    wrapped line ("pleural\\n effusion"; before a capital, a line of at least
    ``WRAP_COLUMN`` characters) -> one space. Unglues list numbering
    ("3.no pleural effusion": the "." becomes a line break, the number a clause of
    its own).
    """
    origin = None
    first = _rewrite(text, _SPECIAL, _replacement) if _SPECIAL_HINT.search(text) else None
    if first is not None:
        text, starts, ends = first
        origin = Origin(starts, ends)
    if _SPACE_HINT.search(text):
        second = _rewrite(text, _SPACE_RUN, lambda m: _space_run(text, m))
        if second is not None:
            text, starts, ends = second
            if (
                origin is not None
            ):  # through the first pass: a piece ends where its last character does
                starts = [origin.starts[i] for i in starts]
                ends = [origin.ends[i - 1] for i in ends[:-1]] + [origin.ends[-1]]
            origin = Origin(starts, ends)
    if _GLUED_HINT.search(text):
        text = _GLUED_NUMBER.sub(lambda m: m.group(1) + "\n", text)
    return text, origin


class Origin(NamedTuple):
    """Where each character of a readable text comes from in the original (see
    :func:`readable_text`)."""

    starts: list[int]
    ends: list[int]

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of the readable span ``[start, end)`` (``end > start``): from
        where its first character's piece starts to where its last one's ends."""
        return self.starts[start], self.ends[end - 1]
