"""Pairing on a constructed table where the right partner is known."""

from __future__ import annotations

from datetime import datetime

import pytest

from cxrkit.io.pairing import Record, coverage, image_time, nearest, pair_images

NOON = datetime(2020, 3, 4, 12)


def at(hours: float) -> datetime:
    from datetime import timedelta

    return NOON + timedelta(hours=hours)


def test_image_time_is_noon_of_the_study_date():
    assert image_time("2020-03-04") == NOON
    assert image_time(None) is None and image_time("garbage") is None


def test_nearest_inside_the_window_wins():
    records = [Record("far", "p", at(-20)), Record("near", "p", at(3)), Record("out", "p", at(30))]
    assert nearest(NOON, records, 24) == ("near", 3.0)


def test_a_tie_prefers_the_record_taken_before_the_image_then_the_smaller_id():
    assert nearest(NOON, [Record("after", "p", at(5)), Record("before", "p", at(-5))], 24) == (
        "before",
        -5.0,
    )
    assert nearest(NOON, [Record("b", "p", at(-2)), Record("a", "p", at(-2))], 24) == ("a", -2.0)


def test_out_of_window_and_missing_times_give_no_partner():
    assert nearest(NOON, [Record("out", "p", at(24.5))], 24) == (None, None)
    assert nearest(NOON, [Record("untimed", "p", None)], 24) == (None, None)
    assert nearest(None, [Record("x", "p", at(0))], 24) == (None, None)


def test_pair_images_matches_each_modality_separately_and_keeps_unpaired_images():
    images = [
        {"image_id": "i1", "patient_id": "p1", "study_date": "2020-03-04", "split": "train"},
        {"image_id": "i2", "patient_id": "p2", "study_date": "2020-03-04", "split": "train"},
        {"image_id": "i3", "patient_id": "p3", "study_date": "2020-03-04", "split": "val"},
        {"image_id": "i4", "patient_id": "p1", "study_date": "2020-03-10", "split": "train"},
    ]
    ecgs = [
        Record("e1", "p1", at(-1)),
        Record("e1b", "p1", at(1)),  # same distance, after the image: loses the tie
        Record("e2", "p2", at(100)),  # outside the 48 h window
        Record("e3", "p3", at(2)),
        Record("e9", "p9", at(0)),  # another patient, same time: never paired
    ]
    labs = [Record("l1", "p1", at(-30)), Record("l2", "p2", at(6))]
    rows = pair_images(images, ecgs, labs, ecg_window_hours=48, lab_window_hours=36)
    got = {r["image_id"]: (r["ecg_id"], r["lab_id"]) for r in rows}
    assert got == {"i1": ("e1", "l1"), "i2": (None, "l2"), "i3": ("e3", None), "i4": (None, None)}
    assert rows[0]["ecg_delta_hours"] == pytest.approx(-1.0)
    assert rows[0]["lab_delta_hours"] == pytest.approx(-30.0)
    assert coverage(rows) == {
        "images": 4,
        "ecg_only": 1,
        "labs_only": 1,
        "both": 1,
        "none": 1,
        "with_ecg": 2,
        "with_labs": 2,
    }


def test_undated_images_get_no_partner_unless_asked_for_the_latest_record():
    records = [Record("old", "p", at(-50)), Record("new", "p", at(10)), Record("x", "p", None)]
    assert nearest(None, records, 24) == (None, None)
    assert nearest(None, records, 24, undated="latest") == ("new", None)
    assert nearest(None, [Record("b", "p", None), Record("a", "p", None)], 24, "latest") == (
        "a",
        None,
    )


# ------------------------------------------------------------------ id mistakes warned about
def _warnings(caplog, image_patients, ecg_patients, lab_patients) -> list[str]:
    from pathlib import Path

    from cxrkit.stages.pairs import _warn_about_shared_patients

    images = [{"image_id": f"i{p}", "patient_id": p} for p in image_patients]
    ecgs = [Record(f"e{p}", p, NOON) for p in ecg_patients]
    labs = [Record(f"l{p}", p, NOON) for p in lab_patients]
    caplog.clear()
    with caplog.at_level("WARNING", logger="cxrkit.stages.pairs"):
        _warn_about_shared_patients(images, ecgs, labs, Path("ds"), Path("phys"))
    return [r.getMessage() for r in caplog.records if r.name == "cxrkit.stages.pairs"]


def test_few_shared_patients_are_warned_about_with_counts_both_ways(caplog):
    images = [f"p{i}" for i in range(10)]
    # one of ten written as ingest keys it, nine as a bare number: 1 < 0.2 * 10
    ecg = ["p0"] + [str(i) for i in range(1, 10)]
    (warned,) = _warnings(caplog, images, ecg, [])
    assert "1 of the 10 image patients of ds have one in phys" in warned
    assert "1 of its 10 ECG patients have an image" in warned
    assert "p10000032" in warned and "--salt-file" in warned


def test_one_modality_keyed_wrongly_is_warned_about_though_the_other_pairs(caplog):
    images = [f"p{i}" for i in range(10)]
    (warned,) = _warnings(caplog, images, [str(i) for i in range(10)], images)
    assert "images and ECG records: 0 of the 10 image patients" in warned


def test_a_subset_on_either_side_or_a_usual_overlap_is_not_warned_about(caplog):
    images = [f"p{i}" for i in range(10)]
    assert _warnings(caplog, images, images[:2], [f"p{i}" for i in range(1000)]) == []
    # 2 of 10 image patients have an ECG, 2 of 10 ECG patients an image: the 20 % bound
    assert _warnings(caplog, images, images[:2] + [f"q{i}" for i in range(8)], images) == []
    (warned,) = _warnings(caplog, images, images[:1] + [f"q{i}" for i in range(9)], images)
    assert _warnings(caplog, images[:3], [], images) == []
