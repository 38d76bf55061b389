"""Pair each image with the nearest ECG and lab panel of the same patient inside a time window.

The rule, per image (patient pseudonym, study time) and per modality:

- candidates are the patient's records whose time lies within
  ``[-window_hours, +window_hours]`` of the image (``delta = record - image``);
- the nearest by ``|delta|`` wins; a tie prefers the record taken BEFORE the
  image (it was available when the image was read), then the smaller id;
- no candidate (or a record without a time) = no partner; the image stays in
  the table with empty partner columns (it still trains the MAE term);
- an image without a date (PNG/JPEG sources, datasets that publish none) gets no
  partner, unless ``undated = "latest"``: then the patient's latest record
  (records without a time last, then by id), with no time delta.

Image times: the dataset stores only the (shifted) study date, so an image's
time is that date at 12:00, the middle of the day (error at most 12 h).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

IMAGE_HOUR = 12


@dataclass(frozen=True)
class Record:
    """A partner candidate: its id, patient pseudonym and time (None = unknown)."""

    id: str
    patient_id: str
    time: datetime | None


def image_time(study_date: str | None) -> datetime | None:
    """The time used for an image: its study date (ISO) at 12:00; None when absent."""
    if not study_date:
        return None
    try:
        day = datetime.fromisoformat(str(study_date)[:10])
    except ValueError:
        return None
    return day.replace(hour=IMAGE_HOUR)


def parse_time(value: str | None) -> datetime | None:
    """An ISO time string as a naive datetime, or None."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value)).replace(tzinfo=None)
    except ValueError:
        return None


def nearest(
    when: datetime | None, candidates: list[Record], window_hours: float, undated: str = "skip"
) -> tuple[str | None, float | None]:
    """``(id, delta_hours)`` of the partner chosen by the module's rule, or ``(None, None)``."""
    if when is None:
        if undated != "latest" or not candidates:
            return None, None
        ordered = sorted(candidates, key=lambda r: r.id)
        timed = [r for r in ordered if r.time is not None]
        pick = max(timed, key=lambda r: r.time) if timed else ordered[0]  # first max: smaller id
        return pick.id, None
    best: tuple[float, int, str, float] | None = None
    for record in candidates:
        if record.time is None:
            continue
        delta = (record.time - when).total_seconds() / 3600.0
        if abs(delta) > window_hours:
            continue
        key = (abs(delta), 0 if delta <= 0 else 1, record.id, delta)
        if best is None or key < best:
            best = key
    return (best[2], best[3]) if best else (None, None)


def pair_images(
    images: list[dict[str, Any]],
    ecgs: list[Record],
    labs: list[Record],
    ecg_window_hours: float,
    lab_window_hours: float,
    undated: str = "skip",
) -> list[dict[str, Any]]:
    """One row per image: ``image_id, patient_id, split, ecg_id, ecg_delta_hours, lab_id,
    lab_delta_hours`` (partner columns None when there is none).

    Takes image dicts with ``image_id, patient_id, study_date, split`` and the
    ECG and lab records; ``undated`` is the rule for images without a date.
    """
    by_patient_ecg: dict[str, list[Record]] = defaultdict(list)
    by_patient_lab: dict[str, list[Record]] = defaultdict(list)
    for record in ecgs:
        by_patient_ecg[record.patient_id].append(record)
    for record in labs:
        by_patient_lab[record.patient_id].append(record)
    rows = []
    for image in images:
        when = image_time(image.get("study_date"))
        patient = str(image.get("patient_id"))
        ecg_id, ecg_delta = nearest(
            when, by_patient_ecg.get(patient, []), ecg_window_hours, undated
        )
        lab_id, lab_delta = nearest(
            when, by_patient_lab.get(patient, []), lab_window_hours, undated
        )
        rows.append(
            {
                "image_id": image["image_id"],
                "patient_id": patient,
                "split": image.get("split"),
                "ecg_id": ecg_id,
                "ecg_delta_hours": ecg_delta,
                "lab_id": lab_id,
                "lab_delta_hours": lab_delta,
            }
        )
    return rows


def coverage(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Counts of images with an ECG only, labs only, both, none, and in all."""
    counts = {"images": len(rows), "ecg_only": 0, "labs_only": 0, "both": 0, "none": 0}
    for row in rows:
        has_ecg, has_lab = row["ecg_id"] is not None, row["lab_id"] is not None
        key = "both" if has_ecg and has_lab else "ecg_only" if has_ecg else "labs_only"
        counts[key if has_ecg or has_lab else "none"] += 1
    counts["with_ecg"] = counts["ecg_only"] + counts["both"]
    counts["with_labs"] = counts["labs_only"] + counts["both"]
    return counts
