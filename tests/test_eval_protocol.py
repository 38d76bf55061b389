"""Label-fraction subsets shared by every class, and the probe's validation-chosen C."""

from __future__ import annotations

import numpy as np
import pytest

from cxrkit.evaluate import probe
from cxrkit.evaluate.protocol import Fold, fraction_subset, split_folds, subset_counts


def _labels(n: int = 1000, seed: int = 0) -> np.ndarray:
    """(n, 3) labels: a common, a rare (1 %) and a half-unlabelled class."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, 3))
    labels[:, 0] = rng.random(n) < 0.3
    labels[:, 1] = 0
    labels[rng.choice(n, 10, replace=False), 1] = 1
    labels[:, 2] = rng.random(n) < 0.5
    labels[rng.random(n) < 0.5, 2] = np.nan
    return labels


def test_one_percent_is_one_percent_of_the_images_for_every_class():
    labels = _labels()
    subset = fraction_subset(np.arange(1000), labels, 0.01, np.random.default_rng(0))
    assert subset.size == 10  # round(0.01 * 1000): not a union of per-class draws
    assert np.unique(subset).size == subset.size and np.all(np.diff(subset) > 0)


def test_the_budget_first_covers_each_class_with_a_positive_and_a_negative():
    labels = _labels()
    subset = fraction_subset(np.arange(1000), labels, 0.01, np.random.default_rng(3))
    known = labels[subset]
    for c in range(3):
        assert np.any(known[:, c] == 1) and np.any(known[:, c] == 0), c


def test_stratification_stops_at_the_budget():
    labels = _labels()
    subset = fraction_subset(np.arange(1000), labels, 0.002, np.random.default_rng(0))
    assert subset.size == 2  # 6 coverage picks would be needed; the subset stays 0.2 %


def test_subsets_are_seeded_and_full_fraction_is_every_labelled_row():
    labels = _labels()
    labels[5] = np.nan  # a row with no known label never trains
    rows = np.arange(1000)
    a = fraction_subset(rows, labels, 0.1, np.random.default_rng(1))
    b = fraction_subset(rows, labels, 0.1, np.random.default_rng(1))
    c = fraction_subset(rows, labels, 0.1, np.random.default_rng(2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(fraction_subset(rows, labels, 1.0, None), np.delete(rows, 5))


def test_subset_counts_report_images_and_labels_per_class():
    labels = np.array([[1, 0], [0, np.nan], [1, 1]], dtype=float)
    counts = subset_counts(np.array([0, 2]), labels, ["a", "b"])
    assert counts == {"images": 2, "classes": {"a": {"positive": 2, "negative": 0},
                                              "b": {"positive": 1, "negative": 1}}}  # fmt: skip


def _probe_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    n, d = 300, 40
    features = rng.normal(size=(n, d))
    logits = features[:, 0] * 1.5 + features[:, 1]
    labels = (logits + rng.normal(scale=1.5, size=n) > 0).astype(float)[:, None]
    fold = Fold(np.arange(0, 150), np.arange(150, 220), np.arange(220, 300))
    return features, labels, fold


def test_probe_picks_c_by_validation_auroc_and_records_it():
    from sklearn.metrics import roc_auc_score

    features, labels, fold = _probe_data()
    grid = (0.001, 0.01, 1.0, 100.0)
    scores, info = probe.probe_scores(features, labels, [fold], 1.0, 0, ["x"], grid, 1.0)
    chosen = info["folds"][0]["classes"]["x"]
    aurocs = {}
    for c in grid:  # the same fits, scored on the validation rows by hand
        p = probe.fit_predict(features, fold.train, labels[fold.train, 0].astype(int),
                              fold.val, c, 1000)  # fmt: skip
        aurocs[c] = roc_auc_score(labels[fold.val, 0], p)
    assert chosen["C"] == max(grid, key=lambda c: (aurocs[c], -grid.index(c)))
    assert "validation AUROC" in chosen["C_source"]
    assert info["folds"][0]["images"] == 150
    assert np.all(np.isfinite(scores[fold.test, 0])) and np.all(np.isnan(scores[fold.train, 0]))


def test_probe_without_validation_rows_uses_the_fallback_c():
    features, labels, fold = _probe_data()
    no_val = Fold(fold.train, np.zeros(0, dtype=np.int64), fold.test)
    _, info = probe.probe_scores(features, labels, [no_val], 1.0, 0, ["x"], (0.01, 10.0), 0.5)
    assert info["folds"][0]["classes"]["x"]["C"] == 0.5
    assert info["folds"][0]["classes"]["x"]["C_source"].startswith("fixed")


@pytest.mark.parametrize("fraction", [0.01, 0.1])
def test_probe_and_finetune_share_the_subset(fraction):
    # Both call fraction_subset with default_rng([seed, fold]): the same images.
    labels = _labels()
    fold = Fold(np.arange(800), np.arange(800, 900), np.arange(900, 1000))
    a = fraction_subset(fold.train, labels, fraction, np.random.default_rng([0, 0]))
    features = np.random.default_rng(0).normal(size=(1000, 4))
    _, info = probe.probe_scores(features, labels, [fold], fraction, 0, ["a", "b", "c"])
    assert info["folds"][0]["images"] == a.size == round(fraction * 800)


def test_split_folds_take_train_val_and_test_rows_from_the_split_column():
    splits = ["train", "val", "test", "train", "val", "test", None]
    labels = np.array([[1.0], [0.0], [1.0], [0.0], [1.0], [np.nan], [1.0]])
    (fold,) = split_folds(splits, labels, "train", "val", "test")
    assert fold.train.tolist() == [0, 3] and fold.val.tolist() == [1, 4]
    assert fold.test.tolist() == [2]  # row 5 has no known label


def test_scoring_the_validation_split_leaves_nothing_to_choose_c_on_it():
    """test_split = val (CheXpert's valid/ as the scored set): C and thresholds are fixed,
    never tuned on the rows they score."""
    splits = ["train", "val", "val", "train"]
    labels = np.array([[1.0], [0.0], [1.0], [0.0]])
    (fold,) = split_folds(splits, labels, "train", "val", "val")
    assert fold.test.tolist() == [1, 2] and fold.val.size == 0


def test_a_class_the_probe_could_not_fit_is_reported_as_not_fitted_with_its_test_counts():
    """Class 0 has 6 positives and 4 negatives among the test rows but no predictions (its
    training subset held only positives); class 1 is scored on 8 of its 10 rows."""
    from cxrkit.evaluate.protocol import Stats, score_classes

    labels = np.c_[np.r_[np.ones(6), np.zeros(4)], np.r_[np.ones(5), np.zeros(5)]]
    scores = np.c_[np.full(10, np.nan), np.linspace(0.0, 1.0, 10)]
    scores[[0, 9], 1] = np.nan
    fixed = [(0.5, "fixed")] * 2
    out = score_classes(labels, scores, ["A", "B"], np.arange(10), fixed, None, Stats(2, 20))
    a, b = out["classes"]["A"], out["classes"]["B"]
    assert (a["status"], a["n_pos"], a["n_neg"]) == ("not_fitted", 6, 4)
    assert "no predictions" in a["reason"]
    assert (b["status"], b["n"], b["unscored"]) == ("ok", 8, 2)
    assert out["macro"]["classes"] == ["B"]


def _seed(**aurocs) -> dict:
    classes = {
        name: {"status": "ok", "auroc": {"value": v}} if v is not None else {"status": "too_few"}
        for name, v in aurocs.items()
    }
    ok = [v for v in aurocs.values() if v is not None]
    return {"classes": classes, "macro": {"macro_auroc": {"value": float(np.mean(ok))}}}


def test_macro_over_seeds_averages_the_classes_every_seed_scored():
    """Seed 0 scored A (0.6) and B (0.8), macro 0.7; seed 1 only A (0.7), macro 0.7. The
    spread over seeds compares like with like: A alone, 0.6 and 0.7."""
    from cxrkit.evaluate.tasks import _over_seeds

    spread = _over_seeds({"0": _seed(A=0.6, B=0.8), "1": _seed(A=0.7, B=None)})
    macro = spread["macro_auroc"]
    assert macro["classes"] == ["A"]
    assert macro["auroc_mean"] == pytest.approx(0.65)
    assert macro["auroc_sd"] == pytest.approx(np.std([0.6, 0.7], ddof=1))
    assert macro["seeds"] == 2


def test_finetune_leaves_a_class_its_subset_cannot_fit_unscored_like_the_probe():
    """Class b has no positive in the training rows: the probe fits no model for it, and
    fine-tuning (one head for every class) must not report its untrained logit as scores."""
    import torch
    from torch import nn

    from cxrkit.evaluate.finetune import finetune_scores

    labels = np.zeros((12, 2))
    labels[::2, 0] = 1
    labels[[9, 11], 1] = 1  # b's only positives are in val and test
    fold = Fold(np.arange(8), np.array([8, 9]), np.array([10, 11]))
    images = {i: torch.full((1, 2, 2), float(labels[i, 0])) for i in range(12)}
    encoder = nn.Flatten()
    encoder.num_features = 4
    scores, info = finetune_scores(encoder, images, labels, [fold], 1.0, 0, epochs=2, lr=1e-2,
                                   batch_size=4, device=torch.device("cpu"),
                                   classes=["a", "b"])  # fmt: skip
    assert not np.isnan(scores[8:, 0]).any()  # a: fitted, predicted on val and test
    assert np.isnan(scores[:, 1]).all()  # b: not fitted, never scored
    counts = info["folds"][0]["classes"]
    assert counts["b"] == {"positive": 0, "negative": 8, "fitted": False}
    assert counts["a"]["fitted"] is True
    features = np.stack([images[i].flatten().numpy() for i in range(12)])
    probed, _ = probe.probe_scores(features, labels, [fold], 1.0, 0, ["a", "b"])
    assert np.array_equal(np.isnan(probed), np.isnan(scores))
