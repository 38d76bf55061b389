"""Cross-validation folds for small labelled sets (`--protocol cv`): every labelled row is
scored once, a patient is never on both sides, and one rare class does not block the rest."""

from __future__ import annotations

import numpy as np
import pytest

from cxrkit.errors import InputError
from cxrkit.evaluate.protocol import cv_folds


def _check_partition(folds, labels, groups):
    tested = np.sort(np.concatenate([f.test for f in folds]))
    labelled = np.nonzero(~np.all(np.isnan(labels), axis=1))[0]
    np.testing.assert_array_equal(tested, labelled)  # each labelled row scored exactly once
    for fold in folds:
        assert not {groups[i] for i in fold.train} & {groups[i] for i in fold.test}


def test_a_class_with_one_positive_does_not_block_cv_of_the_others():
    """17 rows as in the demo's report labels: Pneumonia 8/8 (+1 unknown), Edema 1 positive."""
    pneumonia = np.r_[np.ones(8), np.zeros(8), np.nan]
    edema = np.r_[1.0, np.zeros(10), np.full(6, np.nan)]
    labels = np.c_[pneumonia, edema]
    groups = [f"P{i}" for i in range(17)]
    folds = cv_folds(labels, groups, 4, 0)
    assert len(folds) == 4
    _check_partition(folds, labels, groups)
    # stratified on Pneumonia, the rarest class that every fold can hold: 2 positives each
    assert [int(np.nansum(labels[f.test, 0] == 1)) for f in folds] == [2, 2, 2, 2]


def test_without_a_class_to_stratify_on_the_folds_are_grouped_only():
    labels = np.c_[np.r_[1.0, np.zeros(7)]]  # one positive: nothing to stratify on
    groups = ["A", "A", "B", "C", "D", "E", "F", "G"]
    folds = cv_folds(labels, groups, 4, 0)
    assert len(folds) == 4
    _check_partition(folds, labels, groups)


def test_one_labelled_patient_cannot_be_cross_validated():
    labels = np.c_[np.r_[1.0, 0.0, np.nan]]
    with pytest.raises(InputError, match="2 patients"):
        cv_folds(labels, ["A", "A", "B"], 4, 0)
