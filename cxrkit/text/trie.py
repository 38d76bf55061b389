"""A regex for a set of words as a prefix tree (no spaCy: the section splitter uses it too)."""

from __future__ import annotations

import re
from collections.abc import Iterable


def word_trie(words: Iterable[str]) -> str:
    """A regex matching any of ``words`` (lower case), longest first, as a prefix tree.

    ``"lead", "leads", "line"`` -> ``l(?:ead(?:s)?|ine)``: the same matches as the
    alternation of the words longest first, but the regex engine reads each
    character once instead of trying every word at every position (about 3x faster
    over the IU reports).
    """
    tree: dict = {}
    for word in words:
        node = tree
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}  # a word ends here

    def emit(node: dict) -> str:
        branches = [re.escape(char) + emit(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if "" in node:  # a shorter word ends here: the longer ones are optional, tried first
            return f"(?:{body})?" if len(branches) == 1 else body + "?"
        return body

    return "(?:" + emit(tree) + ")"
