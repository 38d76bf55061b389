"""Hostile inputs to `cxrkit ingest-physio` and `cxrkit distill`: every ECG ends as a row or a
reject with its reason (never a traceback, a hang or an allocation its header asks for), lab
tables that cannot be trusted are input errors, no raw input path or raw value reaches an
artifact file unless asked for, runs into one OUT never leave a half-written artifact, and a
tampered physio artifact is refused.

The base of every hostile record is the real 12-lead ECG pydicom ships (written as WFDB).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
import pytest
from hold_support import held_call_env
from physio_support import serum_long_table, write_wfdb
from trust_support import cli, cli_process

from cxrkit.artifacts import verify
from cxrkit.errors import Reject
from cxrkit.io import bundled, ecg
from cxrkit.io.deid import Pseudonymizer

SALT = b"\x00" * 32  # the conftest salt file's


def _rejects(out: Path) -> list[dict]:
    return pq.read_table(out / "rejects.parquet").to_pylist()


def _reason(path: Path) -> str:
    with pytest.raises(Reject) as caught:
        ecg.read_ecg(path, max_seconds=10.0)
    return caught.value.reason


def _edit_header(record: Path, old: str, new: str) -> None:
    header = record.with_suffix(".hea")
    text = header.read_text()
    assert old in text
    header.write_text(text.replace(old, new, 1))


# ---------------------------------------------------------------- lying and broken WFDB records
def _truncate(record: Path) -> None:
    dat = record.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:1000])


def _fifo(record: Path) -> None:
    record.with_suffix(".dat").unlink()
    os.mkfifo(record.with_suffix(".dat"))


def _loop(record: Path) -> None:
    record.with_suffix(".dat").unlink()
    record.with_suffix(".dat").symlink_to(record.with_suffix(".dat"))


HOSTILE_WFDB = {
    "truncated .dat": (_truncate, "truncated"),
    "empty .dat": (lambda r: r.with_suffix(".dat").write_bytes(b""), "truncated"),
    "empty header": (lambda r: r.with_suffix(".hea").write_bytes(b""), "bad_header"),
    "10^6 channels": (lambda r: _edit_header(r, "rec 12 ", "rec 1000000 "), "too_many_channels"),
    "0 channels": (lambda r: _edit_header(r, "rec 12 ", "rec 0 "), "bad_header"),
    "fmt 999": (lambda r: _edit_header(r, "rec.dat 16 ", "rec.dat 999 "), "bad_format"),
    "0 Hz": (lambda r: _edit_header(r, "rec 12 1000 ", "rec 12 0 "), "bad_rate"),
    # wfdb itself reads an unparsable rate as its default of 250 Hz
    "-1000 Hz": (lambda r: _edit_header(r, "rec 12 1000 ", "rec 12 -1000 "), "bad_rate"),
    "1e-6 Hz": (lambda r: _edit_header(r, "rec 12 1000 ", "rec 12 0.000001 "), "bad_rate"),
    "signal file ../../etc/passwd": (
        lambda r: _edit_header(r, "rec.dat", "../../../../etc/passwd"),
        "bad_header",
    ),
    "signal file /etc/passwd": (lambda r: _edit_header(r, "rec.dat", "/etc/passwd"), "bad_header"),
    "signal file a FIFO": (_fifo, "not_a_file"),
    "signal file a link loop": (_loop, "symlink_loop"),
}


@pytest.mark.parametrize("case", HOSTILE_WFDB)
def test_a_hostile_wfdb_record_is_a_reject_with_its_reason(tmp_path, case):
    record = write_wfdb(tmp_path / "in", "rec", patient="p1")
    spoil, reason = HOSTILE_WFDB[case]
    spoil(record)
    assert _reason(record.with_suffix(".hea")) == reason


def test_a_header_claiming_10_9_samples_is_rejected_before_any_allocation(tmp_path):
    record = write_wfdb(tmp_path / "in", "rec", patient="p1")
    _edit_header(record, " 10000 ", " 1000000000 ")  # 10^9 x 12 float64 = 96 GB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert _reason(record) == "truncated"
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 200


def test_a_signal_file_named_outside_the_record_folder_is_refused_even_if_wfdb_parses_it(
    tmp_path,
):
    import wfdb

    record = write_wfdb(tmp_path / "in", "rec", patient="p1")
    header = wfdb.rdheader(str(record))
    for name in ("../../etc/passwd", "/etc/passwd", ".."):
        header.file_name = [name] * header.n_sig
        with pytest.raises(Reject) as caught:
            ecg._check_wfdb_files(header, record.parent)
        assert caught.value.reason == "bad_signal_file"


def test_only_the_kept_window_of_a_long_record_is_read(tmp_path):
    import numpy as np
    import wfdb

    record = write_wfdb(tmp_path / "in", "rec", patient="p1")
    long = wfdb.rdrecord(str(record))
    wfdb.wrsamp("long", fs=1000, units=long.units, sig_name=long.sig_name,
                p_signal=np.tile(long.p_signal, (6, 1)), fmt=long.fmt, adc_gain=long.adc_gain,
                baseline=long.baseline, write_dir=str(record.parent))  # fmt: skip
    raw = ecg.read_wfdb(record.parent / "long", max_seconds=10.0)
    assert raw.signal.shape == (12_000, 12)  # 10 s + the 2 s margin at 1000 Hz
    assert raw.total_samples == 60_000 and raw.seconds == 60.0


# ---------------------------------------------------------------- broken DICOM waveforms
def _set(name: str, value):
    return lambda ds: setattr(ds.WaveformSequence[0], name, value)


HOSTILE_DICOM = {
    "10^9 samples": (_set("NumberOfWaveformSamples", 10**9), "unreadable"),
    "60000 channels": (_set("NumberOfWaveformChannels", 60000), "too_many_channels"),
    "7 bits allocated": (_set("WaveformBitsAllocated", 7), "unreadable"),
    "0 Hz": (_set("SamplingFrequency", 0), "bad_rate"),
    "no channel source": (
        lambda ds: delattr(
            ds.WaveformSequence[0].ChannelDefinitionSequence[0], "ChannelSourceSequence"
        ),  # fmt: skip
        "unreadable",
    ),
    "no waveform data": (lambda ds: delattr(ds.WaveformSequence[0], "WaveformData"), "unreadable"),
    "empty WaveformSequence": (lambda ds: setattr(ds, "WaveformSequence", []), "no_waveform"),
}


@pytest.mark.parametrize("case", HOSTILE_DICOM)
def test_a_broken_dicom_waveform_is_a_reject_not_a_traceback(tmp_path, case):
    ds = pydicom.dcmread(bundled.ecg_dicom())
    spoil, reason = HOSTILE_DICOM[case]
    spoil(ds)
    ds.save_as(tmp_path / "ecg.dcm")
    assert _reason(tmp_path / "ecg.dcm") == reason


def test_every_hostile_ecg_in_one_run_is_a_reject_and_the_genuine_one_is_kept(tmp_path, salt_file):
    folder = tmp_path / "in"
    for index, case in enumerate(HOSTILE_WFDB):
        spoil, _ = HOSTILE_WFDB[case]
        spoil(write_wfdb(folder / f"r{index}", "rec", patient="p1"))
    write_wfdb(folder / "good", "rec", patient="p1")
    ds = pydicom.dcmread(bundled.ecg_dicom())
    ds.AcquisitionDateTime = "00010101000000"  # shifted by the patient's offset: year 0
    ds.save_as(folder / "year1.dcm")
    out = tmp_path / "physio"
    result = cli("ingest-physio", "--ecg", folder, "--out", out, "--salt-file", salt_file)
    assert result.exit_code == 0, result.output
    reasons = sorted(r["reason"] for r in _rejects(out))
    expected = sorted([reason for _, reason in HOSTILE_WFDB.values()] + ["bad_time"])
    assert reasons == expected
    assert json.loads((out / "manifest.json").read_text())["stats"]["ecgs"] == 1


# ---------------------------------------------------------------- lab tables
def test_lab_tables_with_duplicated_columns_or_infinities_are_input_errors(tmp_path, salt_file):
    good = serum_long_table(["p1", "p2"])
    duplicated = tmp_path / "dup.csv"
    text = good.to_csv(index=False).splitlines()
    duplicated.write_text("\n".join([text[0] + ",value"] + [line + ",1" for line in text[1:]]))
    infinite = tmp_path / "inf.csv"
    good.assign(value=good["value"].astype(object).where(good.index > 0, "-inf")).to_csv(
        infinite, index=False
    )
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1" + bytes(100) + b"PAR1")
    expected = {
        duplicated: "columns ['value'] appear more than once",
        infinite: "non-numeric or infinite lab values [-inf]",  # shown, not read as markup
        junk: "cannot read the table (OSError",
    }
    for table, message in expected.items():
        result = cli("ingest-physio", "--labs", table, "--out", tmp_path / "o",
                     "--salt-file", salt_file)  # fmt: skip
        assert result.exit_code == 3, result.output
        lines = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and str(table) in lines[0] and message in lines[0], result.output


def test_an_error_naming_a_file_with_brackets_prints_the_name_as_text(tmp_path, salt_file):
    missing = tmp_path / "scan[/x]" / "none.hea"  # rich read "[/x]" as a closing tag
    result = cli(
        "ingest-physio", "--ecg", missing, "--out", tmp_path / "o", "--salt-file", salt_file
    )
    assert result.exit_code == 3, result.output
    assert f"error: {missing}: no such ECG file" in result.output


def test_absurd_and_unreadable_lab_times_are_rejects_that_do_not_quote_them(tmp_path, salt_file):
    table = serum_long_table(["p1", "p2", "p3", "p4"])
    table.loc[table.patient_id == "p1", "time"] = "0001-01-01"
    table.loc[table.patient_id == "p2", "time"] = "9999-12-31 23:59"
    table.loc[table.patient_id == "p3", "time"] = "SMITH JOHN 617-555-0123"
    labs = tmp_path / "labs.csv"
    table.to_csv(labs, index=False)
    out = tmp_path / "physio"
    result = cli("ingest-physio", "--labs", labs, "--out", out, "--salt-file", salt_file)
    assert result.exit_code == 0, result.output
    rejects = _rejects(out)
    assert sorted(r["reason"] for r in rejects) == ["bad_time", "bad_time", "no_time"]
    assert not any("SMITH" in r["detail"] or "9999-12" in r["detail"] for r in rejects)
    assert len(pq.read_table(out / "labs.parquet")) == 1


def test_a_lab_time_of_now_or_today_is_no_time_not_the_clock_of_the_run(tmp_path, salt_file):
    """pandas reads "now"/"today" as the current time: the panel's time and id would
    change with each run of the same inputs."""
    table = serum_long_table(["p1", "p2", "p3"])
    table.loc[table.patient_id == "p1", "time"] = "now"
    table.loc[table.patient_id == "p2", "time"] = "today"
    labs = tmp_path / "labs.csv"
    table.to_csv(labs, index=False)
    out = tmp_path / "physio"
    result = cli("ingest-physio", "--labs", labs, "--out", out, "--salt-file", salt_file)
    assert result.exit_code == 0, result.output
    assert sorted(r["reason"] for r in _rejects(out)) == ["no_time", "no_time"]
    assert len(pq.read_table(out / "labs.parquet")) == 1


def test_lab_times_in_mixed_time_zones_keep_their_wall_clock_without_a_pandas_warning(
    tmp_path, salt_file
):
    import warnings

    table = serum_long_table(["p1", "p2"])
    table.loc[table.patient_id == "p1", "time"] = "2013-01-25T07:30:00+02:00"
    table.loc[table.patient_id == "p2", "time"] = "2013-01-25T07:30:00-05:00"
    labs = tmp_path / "labs.csv"
    table.to_csv(labs, index=False)
    out = tmp_path / "physio"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = cli("ingest-physio", "--labs", labs, "--out", out, "--salt-file", salt_file)
    assert result.exit_code == 0, result.output
    assert not [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    times = pq.read_table(out / "labs.parquet").column("time").to_pylist()
    assert len(times) == 2 and all(t.endswith("T07:30:00") for t in times)


def test_an_ecg_map_time_of_now_is_no_time():
    from cxrkit.io.physio_cells import parse_time

    assert parse_time("now") is None and parse_time("today") is None
    assert parse_time("2180-05-06 07:30") is not None


def test_an_empty_patient_cell_in_the_ecg_map_is_no_patient_not_a_patient_named_nan(
    tmp_path, salt_file
):
    record = write_wfdb(tmp_path / "in", "rec")  # no patient in the header
    ecg_map = tmp_path / "map.csv"
    pd.DataFrame({"path": [str(record.with_suffix(".hea"))], "patient_id": [None]}).to_csv(
        ecg_map, index=False
    )
    out = tmp_path / "physio"
    result = cli("ingest-physio", "--ecg", record.with_suffix(".hea"), "--ecg-map", ecg_map,
                 "--out", out, "--salt-file", salt_file)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [r["reason"] for r in _rejects(out)] == ["no_patient"]


def test_lab_rows_without_a_patient_or_a_time_are_rejects_not_dropped_or_merged(
    tmp_path, salt_file
):
    table = serum_long_table(["p1", "p2", "p3"])
    table["patient_id"] = table["patient_id"].astype(object)
    table.loc[table.patient_id == "p1", "patient_id"] = None  # read back as NaN, not "nan"
    table.loc[table.patient_id == "p2", "time"] = None  # pivot_table dropped these rows
    labs = tmp_path / "labs.csv"
    table.to_csv(labs, index=False)
    out = tmp_path / "physio"
    result = cli("ingest-physio", "--labs", labs, "--out", out, "--salt-file", salt_file)
    assert result.exit_code == 0, result.output
    assert sorted(r["reason"] for r in _rejects(out)) == ["no_patient", "no_time"]
    assert len(pq.read_table(out / "labs.parquet")) == 1


def test_an_ecg_listed_twice_in_the_ecg_map_is_a_duplicate_mapping_row_reject(tmp_path, salt_file):
    record = write_wfdb(tmp_path / "in", "rec")
    ecg_map = tmp_path / "map.csv"
    header = str(record.with_suffix(".hea"))
    pd.DataFrame({"path": [header, header], "patient_id": ["p1", "p2"]}).to_csv(
        ecg_map, index=False
    )
    out = tmp_path / "physio"
    result = cli("ingest-physio", "--ecg", header, "--ecg-map", ecg_map, "--out", out,
                 "--salt-file", salt_file)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [(r["reason"], r["detail"]) for r in _rejects(out)] == [
        ("duplicate_mapping_row", "ECG map lines 2 and 3 name this file")
    ]


def test_a_dicom_larger_than_an_ecg_can_be_is_rejected_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(ecg, "MAX_DICOM_BYTES", 1000)
    shutil.copyfile(bundled.ecg_dicom(), tmp_path / "ecg.dcm")
    assert _reason(tmp_path / "ecg.dcm") == "too_large"


# ---------------------------------------------------------------- PHI
def test_no_raw_input_path_or_patient_id_in_any_physio_file_unless_keep_paths(tmp_path, salt_file):
    phi = tmp_path / "SMITH_JOHN_MRN12345678"
    write_wfdb(phi, "good", patient="SMITH_JOHN_MRN12345678")
    _truncate(write_wfdb(phi, "broken", patient="SMITH_JOHN_MRN12345678"))
    table = serum_long_table(["SMITH_JOHN_MRN12345678", "p2"])
    table.loc[table.patient_id == "p2", "time"] = "called SMITH_JOHN at home"
    table.to_csv(phi / "labs.csv", index=False)
    args = ["ingest-physio", "--ecg", phi, "--labs", phi / "labs.csv", "--salt-file", salt_file]
    out = tmp_path / "physio"
    result = cli(*args, "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(r["reason"] for r in _rejects(out)) == ["no_time", "truncated"]
    for file in out.rglob("*"):
        assert b"SMITH_JOHN" not in file.read_bytes(), file.name
    kept = tmp_path / "kept"
    assert cli(*args, "--out", kept, "--keep-paths").exit_code == 0
    assert b"SMITH_JOHN_MRN12345678" in (kept / "manifest.json").read_bytes()
    assert any("SMITH_JOHN" in r["path"] for r in _rejects(kept))
    token = Pseudonymizer(SALT).path_token((phi / "broken.hea").resolve())
    assert token in {r["path"] for r in _rejects(out)}


# ---------------------------------------------------------------- runs into one OUT
def _many_records(folder: Path, count: int) -> Path:
    first = write_wfdb(folder / "r0", "rec", patient="p0")
    for index in range(1, count):
        shutil.copytree(first.parent, folder / f"r{index}")
        _edit_header(folder / f"r{index}" / "rec", "patient_id: p0", f"patient_id: p{index}")
    return folder


def test_two_runs_into_one_out_publish_one_intact_artifact(tmp_path, salt_file):
    folder = _many_records(tmp_path / "in", 6)
    out = tmp_path / "physio"
    args = ["ingest-physio", "--ecg", folder, "--out", out, "--salt-file", salt_file]
    first, second = cli_process(*args), cli_process(*args)
    results = [p.communicate(timeout=300) for p in (first, second)]
    assert (first.returncode, second.returncode) == (0, 0), results
    assert verify(out) == [] and not list(tmp_path.glob("physio.tmp-*"))
    assert json.loads((out / "manifest.json").read_text())["stats"]["ecgs"] == 6
    assert any("nothing to do" in stderr for _, stderr in results)


def test_a_run_killed_with_sigkill_leaves_no_artifact_and_the_rerun_publishes(tmp_path, salt_file):
    folder = _many_records(tmp_path / "in", 30)
    out = tmp_path / "physio"
    args = ["ingest-physio", "--ecg", folder, "--out", out, "--salt-file", salt_file]
    # The killed run waits in its 10th ECG read (never released): the kill lands mid-run,
    # after its build directory and marker are written, whatever the speed of the machine.
    held_env, held, _ = held_call_env(tmp_path, "cxrkit.io.ecg:read_ecg", 10, base={})
    proc = cli_process(*args, env=held_env)
    deadline = time.monotonic() + 120
    while not held.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the run never reached its 10th ECG"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    rerun = cli_process(*args)
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr[-2000:]
    assert verify(out) == [] and not list(tmp_path.glob("physio.tmp-*"))
    assert json.loads((out / "manifest.json").read_text())["stats"]["ecgs"] == 30


# ---------------------------------------------------------------- tampered physio into distill
@pytest.fixture
def physio_artifact(tmp_path, salt_file):
    record = write_wfdb(tmp_path / "ecg", "rec", patient="p1")
    labs = tmp_path / "labs.csv"
    serum_long_table(["p1", "p2"]).to_csv(labs, index=False)
    out = tmp_path / "physio"
    result = cli("ingest-physio", "--ecg", record.with_suffix(".hea"), "--labs", labs,
                 "--out", out, "--salt-file", salt_file)  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


TAMPER = {
    "ecg.npy": _flip_last_byte,
    "labs.parquet": lambda p: pq.write_table(pq.read_table(p).slice(0, 1), p),
    "rejects.parquet": Path.unlink,
}


@pytest.mark.parametrize("name", TAMPER)
def test_distill_refuses_a_tampered_physio_artifact_with_exit_4(
    demo_dataset, physio_artifact, tmp_path, name
):
    args = ["distill", demo_dataset, "--physio", physio_artifact, "--out", tmp_path / "student",
            "--stage", "pairs"]  # fmt: skip
    assert cli(*args).exit_code == 0  # untampered: pairs are built
    TAMPER[name](physio_artifact / name)
    result = cli(*args)
    assert result.exit_code == 4, result.output
    assert "failed verification" in result.output and name in result.output


def _forge(folder: Path) -> None:
    """Re-describe every file and re-checksum the manifest: a tamperer who knows the format
    (the checksum is not a signature), or a buggy writer."""
    from cxrkit.artifacts.manifest import data_files, describe_file, manifest_checksum

    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"] = [describe_file(folder, f) for f in data_files(folder)]
    manifest["checksum"] = manifest_checksum(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_a_forged_physio_artifact_whose_files_disagree_is_an_artifact_error(physio_artifact):
    import numpy as np

    from cxrkit.artifacts import open_artifact
    from cxrkit.errors import ArtifactError
    from cxrkit.stages import physio

    labs = physio_artifact / "labs.parquet"
    table = pq.read_table(labs).to_pylist()
    table[0]["values"] = table[0]["values"][:2]
    pq.write_table(pa.Table.from_pylist(table, schema=pq.read_schema(labs)), labs)
    np.save(physio_artifact / "ecg.npy", np.zeros((3, 12, 8), np.float32))  # 1 row indexed
    _forge(physio_artifact)
    artifact = open_artifact(physio_artifact, kind="physio")  # passes: self-consistent
    with pytest.raises(ArtifactError, match=r"ecg.npy: float32 \(3, 12, 8\)"):
        physio.load_ecgs(artifact)
    with pytest.raises(ArtifactError, match="labs.parquet: a panel without one value"):
        physio.load_labs(artifact)
    np.save(physio_artifact / "ecg.npy", np.array([{"x": 1}] * 1, dtype=object))
    _forge(physio_artifact)
    with pytest.raises(ArtifactError, match="unreadable ECG files"):  # never unpickled
        physio.load_ecgs(open_artifact(physio_artifact, kind="physio"))


# ---------------------------------------------------------------- finding what was rejected
def test_the_rejected_files_are_listed_with_real_paths_beside_not_inside_the_artifact(
    tmp_path, salt_file
):
    import csv

    folder = tmp_path / "in"
    write_wfdb(folder, "good", patient="p1")
    _truncate(write_wfdb(folder, "broken", patient="p1"))
    table = serum_long_table(["p1", "p2"])
    table.loc[table.patient_id == "p2", "time"] = "not a date"
    table.to_csv(tmp_path / "labs.csv", index=False)
    out = tmp_path / "physio"
    result = cli("ingest-physio", "--ecg", folder, "--labs", tmp_path / "labs.csv",
                 "--out", out, "--salt-file", salt_file)  # fmt: skip
    assert result.exit_code == 0, result.output
    listing = tmp_path / "physio.rejects-local.csv"
    assert str(listing) in "".join(result.output.split())  # rich may wrap a long path
    assert listing.stat().st_mode & 0o777 == 0o600
    with listing.open(newline="") as handle:
        rows = {r["reason"]: r for r in csv.DictReader(handle)}
    tokens = {r["path"] for r in _rejects(out)}
    assert rows["truncated"]["path"] == str(folder / "broken.hea")
    assert rows["no_time"]["path"].startswith(f"{tmp_path / 'labs.csv'}: patient_id p2, time ")
    assert {r["token"] for r in rows.values()} == tokens
    assert not any("rejects-local" in p.name for p in out.rglob("*"))


def test_a_long_lab_row_with_an_empty_value_is_an_empty_panel_reject_not_dropped(
    tmp_path, salt_file
):
    table = serum_long_table(["p1", "p2"])  # MIMIC's labevents leave valuenum empty
    table["value"] = table["value"].astype(object)
    table.loc[table.patient_id == "p2", "value"] = None
    labs = tmp_path / "labs.csv"
    table.to_csv(labs, index=False)
    out = tmp_path / "physio"
    result = cli("ingest-physio", "--labs", labs, "--out", out, "--salt-file", salt_file)
    assert result.exit_code == 0, result.output
    assert [r["reason"] for r in _rejects(out)] == ["empty_panel"]
    assert len(pq.read_table(out / "labs.parquet")) == 1


def test_an_ecg_map_naming_records_without_hea_as_record_lists_do_matches_them(tmp_path, salt_file):
    record = write_wfdb(tmp_path / "files" / "p1000" / "p10000032" / "s40689238", "40689238")
    ecg_map = tmp_path / "record_list.csv"  # MIMIC-IV-ECG names a record without extension
    pd.DataFrame({"path": [str(record)], "patient_id": [10000032]}).to_csv(ecg_map, index=False)
    out = tmp_path / "physio"
    result = cli("ingest-physio", "--ecg", tmp_path / "files", "--ecg-map", ecg_map,
                 "--out", out, "--salt-file", salt_file)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _rejects(out) == []
    rows = pq.read_table(out / "ecg.parquet").to_pylist()
    assert [r["patient_id"] for r in rows] == [Pseudonymizer(SALT).pseudonym("patient", "10000032")]


def test_numeric_patient_ids_with_an_empty_cell_keep_their_text_not_a_float(tmp_path, salt_file):
    records = [write_wfdb(tmp_path / "in", name) for name in ("a", "b")]
    ecg_map = tmp_path / "map.csv"  # pandas reads 10000032 beside an empty cell as 10000032.0
    ecg_map.write_text(f"path,patient_id\n{records[0]}.hea,10000032\n{records[1]}.hea,\n")
    table = serum_long_table(["10000032", "10000033"])
    table["patient_id"] = table["patient_id"].astype(object)
    table.loc[table.index[-1], "patient_id"] = None
    table.to_csv(tmp_path / "labs.csv", index=False)
    out = tmp_path / "physio"
    result = cli("ingest-physio", "--ecg", tmp_path / "in", "--ecg-map", ecg_map,
                 "--labs", tmp_path / "labs.csv", "--out", out, "--salt-file", salt_file)  # fmt: skip
    assert result.exit_code == 0, result.output
    pseudonym = Pseudonymizer(SALT).pseudonym
    ecgs = pq.read_table(out / "ecg.parquet").to_pylist()
    labs = pq.read_table(out / "labs.parquet").to_pylist()
    assert [r["patient_id"] for r in ecgs] == [pseudonym("patient", "10000032")]
    assert sorted(r["patient_id"] for r in labs) == sorted(
        pseudonym("patient", p) for p in ("10000032", "10000033")
    )


def test_an_out_path_with_brackets_is_printed_as_text_on_stdout_and_in_the_summary(
    tmp_path, salt_file
):
    labs = tmp_path / "labs.csv"
    serum_long_table(["p1", "p2"]).to_csv(labs, index=False)
    for name in ("run[/x]", "run[bold]1"):  # rich read these as markup: a crash, a lost word
        out = tmp_path / name
        result = cli("ingest-physio", "--labs", labs, "--out", out, "--salt-file", salt_file)
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[-1] == str(out)
        assert f"physio {out}" in result.output


def test_a_row_without_value_or_unit_does_not_make_its_test_one_of_several_units(
    tmp_path, salt_file
):
    table = serum_long_table(["p1", "p2"])  # labevents leave valueuom empty where valuenum is
    table["value"] = table["value"].astype(object)
    table["unit"] = table["unit"].astype(object)
    last = table.index[-1]
    table.loc[last, ["value", "unit"]] = None
    labs = tmp_path / "labs.csv"
    table.to_csv(labs, index=False)
    out = tmp_path / "physio"
    result = cli("ingest-physio", "--labs", labs, "--out", out, "--salt-file", salt_file)
    assert result.exit_code == 0, result.output
    info = json.loads((out / "labs.json").read_text())
    assert info["units"] == dict(zip(table["test"], serum_long_table(["p1"])["unit"], strict=False))
    assert len(pq.read_table(out / "labs.parquet")) == 2
