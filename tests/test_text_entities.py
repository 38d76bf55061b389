"""Entities: lexicon synonyms, exact offsets on real IU reports, abbreviations, a scispaCy model."""

from __future__ import annotations

import itertools

import pytest
import spacy
from spacy.training import Example

from cxrkit.errors import ConfigError
from cxrkit.text.entities import EntityExtractor


@pytest.fixture(scope="module")
def extractor():
    return EntityExtractor()


def _classes(extractor, text: str) -> list[tuple[str, str]]:
    (entities,) = extractor.extract([text])
    return [(e.text, e.chexpert) for e in entities if e.chexpert]


def test_offsets_are_exact_on_real_iu_reports(extractor):
    from cxrkit.io.reports import iter_iu_reports

    texts = [r.text for r in itertools.islice(iter_iu_reports(), 150)]
    checked = 0
    for text, entities in zip(texts, extractor.extract(texts), strict=True):
        for entity in entities:
            assert text[entity.start : entity.end] == entity.text
            checked += 1
    assert checked > 1000  # real reports are full of mentions


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PTX on the right.", ("PTX", "Pneumothorax")),
        ("Bilateral effusions.", ("effusions", "Pleural Effusion")),
        ("Enlarged cardiac silhouette.", ("Enlarged cardiac silhouette", "Cardiomegaly")),
        ("The heart size is enlarged.", ("heart size is enlarged", "Cardiomegaly")),
        ("Left basilar opacification.", ("opacification", "Lung Opacity")),
        ("ET tube 4 cm above the carina.", ("ET tube", "Support Devices")),
        ("Right PICC in the SVC.", ("PICC", "Support Devices")),
        ("Old left rib fractures.", ("rib fractures", "Fracture")),
    ],
)
def test_synonyms_map_to_their_chexpert_class(extractor, text, expected):
    assert expected in _classes(extractor, text)


def test_slash_joined_findings_are_two_entities(extractor):
    found = _classes(extractor, "No effusion/pneumothorax.")
    assert found == [("effusion", "Pleural Effusion"), ("pneumothorax", "Pneumothorax")]


def test_labels_cover_finding_anatomy_and_device(extractor):
    (entities,) = extractor.extract(["Left lung base atelectasis with a left chest tube."])
    assert {e.label for e in entities} >= {"FINDING", "ANATOMY", "DEVICE"}


def test_defined_short_form_inherits_the_long_forms_class(extractor):
    text = "Small pleural effusion (SPE). The SPE is stable."
    (entities,) = extractor.extract([text])
    short = [e for e in entities if e.text == "SPE"]
    assert short and all(e.chexpert == "Pleural Effusion" for e in short)


def test_empty_and_missing_texts_give_no_entities(extractor):
    assert list(extractor.extract(["", None, float("nan"), "   "])) == [[], [], [], []]


def _tiny_ner_model(path):
    """A blank English pipeline with an NER trained for two steps on two sentences."""
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("ner")
    ner.add_label("ENTITY")
    data = [("Chronic bronchitis noted.", [(0, 18, "ENTITY")]),
            ("Hilar fullness seen.", [(0, 14, "ENTITY")])]  # fmt: skip
    examples = [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in data]
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(2):
        nlp.update(examples, sgd=optimizer)
    nlp.to_disk(path)
    return path


def test_scispacy_model_directory_adds_its_ner_to_the_lexicon(tmp_path):
    model = _tiny_ner_model(tmp_path / "tiny-ner")
    extractor = EntityExtractor(scispacy_model=model)
    assert extractor.nlp.pipe_names.index("ner") < extractor.nlp.pipe_names.index(
        "radiology_lexicon"
    )
    text = "No pneumothorax. Chronic bronchitis noted."
    (entities,) = extractor.extract([text])
    assert ("pneumothorax", "Pneumothorax", True) in [
        (e.text, e.chexpert, e.negated) for e in entities
    ]
    for entity in entities:  # whatever the 2-step NER found, offsets stay exact
        assert text[entity.start : entity.end] == entity.text


def test_unloadable_scispacy_model_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="--scispacy-model"):
        EntityExtractor(scispacy_model=tmp_path / "no-such-model")


def test_word_trie_matches_what_the_longest_first_alternation_matches():
    import re

    from cxrkit.text.entities import word_trie

    words = ["lead", "leads", "line", "no", "no change", "heart", "he", "hilar", "hila"]
    trie = re.compile(rf"\b{word_trie(words)}\b", re.IGNORECASE)
    plain = "|".join(sorted(map(re.escape, words), key=len, reverse=True))
    alternation = re.compile(rf"\b(?:{plain})\b", re.IGNORECASE)
    text = "Leads, lead and line. No change; no heartx; He said hilar and hila, hilum, hil."
    found = [(m.span(), m.group()) for m in trie.finditer(text)]
    assert found == [(m.span(), m.group()) for m in alternation.finditer(text)]
    assert [g for _, g in found] == ["Leads", "lead", "line", "No change", "no", "He",
                                     "hilar", "hila"]  # fmt: skip
