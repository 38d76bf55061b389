"""Which rows train, pick thresholds and get scored; and scoring a (N, C) prediction matrix.

Two protocols:

- ``split``: the dataset's own ``split`` column: train rows fit, val rows choose
  thresholds, test rows are scored. The usual protocol for real benchmarks.
- ``cv``: stratified, patient-grouped k-fold cross-validation over every labelled
  row; each row is scored once, by the model that did not see it. For small sets
  (the 16 bundled pediatric images) where a held-out test split would hold a
  handful of images. Thresholds are then fixed (``threshold``), and said so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cxrkit.errors import InputError
from cxrkit.evaluate import bootstrap, metrics

log = logging.getLogger(__name__)


@dataclass
class Fold:
    """Row indices (into the dataset rows) of one train / val / test assignment."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


@dataclass
class Stats:
    """How class metrics are computed and reported."""

    min_count: int = 5
    n_boot: int = 1000
    level: float = 0.95
    seed: int = 0
    threshold: float = 0.5


def labelled_rows(labels: np.ndarray) -> np.ndarray:
    """Rows with at least one known (non-NaN) label."""
    return np.nonzero(~np.all(np.isnan(labels), axis=1))[0]


def split_folds(
    splits: Sequence[str | None], labels: np.ndarray, train: str, val: str, test: str
) -> list[Fold]:
    """One fold from the dataset's split column (labelled rows only).

    When ``val`` names the scored split itself (``test_split = val`` to score
    CheXpert's ``valid/``), no rows choose C or thresholds: the scored rows must not
    tune what scores them, so the fold's val rows are empty (fixed values are used).
    Raises InputError when the scored split has no labelled rows.
    """
    known = set(labelled_rows(labels).tolist())
    names = np.asarray([s or "" for s in splits])
    pick = {
        n: np.array([i for i in np.nonzero(names == n)[0] if i in known], dtype=np.int64)
        for n in (train, val, test)
    }
    if pick[test].size == 0:
        found = sorted(set(names.tolist()))
        raise InputError(
            f"no labelled rows in split {test!r} (splits present: {', '.join(found)}); "
            "use --protocol cv for a small set, or score another split with "
            "--set test_split=NAME"
        )
    if val == test:
        log.warning(
            "val_split is the scored split %r: no rows choose C or thresholds; fixed values "
            "(probe_c, threshold) are used",
            test,
        )
        return [Fold(pick[train], np.zeros(0, dtype=np.int64), pick[test])]
    return [Fold(pick[train], pick[val], pick[test])]


def patients_in_several_splits(
    groups: Sequence[str], parts: dict[str, np.ndarray]
) -> tuple[int, str]:
    """How many patients have rows in more than one of ``parts`` (name -> row indices), and
    one of them described (``"3 images in train, test"``; "" when none)."""
    where: dict[str, set[str]] = {}
    images: dict[str, int] = {}
    for name, rows in parts.items():
        for r in rows.tolist():
            where.setdefault(groups[r], set()).add(name)
            images[groups[r]] = images.get(groups[r], 0) + 1
    mixed = [g for g, names in where.items() if len(names) > 1]
    if not mixed:
        return 0, ""
    first = mixed[0]
    order = [n for n in parts if n in where[first]]
    return len(mixed), f"{images[first]} images in {', '.join(order)}"


def cv_folds(labels: np.ndarray, groups: Sequence[str] | None, k: int, seed: int) -> list[Fold]:
    """Patient-grouped k folds over the labelled rows, stratified on the rarest class that
    has at least two positives and two negatives (so every training fold sees both).

    Takes (N, C) 1/0/NaN labels, per-row patient ids (None: each row its own group), k and
    a seed. Returns ``min(k, patients)`` folds (fewer, at least 2, when even the largest
    stratum has fewer rows: the splitter needs one per fold); every labelled row is tested
    exactly once and a patient never sits on both sides. A class too rare for that (one
    positive) is not stratified on and does not stop the others; with no such class the
    folds are grouped only. Raises InputError when the labelled rows come from fewer than two patients.
    """
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold

    rows = labelled_rows(labels)
    known = labels[rows]
    group_ids = np.asarray(groups, dtype=object)[rows] if groups is not None else rows
    n_groups = int(np.unique(np.asarray(group_ids).astype(str)).size)
    if n_groups < 2:
        raise InputError(
            f"cross-validation needs labelled images of >= 2 patients; have {n_groups} "
            f"({rows.size} labelled images)"
        )
    positives = np.sum(known == 1, axis=0)
    negatives = np.sum(known == 0, axis=0)
    usable = np.nonzero((positives >= 2) & (negatives >= 2))[0]
    if usable.size:
        rarest = int(usable[np.argmin(np.minimum(positives, negatives)[usable])])
        strata = np.nan_to_num(known[:, rarest], nan=2.0).astype(int)
    else:
        strata = np.zeros(rows.size, dtype=int)
    n_splits = max(2, min(k, n_groups, int(np.bincount(strata).max())))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a stratum smaller than k: spread as evenly as it can
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(splitter.split(rows, strata, groups=group_ids))
    return [Fold(rows[train], np.zeros(0, dtype=np.int64), rows[test]) for train, test in splits]


def fraction_subset(
    train: np.ndarray, labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """ONE subset of the labelled training rows for a label fraction, shared by every class.

    Takes the fold's training rows, the (N, C) 1/0/NaN labels, the fraction and a
    seeded generator; returns the sorted chosen rows. Its size is
    ``max(1, round(fraction * n))`` over the ``n`` training rows with any known label
    (label-efficiency papers subsample images, not labels per class). Within that
    budget the draw is stratified only as far as one subset allows: rarest class
    first, a random positive and a random negative are added for each class the
    subset still lacks, then random rows fill the rest. ``fraction >= 1`` returns
    every labelled training row.
    """
    rows = train[~np.all(np.isnan(labels[train]), axis=1)]
    if fraction >= 1.0 or rows.size == 0:
        return np.sort(rows)
    budget = min(rows.size, max(1, int(round(fraction * rows.size))))
    known = labels[rows]
    chosen: list[int] = []
    taken = np.zeros(rows.size, dtype=bool)
    for c in np.argsort(np.nansum(known == 1, axis=0), kind="stable"):
        for value in (1, 0):
            if len(chosen) >= budget:
                break
            if np.any(known[taken, c] == value):
                continue
            candidates = np.nonzero((known[:, c] == value) & ~taken)[0]
            if candidates.size:
                pick = int(rng.choice(candidates))
                taken[pick] = True
                chosen.append(pick)
    rest = np.nonzero(~taken)[0]
    if budget > len(chosen):
        chosen += rng.choice(rest, size=budget - len(chosen), replace=False).tolist()
    return np.sort(rows[chosen])


def subset_counts(subset: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict:
    """Realised counts of a training subset: images, and positives / negatives per class."""
    known = labels[subset]
    return {
        "images": int(subset.size),
        "classes": {
            name: {"positive": int(np.sum(known[:, c] == 1)),
                   "negative": int(np.sum(known[:, c] == 0))}
            for c, name in enumerate(classes)
        },
    }  # fmt: skip


def choose_threshold(labels: np.ndarray, scores: np.ndarray, fixed: float) -> tuple[float, str]:
    """Max-F1 threshold on validation rows with both classes, else the fixed one (and why)."""
    known = ~np.isnan(labels)
    y, s = labels[known], scores[known]
    if y.size and 0 < y.sum() < y.size:
        return metrics.best_f1_threshold(y, s), f"max F1 on validation ({y.size} rows)"
    return fixed, f"fixed {fixed:g} (no validation rows with both labels)"


def score_classes(
    labels: np.ndarray,
    scores: np.ndarray,
    classes: Sequence[str],
    test_rows: np.ndarray,
    thresholds: Sequence[tuple[float, str]],
    groups: Sequence[str] | None,
    stats: Stats,
) -> dict:
    """Class reports and macro averages of (N, C) scores on ``test_rows``.

    ``labels`` are 1/0/NaN (uncertain already mapped); NaN scores mark rows no model
    predicted. A class with labelled test rows and no prediction at all is reported as
    ``status = "not_fitted"`` with its test counts; one predicted on part of its rows
    says how many were left out (``unscored``). Returns a JSON-ready dict
    ``{"classes": {name: report}, "macro": {...}}``.
    """
    reports = {}
    group_array = np.asarray(groups, dtype=object) if groups is not None else None
    for c, name in enumerate(classes):
        labelled = test_rows[~np.isnan(labels[test_rows, c])]
        rows = labelled[~np.isnan(scores[labelled, c])]
        if labelled.size and not rows.size:  # labels to score, but no model made predictions
            n_pos = int(np.sum(labels[labelled, c] == 1))
            reports[name] = {
                "n": int(labelled.size), "n_pos": n_pos, "n_neg": int(labelled.size) - n_pos,
                "status": "not_fitted",
                "reason": "no predictions: no training subset held both a positive and a "
                "negative of this class",
                "threshold_source": thresholds[c][1],
            }  # fmt: skip
            continue
        report = bootstrap.class_report(
            labels[rows, c],
            scores[rows, c],
            thresholds[c][0],
            None if group_array is None else group_array[rows].tolist(),
            stats.min_count,
            stats.n_boot,
            stats.level,
            stats.seed,
        )
        report["threshold_source"] = thresholds[c][1]
        if rows.size < labelled.size:  # folds whose subset could not fit this class
            report["unscored"] = int(labelled.size - rows.size)
        reports[name] = report
    macro = bootstrap.macro_report(
        labels[test_rows],
        scores[test_rows],
        reports,
        None if group_array is None else group_array[test_rows].tolist(),
        stats.n_boot,
        stats.level,
        stats.seed,
    )
    return {"classes": reports, "macro": macro}
