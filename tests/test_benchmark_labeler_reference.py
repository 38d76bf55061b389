"""The MeSH reference of benchmarks/labeler.py: each mapping rule its docstring states.

The benchmark's score is only as honest as this mapping, so every rule is pinned
here on hand-written MeSH term lists (the IU archive's "Head/qualifier/..." form).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "labeler.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_labeler", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ref(bench, mesh: list[str], name: str) -> float:
    return bench.reference(mesh, name, {**bench.MESH_MAP, **bench.EXTRA_MAP})


@pytest.mark.parametrize(
    ("mesh", "name", "expected"),
    [
        # uncertain forms: what CheXpert's own rules call uncertain
        (["Pulmonary Congestion/mild"], "Edema", -1.0),
        (["Pulmonary Congestion", "Pulmonary Edema/interstitial"], "Edema", 1.0),
        (["Pulmonary Congestion", "Heart Failure"], "Edema", 1.0),
        (["Cardiomegaly/borderline"], "Cardiomegaly", -1.0),
        (["Cardiomegaly/borderline", "Cardiac Shadow/enlarged"], "Cardiomegaly", 1.0),
        (["Cardiac Shadow/enlarged/severe"], "Cardiomegaly", 1.0),
        # Lung Opacity: the reference's "interstitial marking", "interstitial lung", "scar"
        (["Markings/lung/interstitial/prominent"], "Lung Opacity", 1.0),
        (["Markings/bronchovascular"], "Lung Opacity", 0.0),
        (["Lung Diseases, Interstitial"], "Lung Opacity", 1.0),
        (["Cicatrix/lung/apex/right"], "Lung Opacity", 1.0),
        (["Cicatrix/pleura/apex"], "Lung Opacity", 0.0),
        (["Cicatrix/breast/right"], "Lung Opacity", 0.0),
        # non-lung sites
        (["Density/ribs/right/anterior/round"], "Lung Opacity", 0.0),
        (["Density/ribs/right/anterior/round"], "Lung Lesion", 0.0),
        (["Density/lung/base/left/round"], "Lung Lesion", 1.0),
        # a nodule with calcinosis at its site is a calcified nodule
        (["Nodule/lung/upper lobe/right", "Calcinosis/lung/upper lobe/right"], "Lung Lesion", 0.0),
        (["Nodule/lung/upper lobe/right/small", "Calcinosis/lung/upper lobe/right"], "Lung Lesion",
         0.0),
        (["Nodule/lung/lower lobe/left", "Calcinosis/lung/upper lobe/right"], "Lung Lesion", 1.0),
        (["Mass/lung/hilum/left", "Calcinosis/lung/hilum/left"], "Lung Lesion", 1.0),
        # No Finding: "normal", or only devices and image quality
        (["normal"], "No Finding", 1.0),
        (["Catheters, Indwelling/right"], "No Finding", 1.0),
        (["Technical Quality of Image Unsatisfactory"], "No Finding", 1.0),
        (["Technical Quality of Image Unsatisfactory", "Lung/hypoinflation"], "No Finding", 0.0),
    ],
)  # fmt: skip
def test_mesh_reference_rules(bench, mesh, name, expected):
    assert _ref(bench, mesh, name) == expected


def test_uncertain_forms_count_like_the_labelers_minus_one(bench):
    reports = [{"mesh": ["Pulmonary Congestion"]}, {"mesh": ["Pulmonary Edema"]},
               {"mesh": ["normal"]}]  # fmt: skip
    table = bench.MESH_MAP
    u_zeros = bench.truth_vector(reports, "Edema", table, uncertain_positive=False)
    u_ones = bench.truth_vector(reports, "Edema", table, uncertain_positive=True)
    strict = bench.truth_vector(reports, "Edema", table, False, strict=True)
    assert u_zeros.tolist() == [False, True, False]
    assert u_ones.tolist() == [True, True, False]
    assert strict.tolist() == [True, True, False]


def test_uncertain_disagreement_counts(bench):
    # labeler: -1 on a MeSH-present report, -1 on a MeSH-absent one, 1 on a present one
    reports = [{"mesh": ["Pneumonia"]}, {"mesh": ["normal"]}, {"mesh": ["Pneumonia"]}]
    labels = np.full((3, 14), np.nan, dtype=np.float32)
    column = bench.CHEXPERT_CLASSES.index("Pneumonia")
    labels[:, column] = [-1, -1, 1]
    table = {"Pneumonia": bench.MESH_MAP["Pneumonia"]}
    zeros = bench.score(reports, labels, table, uncertain_positive=False)["Pneumonia"]
    ones = bench.score(reports, labels, table, uncertain_positive=True)["Pneumonia"]
    assert (zeros["uncertain_vs_present"], zeros["uncertain_vs_absent"]) == (1, 0)
    assert (ones["uncertain_vs_present"], ones["uncertain_vs_absent"]) == (0, 1)
    assert zeros["recall"] == pytest.approx(0.5) and ones["precision"] == pytest.approx(2 / 3)
