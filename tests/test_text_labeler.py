"""CheXpert-style labels: aggregation, No Finding, sections, garbage rows."""

from __future__ import annotations

import math

import pytest

from cxrkit.text.labeler import CHEXPERT_CLASSES, Labeler, format_label


@pytest.fixture(scope="module")
def labeler():
    return Labeler()


def _labels(labeler, text: str) -> dict[str, float]:
    ((labels, _),) = labeler.label([text])
    return {c: v for c, v in zip(CHEXPERT_CLASSES, labels, strict=True) if not math.isnan(v)}


def test_classes_are_the_14_chexpert_observations_in_order():
    assert len(CHEXPERT_CLASSES) == 14
    assert CHEXPERT_CLASSES[0] == "No Finding" and CHEXPERT_CLASSES[-1] == "Support Devices"


def test_positive_uncertain_and_negative_mentions(labeler):
    labels = _labels(labeler, "FINDINGS: Cardiomegaly. Possible pneumonia. No pneumothorax.")
    assert labels == {"Cardiomegaly": 1.0, "Pneumonia": -1.0, "Pneumothorax": 0.0}


def test_a_positive_mention_wins_over_a_negative_one(labeler):
    labels = _labels(labeler, "No left effusion. Small right pleural effusion.")
    assert labels["Pleural Effusion"] == 1.0


def test_no_finding_ignores_support_devices(labeler):
    labels = _labels(labeler, "Right PICC tip in the SVC. No pneumothorax or effusion.")
    assert labels == {"No Finding": 1.0, "Support Devices": 1.0, "Pneumothorax": 0.0,
                      "Pleural Effusion": 0.0}  # fmt: skip


def test_no_finding_is_blank_when_a_finding_is_uncertain(labeler):
    assert "No Finding" not in _labels(labeler, "Possible small effusion.")


def test_a_finding_outside_the_14_blocks_no_finding(labeler):
    assert "No Finding" not in _labels(labeler, "Calcified granuloma. No effusion.")


def test_a_positive_child_leaves_lung_opacity_as_mentioned(labeler):
    labels = _labels(labeler, "Right lower lobe consolidation.")
    assert labels == {"Consolidation": 1.0}  # Lung Opacity stays blank (no propagation)


def test_indication_and_history_never_make_labels(labeler):
    text = "INDICATION: Pneumonia?\n\nHISTORY: effusion.\n\nFINDINGS: The lungs are clear."
    assert _labels(labeler, text) == {"No Finding": 1.0}
    assert _labels(Labeler(sections="findings+impression"), text) == {"No Finding": 1.0}


@pytest.mark.parametrize("text", ["", "   ", "1234 5678", "... --- ...", None])
def test_texts_without_a_letter_are_all_blank(labeler, text):
    assert _labels(labeler, text) == {}


@pytest.mark.parametrize(
    "text", ["asdf qwerty zxcv", "肺部清晰，无胸腔积液。", "Comparison is made."]
)
def test_a_text_with_no_mention_is_no_finding_as_in_chexpert(labeler, text):
    # stages/aggregate.py starts every report at no_finding = True.
    assert _labels(labeler, text) == {"No Finding": 1.0}


def test_format_label_matches_the_chexpert_csv():
    assert [format_label(v) for v in (1.0, 0.0, -1.0, float("nan"))] == ["1.0", "0.0", "-1.0", ""]
