"""Negation / uncertainty of mentions: clause scope, terminators, pseudo-cues, sections."""

from __future__ import annotations

import pytest

from cxrkit.text.entities import EntityExtractor


@pytest.fixture(scope="module")
def extractor():
    return EntityExtractor()


def _flags(extractor, text: str) -> dict[str, tuple[bool, bool]]:
    """CheXpert class -> (negated, uncertain) of its (single) mention."""
    (entities,) = extractor.extract([text])
    return {e.chexpert: (e.negated, e.uncertain) for e in entities if e.chexpert}


def test_no_negates_every_finding_of_its_list(extractor):
    flags = _flags(extractor, "No focal consolidation, pleural effusion, or pneumothorax.")
    assert flags == {"Consolidation": (True, False), "Pleural Effusion": (True, False),
                     "Pneumothorax": (True, False)}  # fmt: skip


def test_terminator_ends_the_negation_scope(extractor):
    flags = _flags(extractor, "No pleural effusion but there is cardiomegaly.")
    assert flags["Pleural Effusion"] == (True, False)
    assert flags["Cardiomegaly"] == (False, False)


def test_negation_does_not_cross_a_sentence(extractor):
    flags = _flags(extractor, "No pneumothorax. Atelectasis at the left base.")
    assert flags == {"Pneumothorax": (True, False), "Atelectasis": (False, False)}


def test_post_cue_negates_the_mention_before_it(extractor):
    assert _flags(extractor, "The right pneumothorax has resolved.") == {
        "Pneumothorax": (True, False)
    }


def test_hedges_make_a_mention_uncertain(extractor):
    assert _flags(extractor, "Possible right lower lobe pneumonia.")["Pneumonia"] == (False, True)
    assert _flags(extractor, "Small effusion cannot be excluded.")["Pleural Effusion"] == (
        False,
        True,
    )


def test_negative_before_a_finding_negates_it(extractor):
    # IU report wording: "IMPRESSION: Negative acute cardiopulmonary abnormality."
    assert _flags(extractor, "Negative acute pneumothorax.") == {"Pneumothorax": (True, False)}
    (entities,) = extractor.extract(["Negative acute cardiopulmonary abnormality."])
    assert [(e.text, e.negated) for e in entities if e.text == "abnormality"] == [
        ("abnormality", True)
    ]
    # ... and still after it, as before
    assert _flags(extractor, "Tuberculosis screen negative. Small effusion.") == {
        "Pleural Effusion": (False, False)
    }


def test_a_participle_and_comma_close_the_negated_statement(extractor):
    flags = _flags(
        extractor,
        "No focal alveolar consolidation, no definite pleural effusion seen, left hilar "
        "calcifications and dense nodule in the left lung suggest a previous granulomatous "
        "process.",
    )
    assert flags["Pleural Effusion"] == (True, False)
    assert flags["Lung Lesion"] == (False, False)  # "no" does not reach past "seen,"
    # ... but a post-negation cue ending in the participle still negates
    assert _flags(extractor, "Effusion is not seen, no pneumothorax.") == {
        "Pleural Effusion": (True, False),
        "Pneumothorax": (True, False),
    }


def test_suspicion_for_is_a_hedge(extractor):
    flags = _flags(extractor, "Suspicion for small bilateral pleural effusions.")
    assert flags == {"Pleural Effusion": (False, True)}


def test_favored_as_is_a_hedge(extractor):
    # CheXpert's "favor" (post_negation_uncertainty.txt) in its participle forms
    flags = _flags(extractor, "Minimal patchy opacity within the lingula favored as atelectasis.")
    assert flags["Atelectasis"] == (False, True)


def test_cannot_exclude_is_uncertain_not_a_negation(extractor):
    assert _flags(extractor, "Cannot exclude pneumonia.")["Pneumonia"] == (False, True)


def test_pseudo_negation_no_change_keeps_the_finding_positive(extractor):
    assert _flags(extractor, "No change in cardiomegaly.")["Cardiomegaly"] == (False, False)


def test_hedge_inside_a_negated_list_is_negated(extractor):
    flags = _flags(
        extractor, "No focal consolidation, suspicious pulmonary opacity, or pneumothorax."
    )
    assert flags["Pneumothorax"] == (True, False)


def test_phrase_stating_normal_size_is_a_negated_cardiomegaly_mention(extractor):
    assert _flags(extractor, "The heart size is normal.") == {"Cardiomegaly": (True, False)}
    assert _flags(extractor, "The heart is mildly enlarged.") == {"Cardiomegaly": (False, False)}


def test_mentions_carry_their_section(extractor):
    text = (
        "INDICATION: rule out pneumonia.\n\nFINDINGS: Clear lungs.\n\nIMPRESSION: No pneumothorax."
    )
    (entities,) = extractor.extract([text])
    sections = {e.chexpert: e.section for e in entities if e.chexpert}
    assert sections == {"Pneumonia": "history", "Pneumothorax": "impression"}


def test_statement_with_not_is_a_negated_mention(extractor):
    assert _flags(extractor, "The heart is not enlarged.") == {"Cardiomegaly": (True, False)}
    # CheXpert (post_negation_uncertainty.txt): vascular prominence is uncertain Edema.
    assert _flags(extractor, "Pulmonary vascularity is mildly increased.") == {
        "Edema": (False, True)
    }


def test_or_hedges_findings_but_not_anatomy(extractor):
    (entities,) = extractor.extract(["Atelectasis in the lingula or left lower lobe."])
    flags = {e.text: e.uncertain for e in entities}
    assert {"Atelectasis", "lingula", "lower lobe"} <= flags.keys() and not any(flags.values())
    assert _flags(extractor, "Atelectasis or pneumonia.") == {
        "Atelectasis": (False, True),
        "Pneumonia": (False, True),
    }


def test_tagging_does_not_depend_on_the_order_spans_are_given_in(extractor):
    """The hedge "possible" before "effusion" modifies it, not "Cardiomegaly", whatever
    the order of the spans (the windows are looked up by bisect over sorted starts)."""
    doc = extractor.nlp("Cardiomegaly and possible small effusion.")
    cardiomegaly, effusion = (0, 1), (4, 5)
    in_order = extractor.tagger.tag(doc, [cardiomegaly, effusion])
    reversed_ = extractor.tagger.tag(doc, [effusion, cardiomegaly])
    assert in_order == [(False, False), (False, True)]
    assert reversed_ == in_order[::-1]
