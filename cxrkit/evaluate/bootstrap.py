"""Bootstrap confidence intervals and the per-class headline report.

Resampling is by patient when patient ids are known (images of one patient are
correlated, so resampling images would make intervals too narrow), else by
image. Intervals are percentile intervals over ``n_boot`` resamples; resamples
where the statistic is undefined (e.g. no positive drawn) are dropped and
counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cxrkit.evaluate import metrics

WEIGHT_BUDGET = 4_000_000  # entries of a (resamples, rows) weight chunk: ~32 MB as float64


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval; ``valid`` is how many resamples were usable."""

    low: float
    high: float
    valid: int
    total: int

    def as_list(self) -> list[float | None]:
        return [_num(self.low), _num(self.high)]


def _num(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def resample_weights(
    n: int, groups: Sequence | None, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """(n_boot, n) integer multiplicities of each row in each resample.

    With ``groups`` (e.g. patient ids) whole groups are drawn with replacement and
    each row is repeated as often as its group was drawn.
    """
    if groups is None:
        group_of_row = np.arange(n)
    else:
        _, group_of_row = np.unique(
            np.asarray(groups, dtype=object).astype(str), return_inverse=True
        )
    n_groups = int(group_of_row.max()) + 1 if n else 0
    drawn = rng.integers(0, n_groups, size=(n_boot, n_groups))  # (B, G)
    counts = np.zeros((n_boot, n_groups), dtype=np.int64)
    np.add.at(counts, (np.arange(n_boot)[:, None], drawn), 1)
    return counts[:, group_of_row]  # (B, n)


def bootstrap_ci(
    statistic: Callable[..., float],
    arrays: Sequence[np.ndarray],
    groups: Sequence | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    weighted: Callable[..., np.ndarray] | None = None,
) -> Interval:
    """Percentile interval of ``statistic(*arrays)`` under (grouped) resampling.

    ``arrays`` are aligned on their first axis. ``weighted(*arrays, weights (B, n)) -> (B,)``,
    when given, computes all resamples at once (the metrics module has them for AUROC,
    AUPRC, F1, accuracy); otherwise ``statistic`` runs once per resample. Returns NaN
    bounds when fewer than half the resamples give a finite statistic.
    """
    arrays = [np.asarray(a) for a in arrays]
    n = len(arrays[0])
    rng = np.random.default_rng(seed)
    weights = resample_weights(n, groups, n_boot, rng)
    if weighted is not None:
        chunk = max(1, WEIGHT_BUDGET // max(n, 1))  # bound the (chunk, n) float matrices
        values = np.concatenate(
            [weighted(*arrays, weights[i : i + chunk]) for i in range(0, n_boot, chunk)]
        )
    else:
        rows = np.arange(n)
        values = np.array([statistic(*(a[np.repeat(rows, w)] for a in arrays)) for w in weights])
    finite = values[np.isfinite(values)]
    if finite.size < n_boot / 2:
        return Interval(float("nan"), float("nan"), int(finite.size), n_boot)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return Interval(float(low), float(high), int(finite.size), n_boot)


def class_report(
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    groups: Sequence | None = None,
    min_count: int = 5,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Headline metrics of one class with bootstrap intervals.

    Takes labels in {0, 1} and scores (probabilities for F1/accuracy at ``threshold``).
    Returns a JSON-ready dict with n, n_pos, n_neg and, when both counts reach
    ``min_count``, AUROC/AUPRC/F1/accuracy each as {"value", "ci"}; otherwise
    ``status = "too_few"`` and no numbers (a number from 3 positives misleads).
    """
    labels = np.asarray(labels).astype(np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(labels.sum())
    n_neg = int(labels.size - n_pos)
    report: dict = {"n": int(labels.size), "n_pos": n_pos, "n_neg": n_neg}
    if n_pos < min_count or n_neg < min_count:
        report["status"] = "too_few"
        report["reason"] = f"needs >= {min_count} positives and negatives (has {n_pos}/{n_neg})"
        return report
    report["status"] = "ok"
    report["threshold"] = float(threshold)
    statistics = {
        "auroc": (metrics.auroc, metrics.auroc_weighted),
        "auprc": (metrics.auprc, metrics.auprc_weighted),
        "f1": (
            lambda y, s: metrics.f1_at(y, s, threshold),
            lambda y, s, w: metrics.f1_weighted(y, s, w, threshold),
        ),
        "accuracy": (
            lambda y, s: metrics.accuracy_at(y, s, threshold),
            lambda y, s, w: metrics.accuracy_weighted(y, s, w, threshold),
        ),
    }
    for offset, (name, (fn, vectorised)) in enumerate(statistics.items()):
        interval = bootstrap_ci(
            fn, (labels, scores), groups, n_boot, level, seed + offset, weighted=vectorised
        )
        report[name] = {"value": float(fn(labels, scores)), "ci": interval.as_list()}
    report["ci_level"] = level
    report["ci_resampling"] = "patient" if groups is not None else "image"
    return report


def macro_average(class_reports: dict[str, dict], key: str) -> float | None:
    """Mean of ``key`` over the classes with status ok; None when no class qualifies."""
    values = [r[key]["value"] for r in class_reports.values() if r.get("status") == "ok"]
    return float(np.mean(values)) if values else None


def macro_report(
    label_matrix: np.ndarray,
    score_matrix: np.ndarray,
    class_reports: dict[str, dict],
    groups: Sequence | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Macro AUROC/AUPRC over the classes with status ok, with a joint bootstrap interval.

    ``label_matrix`` (N, C) holds 1/0 and NaN for unknown; columns follow the order of
    ``class_reports``. The same resample is used for every class, so the interval
    reflects the correlation between classes.
    """
    names = list(class_reports)
    usable = [i for i, name in enumerate(names) if class_reports[name].get("status") == "ok"]
    out: dict = {"classes": [names[i] for i in usable]}
    if not usable:
        out["status"] = "no class has enough positives and negatives"
        return out
    labels = np.asarray(label_matrix, dtype=np.float64)[:, usable]  # (N, C')
    scores = np.asarray(score_matrix, dtype=np.float64)[:, usable]  # (N, C')

    def macro(fn: Callable[..., float], vectorised) -> tuple[Callable, Callable]:
        def statistic(y: np.ndarray, s: np.ndarray) -> float:
            values = []
            for c in range(y.shape[1]):
                known = ~np.isnan(y[:, c]) & ~np.isnan(s[:, c])
                values.append(fn(y[known, c], s[known, c]))
            return float(np.mean(values))

        def weighted(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
            per_class = []
            for c in range(y.shape[1]):
                known = ~np.isnan(y[:, c]) & ~np.isnan(s[:, c])
                per_class.append(vectorised(y[known, c], s[known, c], w[:, known]))
            return np.mean(per_class, axis=0)  # NaN when a class has no positive drawn

        return statistic, weighted

    pairs = (("auroc", metrics.auroc, metrics.auroc_weighted),
             ("auprc", metrics.auprc, metrics.auprc_weighted))  # fmt: skip
    for offset, (name, fn, vectorised) in enumerate(pairs):
        statistic, weighted = macro(fn, vectorised)
        interval = bootstrap_ci(
            statistic, (labels, scores), groups, n_boot, level, seed + offset, weighted=weighted
        )
        out[f"macro_{name}"] = {"value": statistic(labels, scores), "ci": interval.as_list()}
    out["status"] = "ok"
    return out
