"""Eval of fused image-text models (M3AE): zero-shot and retrieval from pair scores, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cxrkit.evaluate import fused, retrieval

PROMPTS = {
    "Edema": {"positive": ["edema", "fluid"], "negative": ["no edema"]},
    "Effusion": {"positive": ["effusion"], "negative": ["no effusion"]},
}
CLASSES = ["Edema", "Effusion"]


def test_templates_are_every_prompt_once_in_first_seen_order():
    prompts = {**PROMPTS, "Other": {"positive": ["edema"], "negative": []}}
    assert fused.prompt_templates(prompts, ["Edema", "Effusion", "Other"]) == [
        "edema",
        "fluid",
        "no edema",
        "effusion",
        "no effusion",
    ]


def test_zeroshot_from_pair_log_odds_by_hand():
    templates = fused.prompt_templates(
        PROMPTS, CLASSES
    )  # edema, fluid, no edema, effusion, no eff.
    scores = np.array([[2.0, 0.0, 1.0, -1.0, 1.0]])  # one image
    maco, clip = fused.zeroshot_scores(scores, PROMPTS, CLASSES, templates)
    # Edema: positive mean (2 + 0) / 2 = 1, negative 1 -> sigmoid(0) = 0.5
    # Effusion: positive -1, negative 1 -> sigmoid(-2)
    assert maco[0, 0] == pytest.approx(0.5)
    assert maco[0, 1] == pytest.approx(1 / (1 + math.exp(2.0)))
    # CLIP variant: softmax over the positive means (1, -1)
    assert clip[0, 0] == pytest.approx(math.exp(1) / (math.exp(1) + math.exp(-1)))
    assert clip.sum() == pytest.approx(1.0)


def test_zeroshot_without_negatives_or_with_one_class_says_why():
    prompts = {"Edema": {"positive": ["edema"], "negative": []}}
    maco, clip = fused.zeroshot_scores(np.zeros((2, 1)), prompts, ["Edema"], ["edema"])
    assert "negative" in maco and ">= 2 classes" in clip


def test_matching_accuracy_by_hand():
    scores = np.array([[1.0, -1.0, 2.0], [-0.5, 0.5, -1.0], [-1.0, -2.0, -0.1]])
    # matched (diagonal > 0): 1, 0.5 yes; -0.1 no -> 2/3
    # mismatched (<= 0): -1, 2(no), -0.5, -1, -1, -2 -> 5/6
    out = fused.matching_accuracy(scores)
    assert out["matched"] == pytest.approx(2 / 3)
    assert out["mismatched"] == pytest.approx(5 / 6)
    assert out["balanced"] == pytest.approx((2 / 3 + 5 / 6) / 2)


def test_matching_accuracy_on_pairs_of_different_labels_by_hand():
    scores = np.array([[1.0, -1.0, 2.0], [-0.5, 0.5, -1.0], [-1.0, -2.0, -0.1]])
    # rows 0 and 2 are one label, row 1 another: the cross-label mismatched pairs are
    # (0,1) -1 yes, (1,0) -0.5 yes, (1,2) -1 yes, (2,1) -2 yes -> 4/4; (0,2) and (2,0) are
    # same-label mismatches and left out.
    out = fused.matching_accuracy(scores, ['{"P": 0}', '{"P": 1}', '{"P": 0}'])
    assert out["cross_mismatched"] == 1.0 and out["cross_pairs"] == 4
    assert out["cross_balanced"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert out["balanced"] == pytest.approx((2 / 3 + 5 / 6) / 2)  # unchanged
    # A row without a label takes part in no cross-label pair; one label: no figure.
    unknown = fused.matching_accuracy(scores, ['{"P": 0}', None, '{"P": 0}'])
    assert "cross_balanced" not in unknown


def test_retrieval_from_pair_scores_equals_the_cosine_path_on_cosines():
    rng = np.random.default_rng(0)
    images, reports = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    cosine, ranks = retrieval.retrieval_report(images, reports, None, 50, 0.95, 0)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    similarity = unit(images) @ unit(reports).T
    direct, direct_ranks = retrieval.similarity_report(similarity, None, 50, 0.95, 0)
    assert direct == cosine
    assert all(np.array_equal(ranks[k], direct_ranks[k]) for k in ranks)
