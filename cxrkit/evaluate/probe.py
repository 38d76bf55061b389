"""Linear probe: one logistic regression per class on frozen, standardised features.

Label-efficiency sweeps train on a fraction of the training labels. The subset
is drawn per class, stratified (the same fraction of its positives and of its
negatives, at least one of each) and seeded; several seeds show how much the
result depends on which few labels were drawn.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np

from cxrkit.evaluate.protocol import Fold

log = logging.getLogger(__name__)


def stratified_subset(
    rows: np.ndarray, labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """``fraction`` of the positive and of the negative rows (>= 1 each when available), sorted.

    ``labels`` are the 1/0 labels of ``rows``.
    """
    if fraction >= 1.0:
        return np.sort(rows)
    chosen = []
    for value in (1, 0):
        members = rows[labels == value]
        if members.size == 0:
            continue
        take = max(1, int(round(fraction * members.size)))
        chosen.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else rows[:0]


def fit_predict(
    features: np.ndarray,
    train_rows: np.ndarray,
    train_labels: np.ndarray,
    predict_rows: np.ndarray,
    c_value: float,
    max_iter: int,
) -> np.ndarray:
    """Standardise on the training rows, fit L2 logistic regression, return P(positive)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features[train_rows])
    classifier = LogisticRegression(C=c_value, max_iter=max_iter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        classifier.fit(scaler.transform(features[train_rows]), train_labels)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log.warning("logistic regression did not converge in %d iterations", max_iter)
    return classifier.predict_proba(scaler.transform(features[predict_rows]))[:, 1]


def probe_scores(
    features: np.ndarray,
    labels: np.ndarray,
    folds: Sequence[Fold],
    fraction: float,
    seed: int,
    c_value: float = 1.0,
    max_iter: int = 1000,
) -> tuple[np.ndarray, dict[int, int]]:
    """Scores (N, C) for every fold's val and test rows (NaN elsewhere) and train sizes per class.

    ``labels`` (N, C) are 1/0/NaN. A class whose training subset lacks a positive or
    a negative gets no scores in that fold (train sizes sum over folds).
    """
    scores = np.full(labels.shape, np.nan)
    train_sizes: dict[int, int] = {}
    rng = np.random.default_rng(seed)
    for fold in folds:
        predict_rows = np.concatenate([fold.val, fold.test])
        for c in range(labels.shape[1]):
            known = fold.train[~np.isnan(labels[fold.train, c])]
            subset = stratified_subset(known, labels[known, c], fraction, rng)
            y = labels[subset, c]
            train_sizes.setdefault(c, 0)
            if y.size == 0 or y.min() == y.max():
                continue  # this fold cannot fit class c; its rows keep NaN scores
            train_sizes[c] += int(subset.size)
            scores[predict_rows, c] = fit_predict(
                features, subset, y.astype(int), predict_rows, c_value, max_iter
            )
    return scores, train_sizes
