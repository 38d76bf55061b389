"""Linear probe: one logistic regression per class on frozen, standardised features.

Label-efficiency sweeps train on a fraction of the training images: ONE subset
per fraction, seed and fold, shared by every class (and by fine-tuning;
:func:`cxrkit.evaluate.protocol.fraction_subset`); several seeds show how much
the result depends on which few images were drawn. The L2 strength ``C`` is
chosen per class from a small grid by AUROC on the validation rows; where there
are none with both labels (the ``cv`` protocol) the configured fallback is used.
The chosen ``C`` and the realised subset counts are returned for metrics.json.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np

from cxrkit.evaluate.protocol import Fold, fraction_subset, subset_counts

log = logging.getLogger(__name__)

C_GRID = (0.01, 0.1, 1.0, 10.0)


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


def _val_auroc(y: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    known = ~np.isnan(y)
    if not known.any() or y[known].min() == y[known].max():
        return None
    return float(roc_auc_score(y[known], scores[known]))


def probe_scores(
    features: np.ndarray,
    labels: np.ndarray,
    folds: Sequence[Fold],
    fraction: float,
    seed: int,
    classes: Sequence[str],
    c_grid: Sequence[float] = C_GRID,
    fallback_c: float = 1.0,
    max_iter: int = 1000,
) -> tuple[np.ndarray, dict]:
    """Scores (N, C) for every fold's val and test rows (NaN elsewhere), and what was used.

    ``labels`` (N, C) are 1/0/NaN. Per fold, one image subset for all classes; a class
    whose subset lacks a positive or a negative gets no scores in that fold. Returns
    ``(scores, {"folds": [{"images", "classes": {name: {"positive", "negative", "fitted",
    "C", "C_source"}}}]})``.
    """
    scores = np.full(labels.shape, np.nan)
    used = []
    for f, fold in enumerate(folds):
        subset = fraction_subset(fold.train, labels, fraction, np.random.default_rng([seed, f]))
        counts = subset_counts(subset, labels, classes)
        predict_rows = np.concatenate([fold.val, fold.test])
        for c, name in enumerate(classes):
            train = subset[~np.isnan(labels[subset, c])]
            y = labels[train, c]
            info = counts["classes"][name]
            if y.size == 0 or y.min() == y.max():
                info.update(fitted=False, C=None,
                            C_source="not fitted: the subset lacks a positive or negative")  # fmt: skip
                continue  # this fold cannot fit class c; its rows keep NaN scores
            info["fitted"] = True
            best = None
            for c_value in c_grid:
                predicted = fit_predict(features, train, y.astype(int), predict_rows, c_value,
                                        max_iter)  # fmt: skip
                auroc = _val_auroc(labels[fold.val, c], predicted[: fold.val.size])
                if auroc is None:
                    break
                if best is None or auroc > best[0]:
                    best = (auroc, c_value, predicted)
            if best is None:
                predicted = fit_predict(features, train, y.astype(int), predict_rows, fallback_c,
                                        max_iter)  # fmt: skip
                info.update(C=fallback_c, C_source="fixed (no validation rows with both labels)")
            else:
                predicted = best[2]
                info.update(C=best[1], C_source=f"max validation AUROC ({best[0]:.3f}) over "
                            f"{list(c_grid)}")  # fmt: skip
            scores[predict_rows, c] = predicted
        used.append(counts)
    return scores, {"folds": used}
