"""Binary classification and retrieval metrics on plain numpy arrays.

AUROC and AUPRC are written here (vectorised, no per-call overhead) because
the bootstrap calls them thousands of times; tests check them against
scikit-learn on fixed arrays. Everything takes ``labels`` in {0, 1} and
``scores`` where higher means "more likely positive".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the Mann-Whitney U statistic (ties count one half).

    Returns NaN when only one class is present.
    """
    labels = np.asarray(labels).astype(bool)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)  # average ranks: a tie between a positive and a negative counts 1/2
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def auprc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision (step-wise area under precision-recall, as scikit-learn defines it).

    Tied scores form one threshold. Returns NaN when there is no positive.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(labels.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    # the last index of each run of equal scores is one operating point
    last = np.r_[np.nonzero(np.diff(sorted_scores))[0], sorted_labels.size - 1]
    true_pos = np.cumsum(sorted_labels)[last]
    precision = true_pos / (last + 1)
    recall = true_pos / n_pos
    recall_step = np.diff(np.r_[0.0, recall])
    return float(np.sum(recall_step * precision))


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold, from (0, 0)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    last = np.r_[np.nonzero(np.diff(sorted_scores))[0], sorted_labels.size - 1]
    true_pos = np.cumsum(sorted_labels)[last]
    false_pos = (last + 1) - true_pos
    tpr = np.r_[0.0, true_pos / max(int(labels.sum()), 1)]
    fpr = np.r_[0.0, false_pos / max(int((~labels).sum()), 1)]
    return fpr, tpr


def f1_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """F1 of the rule ``score >= threshold``; 0 when there are no true positives."""
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(scores) >= threshold
    true_pos = int(np.sum(predicted & labels))
    denom = int(predicted.sum()) + int(labels.sum())
    return 0.0 if true_pos == 0 else 2.0 * true_pos / denom


def accuracy_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """Accuracy of the rule ``score >= threshold``."""
    labels = np.asarray(labels).astype(bool)
    return float(np.mean((np.asarray(scores) >= threshold) == labels))


def best_f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold that maximises F1 on (validation) data; ties go to the higher one."""
    labels = np.asarray(labels).astype(bool)
    candidates = np.unique(np.asarray(scores, dtype=np.float64))
    best, best_f1 = float(candidates[-1]), -1.0
    for threshold in candidates[::-1]:
        value = f1_at(labels, scores, threshold)
        if value > best_f1:
            best, best_f1 = float(threshold), value
    return best


@dataclass
class Reliability:
    """Calibration summary: per-bin mean confidence, observed frequency, counts, and the ECE."""

    bin_edges: np.ndarray  # (n_bins + 1,)
    mean_predicted: np.ndarray  # (n_bins,), NaN for empty bins
    observed: np.ndarray  # (n_bins,), NaN for empty bins
    counts: np.ndarray  # (n_bins,)
    ece: float


def reliability(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> Reliability:
    """Equal-width reliability bins over [0, 1] and the expected calibration error.

    ``probs`` must be probabilities; the last bin includes 1.0.
    """
    labels = np.asarray(labels, dtype=np.float64)
    probs = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.minimum(np.digitize(probs, edges[1:-1], right=False), n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred = np.bincount(which, weights=probs, minlength=n_bins) / counts
        observed = np.bincount(which, weights=labels, minlength=n_bins) / counts
    filled = counts > 0
    ece = float(np.sum(counts[filled] * np.abs(mean_pred[filled] - observed[filled])) / probs.size)
    return Reliability(edges, mean_pred, observed, counts, ece)


def ranks_of_matches(similarity: np.ndarray, matches: np.ndarray | None = None) -> np.ndarray:
    """1-based rank of the best right answer in each row of a (Q, G) similarity matrix.

    ``matches`` (Q, G) bool marks the right answers of each query (None = the diagonal
    only). The rank is one plus the number of wrong answers scoring at least as high as
    the best right one: ties with wrong answers count pessimistically (a constant model
    does not look perfect), and several right answers (a study's images sharing one
    report, identical report texts) never push one another down.
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    if matches is None:
        diag = np.diagonal(similarity)[:, None]
        return (similarity >= diag).sum(axis=1)  # includes the match itself -> 1-based
    matches = np.asarray(matches, dtype=bool)
    best = np.where(matches, similarity, -np.inf).max(axis=1, keepdims=True)  # (Q, 1)
    return 1 + ((similarity >= best) & ~matches).sum(axis=1)


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Fraction of queries whose match ranks within the top ``k``."""
    return float(np.mean(np.asarray(ranks) <= k))


# ---------------------------------------------------------------- weighted, vectorised
# The bootstrap evaluates a statistic on B resamples at once: each resample is a
# row of integer multiplicities ``weights`` (B, n), and these functions return (B,)
# values equal to the plain metric on the repeated rows (tested). Ties between
# scores form one group, exactly as in the plain versions.


def _grouped(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray, descending: bool):
    """Per distinct score (sorted), the positive and negative weight of each resample: (B, G)."""
    labels = np.asarray(labels).astype(bool)
    unique, inverse = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
    if descending:
        inverse = unique.size - 1 - inverse
    weights = np.asarray(weights, dtype=np.float64)
    pos = np.zeros((weights.shape[0], unique.size))
    neg = np.zeros_like(pos)
    for target, mask in ((pos, labels), (neg, ~labels)):
        np.add.at(target.T, inverse[mask], weights[:, mask].T)  # sum weights per score group
    return pos, neg


def auroc_weighted(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of each resample (B,); NaN where a resample lacks positives or negatives."""
    pos, neg = _grouped(labels, scores, weights, descending=False)
    neg_below = np.cumsum(neg, axis=1) - neg  # negatives with strictly lower scores
    wins = np.sum(pos * (neg_below + 0.5 * neg), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return wins / (pos.sum(axis=1) * neg.sum(axis=1))


def auprc_weighted(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision of each resample (B,); NaN where a resample has no positive."""
    pos, neg = _grouped(labels, scores, weights, descending=True)
    true_pos = np.cumsum(pos, axis=1)
    drawn = true_pos + np.cumsum(neg, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(drawn > 0, true_pos / drawn, 0.0)
        return np.sum(pos * precision, axis=1) / pos.sum(axis=1)


def f1_weighted(labels, scores, weights, threshold: float) -> np.ndarray:
    """F1 of ``score >= threshold`` for each resample (B,)."""
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(scores) >= threshold
    weights = np.asarray(weights, dtype=np.float64)
    true_pos = weights @ (predicted & labels)
    denom = weights @ predicted + weights @ labels
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(true_pos > 0, 2.0 * true_pos / denom, 0.0)


def accuracy_weighted(labels, scores, weights, threshold: float) -> np.ndarray:
    """Accuracy of ``score >= threshold`` for each resample (B,)."""
    correct = (np.asarray(scores) >= threshold) == np.asarray(labels).astype(bool)
    weights = np.asarray(weights, dtype=np.float64)
    return (weights @ correct) / weights.sum(axis=1)
