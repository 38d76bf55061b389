"""The demo's image-report pairs: real IU reports that agree with the image's label, the
test images and their reports held out from training."""

from __future__ import annotations

import csv

from cxrkit.io import bundled
from cxrkit.stages.demo import PNEUMONIA_MESH, TRAIN_PER_CLASS, pick_reports


def _headings(report) -> set[str]:
    return {term.split("/")[0].strip().lower() for term in report.mesh}


def _rows(mapping) -> list[dict]:
    with open(mapping, newline="") as handle:
        return list(csv.DictReader(handle))


def test_reports_are_picked_by_their_mesh_terms():
    normal, abnormal = pick_reports(9, 9)
    assert len(normal) == len(abnormal) == 9
    assert all(r.mesh == ["normal"] for r in normal)
    assert all(_headings(r) & set(PNEUMONIA_MESH) for r in abnormal)
    assert all(r.findings and r.impression for r in normal + abnormal)  # any text_section
    # The pneumonia reports' impressions say so in words a text tower can read.
    said = ("pneumonia", "airspace disease", "consolidation", "infiltrate")
    assert sum(any(w in r.impression.lower() for w in said) for r in abnormal) >= 8


def test_each_labelled_image_gets_a_report_of_its_own_label(demo_inputs):
    normal, abnormal = pick_reports(9, 9)
    label_of = {r.text: "0" for r in normal} | {r.text: "1" for r in abnormal}
    pediatric = [r for r in _rows(demo_inputs) if r["Pneumonia"] in ("0", "1")]
    assert len(pediatric) == len(bundled.pediatric_jpegs()) == 16
    for row in pediatric:
        assert label_of[row["report_text"]] == row["Pneumonia"], row["image_path"]
        assert row["Pneumonia"] == str(bundled.pediatric_label(row["image_path"]))


def test_the_test_split_is_balanced_and_its_reports_are_never_trained_on(demo_inputs):
    rows = _rows(demo_inputs)
    test = [r for r in rows if r["split"] == "test"]
    train = [r for r in rows if r["split"] == "train"]
    per_class = {c: sum(r["Pneumonia"] == c for r in test) for c in ("0", "1")}
    assert per_class == {"0": 8 - TRAIN_PER_CLASS, "1": 8 - TRAIN_PER_CLASS}
    assert not {r["report_text"] for r in test} & {r["report_text"] for r in train}
    assert not {r["image_path"] for r in test} & {r["image_path"] for r in train}
