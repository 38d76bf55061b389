"""Physiology for the demo: real ECG and real serum values, assigned to demo patients.

No public data set pairs these chest X-rays with ECGs or labs, so the demo makes
SYNTHETIC pairs, and says so wherever results are shown:

- ECG: pydicom's real 12-lead DICOM ECG (10 s at 1000 Hz). Patient k gets a WFDB
  record (written with ``wfdb.wrsamp``) of that signal rotated in time by k
  seconds; every third patient loses the precordial leads V4-V6 (a lead mask);
  one in five patients gets no ECG at all;
- labs: the six blood-serum columns of scikit-learn's diabetes data set
  (real measurements of 442 people), row k for patient k, as a long table;
  one in four patients gets no panel, and some panels lack a test.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

SERUM_TESTS = {  # scikit-learn's diabetes columns s1..s6 (its documentation)
    "s1": ("total_cholesterol", "mg/dL"),
    "s2": ("ldl", "mg/dL"),
    "s3": ("hdl", "mg/dL"),
    "s4": ("chol_hdl_ratio", "ratio"),
    "s5": ("log_triglycerides", "log mg/dL"),
    "s6": ("glucose", "mg/dL"),
}
LEAD_NAMES = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def build_demo_physio(directory: Path, patients: list[str]) -> dict[str, Path]:
    """Write ``ecg/*.hea|dat``, ``ecg_map.csv`` and ``labs.csv`` for ``patients`` (raw ids).

    Returns {"ecg": dir, "ecg_map": csv, "labs": csv}. Deterministic.
    Raises InputError (cxrkit.io.bundled) when pydicom's test files are missing.
    """
    import pydicom
    import wfdb
    from sklearn.datasets import load_diabetes

    from cxrkit.io import bundled

    directory = Path(directory).resolve()
    ecg_dir = directory / "ecg"
    ecg_dir.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(bundled.ecg_dicom())
    rate = int(ds.WaveformSequence[0].SamplingFrequency)
    signal_mv = ds.waveform_array(0) / 1000.0  # uV -> mV
    serum = load_diabetes(scaled=False, as_frame=True).frame
    map_rows, lab_rows = [], []
    for k, patient in enumerate(patients):
        when = f"2020-01-{1 + k % 28:02d} 09:00:00"
        if k % 5 != 4:
            leads = list(range(9)) if k % 3 == 2 else list(range(12))
            shifted = np.roll(signal_mv, -k * rate, axis=0)[:, leads]
            name = f"demo-ecg-{k:02d}"
            wfdb.wrsamp(
                name,
                fs=rate,
                units=["mV"] * len(leads),
                sig_name=[LEAD_NAMES[i] for i in leads],
                p_signal=shifted,
                fmt=["16"] * len(leads),
                adc_gain=[1000.0] * len(leads),
                baseline=[0] * len(leads),
                write_dir=str(ecg_dir),
            )
            map_rows.append(
                {"path": str(ecg_dir / f"{name}.hea"), "patient_id": patient, "time": when}
            )
        if k % 4 != 3:
            for j, (column, (test, unit)) in enumerate(SERUM_TESTS.items()):
                if (k + j) % 7 == 6:  # a test not done
                    continue
                lab_rows.append(
                    {
                        "patient_id": patient,
                        "time": when,
                        "test": test,
                        "value": float(serum.loc[k, column]),
                        "unit": unit,
                    }
                )
    ecg_map = directory / "ecg_map.csv"
    _write_csv(ecg_map, map_rows)
    labs = directory / "labs.csv"
    _write_csv(labs, lab_rows)
    return {"ecg": ecg_dir, "ecg_map": ecg_map, "labs": labs}


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
