"""ingest-physio against the raw files: real ECG (DICOM and WFDB) and real serum lab values."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from physio_support import SERUM, dicom_ecg_signal, serum_long_table, write_wfdb

from cxrkit.io import bundled, ecg, labs
from cxrkit.io.deid import Pseudonymizer
from cxrkit.stages import physio

SALT = bytes(range(32))


@pytest.fixture
def salt_file(tmp_path):
    path = tmp_path / "salt.hex"
    path.write_text(SALT.hex())
    return path


def test_dicom_reader_matches_pydicom_unprocessed():
    raw = ecg.read_dicom_ecg(bundled.ecg_dicom())
    signal, rate, names = dicom_ecg_signal()
    assert raw.rate == 1000.0 and raw.signal.shape == (10000, 12)
    assert raw.leads == list(ecg.LEADS)  # "Lead I (Einthoven)" -> "I", ...
    assert names[0] == "Lead I (Einthoven)"
    # pydicom gives microvolts; the reader gives millivolts
    assert raw.signal[123, 4] == pytest.approx(signal[123, 4] / 1000.0)
    assert raw.patient == "642341" and raw.time.isoformat() == "2013-01-25T10:59:19"


def test_wfdb_reader_matches_wfdb_unprocessed(tmp_path):
    import wfdb

    record = write_wfdb(tmp_path, "rec1", patient="642341")
    raw = ecg.read_wfdb(record)
    direct = wfdb.rdrecord(str(record))
    assert raw.rate == direct.fs == 1000 and raw.signal.shape == (10000, 12)
    assert raw.leads == list(ecg.LEADS)
    assert raw.signal[500, 7] == pytest.approx(direct.p_signal[500, 7])
    assert raw.patient == "642341"


def test_preprocess_resamples_to_500hz_10s_with_masks(tmp_path):
    record = write_wfdb(tmp_path, "part", seconds=6.0, leads=(0, 1, 6))
    raw = ecg.read_wfdb(record)
    settings = ecg.ECGSettings(bandpass=False, normalise=False)
    signal, lead_mask, sample_mask = ecg.preprocess(raw, settings)
    assert signal.shape == (12, 5000) and signal.dtype == np.float32
    assert lead_mask.tolist() == [1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert sample_mask.sum() == 3000 and not signal[:, 3000:].any()
    assert not signal[2].any()  # missing lead III is a zero row
    # at 500 Hz sample k sits at 2k of the 1000 Hz source (slowly varying signal)
    source, _, _ = dicom_ecg_signal()
    assert signal[0, 1000] == pytest.approx(source[2000, 0] / 1000.0, abs=0.05)


def test_preprocess_normalises_each_present_lead():
    raw = ecg.read_dicom_ecg(bundled.ecg_dicom())
    signal, lead_mask, _ = ecg.preprocess(raw, ecg.ECGSettings(notch_hz=60.0))
    assert lead_mask.all()
    assert np.allclose(signal.mean(axis=1), 0.0, atol=1e-4)
    assert np.allclose(signal.std(axis=1), 1.0, atol=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"seconds": 2.0}, "too_short"),
        ({"flat": True}, "flat_line"),
        ({"units": "furlongs"}, "unknown_units"),
    ],
)
def test_bad_records_are_rejected_with_a_reason(tmp_path, kwargs, reason):
    record = write_wfdb(tmp_path, "bad", patient="p1", **kwargs)
    assert ecg.quality_problem(ecg.read_wfdb(record), ecg.ECGSettings())[0] == reason


def test_nan_samples_are_rejected():
    raw = ecg.read_dicom_ecg(bundled.ecg_dicom())
    raw.signal[10, 3] = np.nan
    assert ecg.quality_problem(raw, ecg.ECGSettings())[0] == "nan"


def test_percentile_scaling_is_fitted_on_training_rows_only():
    train = np.array([[1.0], [2.0], [3.0], [4.0], [5.0]])
    knots = labs.fit_percentiles(train, points=5)
    assert knots[:, 0].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    scaled, flags = labs.apply_percentiles(np.array([[3.0], [100.0], [np.nan], [1.5]]), knots)
    assert scaled[:, 0].tolist() == pytest.approx([0.5, 1.0, 0.0, 0.125])
    assert flags[:, 0].tolist() == [1.0, 1.0, 0.0, 1.0]


def test_ingest_physio_end_to_end(tmp_path, salt_file):
    import pandas as pd

    ecg_dir = tmp_path / "ecg"
    write_wfdb(ecg_dir, "good", patient="p1")
    write_wfdb(ecg_dir, "short", patient="p1", seconds=1.0)
    write_wfdb(ecg_dir, "flat", patient="p2", flat=True)
    table = serum_long_table(["p1", "p2", "p3"])
    table = table[~((table.patient_id == "p2") & (table.test == "s3"))]  # p2 lacks HDL
    labs_csv = tmp_path / "labs.csv"
    table.to_csv(labs_csv, index=False)
    cfg = physio.PhysioConfig(
        out=str(tmp_path / "physio"),
        ecg=[str(ecg_dir), str(bundled.ecg_dicom())],
        labs=str(labs_csv),
        salt_file=str(salt_file),
    )
    artifact = physio.run(cfg)
    stats = artifact.stats
    assert stats["ecgs"] == 2 and stats["rejects_by_reason"] == {"too_short": 1, "flat_line": 1}
    signals, rows = physio.load_ecgs(artifact)
    assert signals.shape == (2, 12, 5000)
    pseudo = Pseudonymizer(SALT)
    assert {r["patient_id"] for r in rows} == {
        pseudo.pseudonym("patient", "p1"),
        pseudo.pseudonym("patient", "642341"),
    }
    # times move by the patient's offset, the images' rule
    shift = pseudo.date_offset_days("p1")
    good = next(r for r in rows if r["patient_id"] == pseudo.pseudonym("patient", "p1"))
    expected = pd.Timestamp("2013-01-25 10:59:19") + pd.Timedelta(days=shift)
    assert good["time"] == expected.isoformat()
    panels = physio.load_labs(artifact)
    assert len(panels) == 3 and len(panels[0]["values"]) == len(SERUM)
    p2 = next(p for p in panels if p["patient_id"] == pseudo.pseudonym("patient", "p2"))
    assert p2["flags"] == [1.0, 1.0, 0.0, 1.0, 1.0, 1.0] and p2["values"][2] == 0.0
    rejects = pq.read_table(artifact.path / physio.REJECTS).to_pylist()
    assert all("short" not in r["path"] for r in rejects)  # paths are salted tokens
    # same command again: a no-op with the same id
    assert physio.run(cfg).id == artifact.id


def test_a_wide_lab_csv_gives_the_same_panels_as_the_long_table(tmp_path):
    long = serum_long_table(["p1", "p2"])
    wide = long.pivot_table(index=["patient_id", "time"], columns="test", values="value")
    wide = wide.reset_index()
    from_long, units = labs.to_wide(long, "long.csv")
    from_wide, _ = labs.to_wide(wide, "wide.csv")
    assert units["s1"] == "mg/dL"
    assert list(from_long.columns) == list(from_wide.columns)
    assert np.allclose(from_long[list(SERUM)].to_numpy(), from_wide[list(SERUM)].to_numpy())
    # the raw value survives the pivot: patient p1's total cholesterol (diabetes row 0)
    from sklearn.datasets import load_diabetes

    assert from_long.loc[0, "s1"] == load_diabetes(scaled=False, as_frame=True).frame.loc[0, "s1"]


def test_a_test_in_two_units_is_an_input_error():
    from cxrkit.errors import InputError

    table = serum_long_table(["p1", "p2"])
    table.loc[0, "unit"] = "mmol/L"
    with pytest.raises(InputError, match="several units"):
        labs.to_wide(table, "labs.csv")
