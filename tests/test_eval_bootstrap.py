"""Bootstrap intervals: coverage, patient-level resampling, and honest small-class reporting."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from cxrkit.evaluate import bootstrap, metrics


def test_auroc_interval_covers_the_true_value_about_95_percent_of_the_time():
    # Binormal model: negatives N(0, 1), positives N(d, 1) -> true AUROC = Phi(d / sqrt(2)).
    shift = 1.0
    true_auroc = norm.cdf(shift / np.sqrt(2))
    rng = np.random.default_rng(0)
    simulations, covered = 300, 0
    for i in range(simulations):
        labels = np.r_[np.ones(60), np.zeros(60)]
        scores = np.r_[rng.normal(shift, 1, 60), rng.normal(0, 1, 60)]
        interval = bootstrap.bootstrap_ci(
            metrics.auroc, (labels, scores), n_boot=300, seed=i, weighted=metrics.auroc_weighted
        )
        covered += interval.low <= true_auroc <= interval.high
    coverage = covered / simulations
    # percentile intervals run slightly under nominal at this size; binomial SD is ~1.5 %
    assert 0.88 <= coverage <= 0.99, coverage


def test_patient_resampling_draws_whole_patients():
    groups = ["a", "a", "b", "b", "b", "c"]
    weights = bootstrap.resample_weights(6, groups, 200, np.random.default_rng(1))
    assert weights.shape == (200, 6)
    np.testing.assert_array_equal(weights[:, 0], weights[:, 1])  # patient a's two images
    np.testing.assert_array_equal(weights[:, 2], weights[:, 4])  # patient b
    # each resample draws 3 patients (not 6 images)
    drawn = weights[:, 0] + weights[:, 2] + weights[:, 5]
    np.testing.assert_array_equal(drawn, np.full(200, 3))


def test_patient_resampling_widens_the_interval_when_images_repeat():
    rng = np.random.default_rng(2)
    labels = np.r_[np.ones(20), np.zeros(20)]
    scores = np.r_[rng.normal(0.8, 1, 20), rng.normal(0, 1, 20)]
    # every patient contributes the same image 5 times: image resampling is overconfident
    labels5, scores5 = np.repeat(labels, 5), np.repeat(scores, 5)
    patients = np.repeat(np.arange(40), 5).astype(str)
    by_image = bootstrap.bootstrap_ci(metrics.auroc, (labels5, scores5), None, 400, seed=0)
    by_patient = bootstrap.bootstrap_ci(metrics.auroc, (labels5, scores5), patients, 400, seed=0)
    assert (by_patient.high - by_patient.low) > 1.5 * (by_image.high - by_image.low)


def test_class_with_too_few_positives_is_reported_without_numbers():
    labels = np.r_[np.ones(4), np.zeros(30)]
    scores = np.linspace(0, 1, 34)
    report = bootstrap.class_report(labels, scores, 0.5, min_count=5, n_boot=50)
    assert report["status"] == "too_few"
    assert report["n_pos"] == 4 and report["n_neg"] == 30
    assert "auroc" not in report


def test_class_report_gives_value_inside_its_interval():
    rng = np.random.default_rng(4)
    labels = np.r_[np.ones(30), np.zeros(30)]
    scores = np.r_[rng.normal(1, 1, 30), rng.normal(0, 1, 30)]
    report = bootstrap.class_report(labels, scores, 0.5, n_boot=200)
    assert report["status"] == "ok"
    assert report["auroc"]["value"] == pytest.approx(metrics.auroc(labels, scores))
    low, high = report["auroc"]["ci"]
    assert low <= report["auroc"]["value"] <= high


def test_macro_average_uses_only_classes_with_enough_labels():
    rng = np.random.default_rng(5)
    good = np.r_[np.ones(20), np.zeros(20)]
    rare = np.r_[np.ones(2), np.zeros(38)]
    labels = np.column_stack([good, rare])
    scores = rng.random((40, 2))
    reports = {
        "good": bootstrap.class_report(good, scores[:, 0], 0.5, n_boot=50),
        "rare": bootstrap.class_report(rare, scores[:, 1], 0.5, n_boot=50),
    }
    macro = bootstrap.macro_report(labels, scores, reports, n_boot=50)
    assert macro["classes"] == ["good"]
    assert macro["macro_auroc"]["value"] == pytest.approx(metrics.auroc(good, scores[:, 0]))
