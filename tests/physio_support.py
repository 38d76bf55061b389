"""Real physiology files for tests: pydicom's 12-lead ECG, WFDB records written from it, and the
six serum columns of scikit-learn's diabetes data as a long lab table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxrkit.io import bundled

SERUM = ("s1", "s2", "s3", "s4", "s5", "s6")  # tc, ldl, hdl, tch, ltg, glu


def dicom_ecg_signal() -> tuple[np.ndarray, float, list[str]]:
    """(signal (samples, 12) in uV as pydicom returns it, rate, channel meanings)."""
    import pydicom

    ds = pydicom.dcmread(bundled.ecg_dicom())
    group = ds.WaveformSequence[0]
    names = [c.ChannelSourceSequence[0].CodeMeaning for c in group.ChannelDefinitionSequence]
    return ds.waveform_array(0), float(group.SamplingFrequency), names


def write_wfdb(
    directory: Path,
    name: str,
    seconds: float | None = None,
    leads: tuple[int, ...] | None = None,
    units: str = "mV",
    patient: str | None = None,
    flat: bool = False,
    base_date: str = "2013-01-25 10:59:19",
) -> Path:
    """Write (part of) the real DICOM ECG as a WFDB record with wfdb.wrsamp; returns record path."""
    import datetime

    import wfdb

    signal, rate, names = dicom_ecg_signal()
    signal = signal / 1000.0  # uV -> mV
    if seconds is not None:
        signal = signal[: int(seconds * rate)]
    leads = leads if leads is not None else tuple(range(12))
    signal = signal[:, leads]
    if flat:
        signal = np.zeros_like(signal)
    labels = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    stamp = datetime.datetime.fromisoformat(base_date)
    directory.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(
        name,
        fs=int(rate),
        units=[units] * len(leads),
        sig_name=[labels[i] for i in leads],
        p_signal=signal,
        fmt=["16"] * len(leads),
        adc_gain=[1000.0] * len(leads),
        baseline=[0] * len(leads),
        comments=[f"patient_id: {patient}"] if patient else [],
        base_date=stamp.date(),
        base_time=stamp.time(),
        write_dir=str(directory),
    )
    return directory / name


def serum_long_table(patients: list[str], start: str = "2013-01-25 08:00") -> pd.DataFrame:
    """Long table ``patient_id, time, test, value, unit`` from the first rows of the diabetes data."""
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(scaled=False, as_frame=True).frame
    rows = []
    for index, patient in enumerate(patients):
        for test in SERUM:
            rows.append(
                {
                    "patient_id": patient,
                    "time": start,
                    "test": test,
                    "value": float(frame.loc[index, test]),
                    "unit": "mg/dL" if test != "s5" else "log",
                }
            )
    return pd.DataFrame(rows)
