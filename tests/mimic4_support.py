"""MIMIC-IV tables and MIMIC-IV-ECG records written as they ship, with synthetic rows.

MIMIC itself cannot be had offline. The files here keep MIMIC's exact column sets,
folder layout and conventions (``subject_id`` as a bare number, shifted 21xx dates,
``<0.01`` text results with an empty ``valuenum``, one test name shared by several
fluids), with values that are real where a real source exists (blood-serum glucose and
cholesterols of scikit-learn's diabetes data, pydicom's real 12-lead ECG) and plausible
made-up numbers elsewhere. For plumbing tests, not physiology.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
from layouts_support import MIMIC_FILES
from physio_support import dicom_ecg_signal

# hosp/d_labitems (itemid, label, fluid, category), real MIMIC-IV dictionary rows.
D_LABITEMS = (
    (50912, "Creatinine", "Blood", "Chemistry"),
    (50931, "Glucose", "Blood", "Chemistry"),
    (51478, "Glucose", "Urine", "Hematology"),
    (50907, "Cholesterol, Total", "Blood", "Chemistry"),
    (50904, "Cholesterol, HDL", "Blood", "Chemistry"),
    (50971, "Potassium", "Blood", "Chemistry"),
    (50983, "Sodium", "Blood", "Chemistry"),
    (51003, "Troponin T", "Blood", "Chemistry"),
    (51222, "Hemoglobin", "Blood", "Hematology"),
)
UNITS = {
    50912: "mg/dL", 50931: "mg/dL", 51478: "mg/dL", 50907: "mg/dL", 50904: "mg/dL",
    50971: "mEq/L", 50983: "mEq/L", 51003: "ng/mL", 51222: "g/dL",
}  # fmt: skip
LABEVENTS_HEADER = (
    "labevent_id", "subject_id", "hadm_id", "specimen_id", "itemid", "order_provider_id",
    "charttime", "storetime", "value", "valuenum", "valueuom", "ref_range_lower",
    "ref_range_upper", "flag", "priority", "comments",
)  # fmt: skip
RECORD_LIST_HEADER = ("subject_id", "study_id", "file_name", "ecg_time", "path")
# MIMIC-IV-ECG stores its leads in this order (aVF before aVL).
MIMIC_ECG_LEADS = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")
_DICOM_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

# StudyDate of the MIMIC_FILES studies (MIMIC-CXR-JPG metadata; shifted 21xx dates).
STUDY_DATES = {"s50414267": "21800506", "s53189527": "21800626", "s57375967": "21321015"}
# (subject_id, hadm_id, charttime) of each blood draw; 10002428 has no chest X-ray.
DRAWS = (
    (10000032, 22595853, "2180-05-06 07:30:00"),
    (10000032, 22841357, "2180-06-26 09:15:00"),
    (10000764, 27897940, "2132-10-15 06:00:00"),
    (10002428, 28662225, "2156-04-12 14:51:00"),
)
# (subject_id, study_id, ecg_time) of each ECG; 44458630 is a month after any image.
ECGS = (
    (10000032, 40689238, "2180-05-06 10:02:00"),
    (10000032, 44458630, "2180-07-23 08:44:00"),
    (10000764, 41327391, "2132-10-14 23:00:00"),
)


def _serum(index: int) -> dict[str, float]:
    """Real blood-serum values (mg/dL) of the diabetes data's patient ``index``."""
    from sklearn.datasets import load_diabetes

    row = load_diabetes(scaled=False, as_frame=True).frame.iloc[index]
    return {"glucose": float(row["s6"]), "total": float(row["s1"]), "hdl": float(row["s3"])}


def draw_values(draw: int) -> dict[int, str]:
    """``{itemid: value cell}`` measured in blood draw ``draw`` (text as labevents writes it)."""
    serum = _serum(draw)
    values = {
        50912: f"{0.7 + 0.1 * draw:.1f}",
        50931: f"{serum['glucose']:.0f}",
        50907: f"{serum['total']:.0f}",
        50904: f"{serum['hdl']:.0f}",
        50971: f"{3.9 + 0.2 * draw:.1f}",
        50983: f"{138 + draw:.0f}",
        51003: "<0.01" if draw % 2 == 0 else "0.04",  # below the assay: text, no valuenum
        51222: f"{13.2 - 0.4 * draw:.1f}",
    }
    if draw == 0:
        values[51478] = "NEG"  # urine glucose: a text result
    return values


def labevents_rows(draws=DRAWS) -> list[dict[str, str]]:
    """labevents rows for ``draws``: every column MIMIC-IV ships, ``valuenum`` empty where
    the ``value`` is text (``<0.01``, ``NEG``)."""
    rows = []
    for draw, (subject, hadm, charttime) in enumerate(draws):
        for itemid, value in draw_values(draw).items():
            try:
                number = str(float(value))
            except ValueError:
                number = ""
            rows.append(
                {
                    "labevent_id": str(len(rows) + 1),
                    "subject_id": str(subject),
                    "hadm_id": str(hadm),
                    "specimen_id": str(70000000 + draw),
                    "itemid": str(itemid),
                    "order_provider_id": "",
                    "charttime": charttime,
                    "storetime": charttime[:11] + "11:02:00",
                    "value": value,
                    "valuenum": number,
                    "valueuom": UNITS[itemid] if number else "",
                    "ref_range_lower": "",
                    "ref_range_upper": "",
                    "flag": "",
                    "priority": "ROUTINE",
                    "comments": "___" if not number else "",
                }
            )
    return rows


def write_csv(path: Path, header, rows: list[dict[str, str]]) -> Path:
    """Write rows as CSV, gzipped when the name ends in ``.gz`` (as MIMIC ships them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(header))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_hosp(folder: Path, gz: bool = True, rows=None, items=D_LABITEMS) -> Path:
    """``hosp/labevents.csv(.gz)`` and ``hosp/d_labitems.csv(.gz)``; returns labevents."""
    suffix = ".csv.gz" if gz else ".csv"
    item_rows = [
        {"itemid": str(i), "label": label, "fluid": fluid, "category": category}
        for i, label, fluid, category in items
    ]
    write_csv(folder / f"d_labitems{suffix}", ("itemid", "label", "fluid", "category"), item_rows)
    rows = labevents_rows() if rows is None else rows
    return write_csv(folder / f"labevents{suffix}", LABEVENTS_HEADER, rows)


def write_mimic_ecg(root: Path, ecgs=ECGS) -> Path:
    """A MIMIC-IV-ECG tree: ``files/p1000/pSUBJECT/sSTUDY/STUDY.hea/.dat`` (the real DICOM
    ECG at 500 Hz, 10 s, MIMIC's lead order, 16-bit at 200 units/mV) and ``record_list.csv``.
    Returns the record list."""
    import datetime

    import wfdb

    signal, rate, _ = dicom_ecg_signal()
    step = int(round(rate / 500))
    mv = (signal[::step][:5000] / 1000.0).astype(np.float64)  # uV at 1000 Hz -> mV at 500 Hz
    order = [_DICOM_LEADS.index(name) for name in MIMIC_ECG_LEADS]
    rows = []
    for subject, study, ecg_time in ecgs:
        relative = Path("files") / f"p{str(subject)[:4]}" / f"p{subject}" / f"s{study}"
        folder = root / relative
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.fromisoformat(ecg_time)
        wfdb.wrsamp(
            str(study),
            fs=500,
            units=["mV"] * 12,
            sig_name=list(MIMIC_ECG_LEADS),
            p_signal=mv[:, order],
            fmt=["16"] * 12,
            adc_gain=[200.0] * 12,
            baseline=[0] * 12,
            base_date=stamp.date(),
            base_time=stamp.time(),
            write_dir=str(folder),
        )
        rows.append(
            {
                "subject_id": str(subject),
                "study_id": str(study),
                "file_name": str(study),
                "ecg_time": ecg_time,
                "path": str(relative / str(study)),
            }
        )
    return write_csv(root / "record_list.csv", RECORD_LIST_HEADER, rows)


def write_cxr_metadata(root: Path) -> Path:
    """``mimic-cxr-2.0.0-metadata.csv`` for :data:`MIMIC_FILES` with MIMIC-CXR-JPG's columns,
    StudyDate included (JPEGs carry no date of their own)."""
    header = (
        "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
        "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime",
    )  # fmt: skip
    rows = [
        {
            "dicom_id": dicom_id,
            "subject_id": patient[1:],
            "study_id": study[1:],
            "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
            "ViewPosition": "PA" if index % 2 == 0 else "LATERAL",
            "Rows": "3056",
            "Columns": "2544",
            "StudyDate": STUDY_DATES[study],
            "StudyTime": "134510.0",
        }  # fmt: skip
        for index, (patient, study, dicom_id) in enumerate(MIMIC_FILES)
    ]
    return write_csv(root / "mimic-cxr-2.0.0-metadata.csv", header, rows)
