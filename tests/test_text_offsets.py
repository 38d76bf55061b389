"""Entity offsets point at the report as given: every stored span, sliced out of the
original text, is the mention itself (whole, nothing before or after it), whatever the
debris around or inside it (CRLF, tabs, NBSP, HTML entities and tags, soft hyphens,
combining marks, emoji, full-width letters)."""

from __future__ import annotations

import random

import pytest

from cxrkit.text.entities import EntityExtractor
from cxrkit.text.readable import readable_text


@pytest.fixture(scope="module")
def extractor():
    return EntityExtractor()


def _read(text: str) -> str:
    """The words of ``text`` as the pipeline reads them, single-spaced, lower case."""
    return " ".join(readable_text(text)[0].split()).lower()


PHRASES = ["cardiomegaly", "pleural effusion", "pneumothorax", "edema", "atelectasis",
           "consolidation", "pneumonia", "endotracheal tube", "nodule", "fracture"]  # fmt: skip
FILLER = ["no", "small", "left", "mild", "the", "is", "seen", "and", "there", "cafe\u0301",
          "\U0001f600", "\uff2e\uff4f", "x&amp;y", "1.", "-"]  # fmt: skip
BETWEEN = [" ", "  ", "\t", "\u00a0", "&nbsp;", "&#32;", "\r\n", "\n", "\n \n ", "<br>",
           "<br/>", "</p><p>", "\u2028", "&#10;", " <b>", "</b> ", ". ", ", ", "\u200b ",
           " \u00ad"]  # fmt: skip


def _disguise(word: str, rng: random.Random) -> str:
    """``word`` written with debris that reads back as the same letters."""
    out = []
    for char in word:
        roll = rng.random()
        if char == " ":
            out.append(rng.choice(BETWEEN[:9]))
        elif roll < 0.04:
            out.append(f"&#{ord(char)};")
        elif roll < 0.08:
            out.append(chr(ord(char) - ord("a") + 0xFF41) if char.isalpha() else char)
        elif roll < 0.11:
            out.append(char + "\u00ad")
        elif roll < 0.13:
            out.append("\u200b" + char)
        else:
            out.append(char)
    return "".join(out)


def _texts(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        words = [_disguise(rng.choice(PHRASES), rng) if rng.random() < 0.4 else rng.choice(FILLER)
                 for _ in range(rng.randint(1, 25))]  # fmt: skip
        texts.append("".join(w + rng.choice(BETWEEN) for w in words).rstrip())
    return texts


def test_every_span_slices_the_original_to_its_mention(extractor):
    texts = _texts(7, 400)
    checked = 0
    for text, entities in zip(texts, extractor.extract(texts), strict=True):
        for entity in entities:
            piece = text[entity.start : entity.end]
            assert piece == entity.text
            # the slice reads as the mention, with nothing of its neighbours
            assert piece and readable_text(piece)[0] == readable_text(piece)[0].strip(), (
                text,
                piece,
            )
            assert _read(piece[0]) and _read(piece[-1]), (text, piece)  # no dropped char at an edge
            if not entity.chexpert:
                continue
            words = _read(piece)  # read alone, the same class over the same words
            alone = [e for e in next(extractor.extract([words])) if e.chexpert == entity.chexpert]
            assert any(e.start == 0 and e.end == len(words) for e in alone), (text, piece, words)
            checked += 1
    assert checked > 500


@pytest.mark.parametrize(
    ("text", "mention"),
    [
        ("Cardiomegaly<br>No effusion.", "Cardiomegaly"),
        ("Cardiomegaly\u2028No effusion.", "Cardiomegaly"),
        ("Cardiomegaly&#10;No effusion.", "Cardiomegaly"),
        ("Cardiomegaly\r\nNo effusion.", "Cardiomegaly"),
        ("Small pleural effusion\u00ad.", "pleural effusion"),
        ("Cardiomegaly</p><p>Edema.", "Cardiomegaly"),
    ],
)
def test_a_span_ends_where_its_last_word_ends(extractor, text, mention):
    (entities,) = extractor.extract([text])
    assert mention in [e.text for e in entities], [(e.text, e.start, e.end) for e in entities]
