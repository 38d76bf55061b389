"""Evaluation metrics against scikit-learn and hand-computed values on fixed arrays."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from cxrkit.evaluate import metrics

LABELS = np.array([0, 0, 1, 1, 0, 1, 0, 1, 1, 0, 0, 1])
SCORES = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.9, 0.2, 0.4, 0.7, 0.05, 0.6, 0.3])  # ties at 0.4


def test_auroc_matches_sklearn_with_ties():
    assert metrics.auroc(LABELS, SCORES) == pytest.approx(roc_auc_score(LABELS, SCORES), abs=1e-12)


def test_auroc_hand_computed_counts_a_tie_as_half():
    # pairs (pos, neg): 0.9>0.1 and 0.5 for the tie -> (1 + 0.5) / 2
    assert metrics.auroc(np.array([1, 1, 0, 0]), np.array([0.9, 0.5, 0.5, 0.1])) == 0.875


def test_auroc_is_nan_with_one_class():
    assert np.isnan(metrics.auroc(np.ones(4), np.arange(4.0)))


def test_auprc_matches_sklearn_average_precision():
    expected = average_precision_score(LABELS, SCORES)
    assert metrics.auprc(LABELS, SCORES) == pytest.approx(expected, abs=1e-12)


def test_auprc_matches_sklearn_on_random_arrays_with_ties():
    rng = np.random.default_rng(3)
    for _ in range(20):
        y = rng.integers(0, 2, 50)
        s = np.round(rng.random(50), 1)  # coarse scores -> many ties
        if y.sum() == 0:
            continue
        assert metrics.auprc(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert metrics.auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_roc_points_match_sklearn_curve():
    fpr, tpr = metrics.roc_points(LABELS, SCORES)
    ref_fpr, ref_tpr, _ = roc_curve(LABELS, SCORES, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)


def test_f1_and_accuracy_at_threshold_hand_computed():
    y = np.array([1, 1, 0, 0, 1])
    s = np.array([0.9, 0.4, 0.6, 0.1, 0.7])
    # predicted positive: 0.9, 0.6, 0.7 -> TP 2, FP 1, FN 1 -> F1 = 4 / 6
    assert metrics.f1_at(y, s, 0.5) == pytest.approx(4 / 6)
    assert metrics.accuracy_at(y, s, 0.5) == pytest.approx(3 / 5)


def test_best_f1_threshold_separates_perfectly_separable_scores():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.3, 0.6, 0.8])
    threshold = metrics.best_f1_threshold(y, s)
    assert metrics.f1_at(y, s, threshold) == 1.0
    assert threshold == 0.6


def test_reliability_bins_and_ece_hand_computed():
    probs = np.array([0.05, 0.15, 0.95, 0.85, 1.0])
    labels = np.array([0, 1, 1, 1, 0])
    summary = metrics.reliability(labels, probs, n_bins=2)
    # bin [0, .5): mean .1, observed .5; bin [.5, 1]: mean .9333, observed 2/3
    np.testing.assert_allclose(summary.counts, [2, 3])
    expected = (2 * abs(0.1 - 0.5) + 3 * abs(2.8 / 3 - 2 / 3)) / 5
    assert summary.ece == pytest.approx(expected)


def test_ranks_and_recall_at_k_hand_computed():
    similarity = np.array(
        [
            [0.9, 0.1, 0.0],  # match first
            [0.8, 0.5, 0.9],  # match third of three
            [0.2, 0.2, 0.2],  # all tied: pessimistic rank 3
        ]
    )
    ranks = metrics.ranks_of_matches(similarity)
    np.testing.assert_array_equal(ranks, [1, 3, 3])
    assert metrics.recall_at_k(ranks, 1) == pytest.approx(1 / 3)
    assert metrics.recall_at_k(ranks, 3) == 1.0


def test_weighted_metrics_equal_plain_metrics_on_repeated_rows():
    rng = np.random.default_rng(7)
    weights = rng.integers(0, 3, size=(25, LABELS.size))
    weights[:, 0] += 1  # keep a negative and a positive in every draw
    weights[:, 2] += 1
    rows = np.arange(LABELS.size)
    plain = {
        "auroc": [
            metrics.auroc(LABELS[np.repeat(rows, w)], SCORES[np.repeat(rows, w)]) for w in weights
        ],
        "auprc": [
            metrics.auprc(LABELS[np.repeat(rows, w)], SCORES[np.repeat(rows, w)]) for w in weights
        ],
        "f1": [
            metrics.f1_at(LABELS[np.repeat(rows, w)], SCORES[np.repeat(rows, w)], 0.4)
            for w in weights
        ],
        "accuracy": [
            metrics.accuracy_at(LABELS[np.repeat(rows, w)], SCORES[np.repeat(rows, w)], 0.4)
            for w in weights
        ],
    }
    np.testing.assert_allclose(metrics.auroc_weighted(LABELS, SCORES, weights), plain["auroc"])
    np.testing.assert_allclose(metrics.auprc_weighted(LABELS, SCORES, weights), plain["auprc"])
    np.testing.assert_allclose(metrics.f1_weighted(LABELS, SCORES, weights, 0.4), plain["f1"])
    np.testing.assert_allclose(
        metrics.accuracy_weighted(LABELS, SCORES, weights, 0.4), plain["accuracy"]
    )
