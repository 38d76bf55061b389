"""ingest-physio on MIMIC-IV's tables as they ship, and distill's pairing with MIMIC-CXR.

Files: hosp/labevents + d_labitems and MIMIC-IV-ECG's record_list.csv with MIMIC's
exact columns (tests/mimic4_support.py), images in the MIMIC-CXR-JPG layout.
"""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta

import layouts_support as layouts
import mimic4_support as m4
import pyarrow.parquet as pq
import pytest
from trust_support import cli

from cxrkit.errors import InputError
from cxrkit.io import mimic_iv
from cxrkit.io.deid import Pseudonymizer

SALT = b"\x00" * 32  # the conftest salt file's
PSEUDO = Pseudonymizer(SALT)


def _ingest(tmp_path, salt_file, *args):
    out = tmp_path / "physio"
    result = cli("ingest-physio", *args, "--out", out, "--salt-file", salt_file)
    return result, out


def _info(out):
    return json.loads((out / "labs.json").read_text())


def _rejects(out):
    return pq.read_table(out / "rejects.parquet").to_pylist()


def _shifted(subject_key: str, when: str) -> str:
    moved = datetime.fromisoformat(when) + timedelta(days=PSEUDO.date_offset_days(subject_key))
    return moved.isoformat()


# ---------------------------------------------------------------- labevents + d_labitems
def test_labevents_panels_are_named_by_their_d_labitems_label_in_valueuom(tmp_path, salt_file):
    labevents = m4.write_hosp(tmp_path / "hosp")  # .csv.gz, d_labitems found beside it
    result, out = _ingest(tmp_path, salt_file, "--labs", labevents)
    assert result.exit_code == 0, result.output
    info = _info(out)
    # Glucose is a blood and a urine test in d_labitems: the fluid keeps them apart;
    # the urine one holds only text ("NEG"), so it has no numeric value to keep.
    assert sorted(info["tests"]) == sorted(
        ["Creatinine", "Glucose (Blood)", "Cholesterol, Total", "Cholesterol, HDL",
         "Potassium", "Sodium", "Troponin T", "Hemoglobin"]
    )  # fmt: skip
    assert info["units"]["Creatinine"] == "mg/dL" and info["units"]["Troponin T"] == "ng/mL"
    assert info["units"]["Potassium"] == "mEq/L"
    stats = json.loads((out / "manifest.json").read_text())["stats"]
    assert stats["lab_panels"] == len(m4.DRAWS) and stats["lab_source"] == "mimic-iv labevents"


def test_a_panel_is_one_subject_at_one_charttime_keyed_as_mimic_cxr_keys_it(tmp_path, salt_file):
    labevents = m4.write_hosp(tmp_path / "hosp")
    result, out = _ingest(tmp_path, salt_file, "--labs", labevents)
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out / "labs.parquet").to_pylist()
    got = sorted((r["patient_id"], r["time"]) for r in rows)
    # subject_id 10000032 is MIMIC-CXR's folder p10000032: same pseudonym, same date shift
    want = sorted(
        (PSEUDO.pseudonym("patient", f"p{s}"), _shifted(f"p{s}", t)) for s, _, t in m4.DRAWS
    )
    assert got == want


def test_valuenum_is_the_value_and_its_percentile_is_stored(tmp_path, salt_file):
    labevents = m4.write_hosp(tmp_path / "hosp")
    result, out = _ingest(tmp_path, salt_file, "--labs", labevents, "--lab-test", "Creatinine")
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out / "labs.parquet").to_pylist()
    by_patient_time = {(r["patient_id"], r["time"]): r["values"][0] for r in rows}
    # creatinine 0.7, 0.8, 0.9, 1.0 mg/dL in draw order: evenly spaced, so ranks 0, 1/3, 2/3, 1
    scaled = [
        by_patient_time[(PSEUDO.pseudonym("patient", f"p{s}"), _shifted(f"p{s}", t))]
        for s, _, t in m4.DRAWS
    ]
    assert scaled == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0], abs=1e-6)


def test_plain_and_gzipped_tables_give_the_same_panels(tmp_path, salt_file):
    plain = m4.write_hosp(tmp_path / "plain", gz=False)
    zipped = m4.write_hosp(tmp_path / "zipped", gz=True)
    tables = []
    for labevents in (plain, zipped):
        out = tmp_path / f"physio-{labevents.parent.name}"
        result = cli("ingest-physio", "--labs", labevents, "--out", out, "--salt-file", salt_file)
        assert result.exit_code == 0, result.output
        tables.append(pq.read_table(out / "labs.parquet").to_pylist())
    assert tables[0] == tables[1] and len(tables[0]) == len(m4.DRAWS)


def test_chosen_tests_by_label_or_itemid_keep_that_order(tmp_path, salt_file):
    labevents = m4.write_hosp(tmp_path / "hosp")
    args = ("--labs", labevents, "--lab-test", "Troponin T", "--lab-test", "50912")
    result, out = _ingest(tmp_path, salt_file, *args)
    assert result.exit_code == 0, result.output
    assert _info(out)["tests"] == ["Troponin T", "Creatinine"]
    stats = json.loads((out / "manifest.json").read_text())["stats"]
    assert stats["lab_items_left_out"] == len(m4.D_LABITEMS) - 2
    # draws 0 and 2 had only "<0.01" troponin: still panels, through their creatinine
    assert stats["lab_panels"] == len(m4.DRAWS)


def test_the_top_n_tests_are_those_with_most_numeric_values(tmp_path, salt_file):
    rows = m4.labevents_rows()
    extra = [dict(r, labevent_id=f"9{i}", charttime="2180-05-07 07:30:00") for i, r in
             enumerate(rows) if r["itemid"] == "50983"]  # fmt: skip
    labevents = m4.write_hosp(tmp_path / "hosp", rows=rows + extra)
    result, out = _ingest(tmp_path, salt_file, "--labs", labevents, "--set", "lab_top=1")
    assert result.exit_code == 0, result.output
    assert _info(out)["tests"] == ["Sodium"]


@pytest.mark.parametrize(
    "rewrite",
    [
        lambda t: t[:16],  # re-saved by a spreadsheet: "2180-05-06 07:30"
        lambda t: t.replace(" ", "T"),  # ISO, as other exports write datetimes
    ],
    ids=["no-seconds", "iso-t"],
)
def test_charttimes_in_another_iso_form_join_panels_as_mimic_iv_s_own(tmp_path, salt_file, rewrite):
    rows = [dict(r, charttime=rewrite(r["charttime"])) for r in m4.labevents_rows()]
    labevents = m4.write_hosp(tmp_path / "hosp", rows=rows)
    result, out = _ingest(tmp_path, salt_file, "--labs", labevents)
    assert result.exit_code == 0, result.output
    got = sorted(r["time"] for r in pq.read_table(out / "labs.parquet").to_pylist())
    assert got == sorted(_shifted(f"p{s}", t) for s, _, t in m4.DRAWS)
    assert "no_time" not in {r["reason"] for r in _rejects(out)}


def test_a_charttime_of_now_or_today_is_no_time_not_the_clock_of_the_run():
    """pandas reads "now"/"today" as the current time, even with an exact format: a panel
    would be dated by the run and its id change with each run."""
    import pandas as pd

    got = mimic_iv.charttimes(pd.Series(["now", "today", "2180-05-06 07:30:00"]))
    assert got.isna().tolist() == [True, True, False]


def test_text_results_other_units_and_unknown_items_are_counted_rejects(tmp_path, salt_file):
    rows = m4.labevents_rows()
    odd = dict(rows[0], labevent_id="900", itemid="50912", value="88", valuenum="88",
               valueuom="umol/L")  # fmt: skip
    unknown = dict(rows[0], labevent_id="901", itemid="99999")
    labevents = m4.write_hosp(tmp_path / "hosp", rows=rows + [odd, unknown])
    result, out = _ingest(tmp_path, salt_file, "--labs", labevents)
    assert result.exit_code == 0, result.output
    got = sorted((r["reason"], r["detail"]) for r in _rejects(out))
    assert got == [
        ("non_numeric", "2 rows without a numeric valuenum"),  # Troponin T "<0.01" twice
        ("other_unit", "1 rows not in the item's unit 'mg/dL'"),
        ("unknown_itemid", "1 rows whose itemid is not in d_labitems.csv.gz"),
    ]
    listing = (tmp_path / "physio.rejects-local.csv").read_text()
    assert "itemid 99999 (not in d_labitems)" in listing and "itemid 51003 (Troponin T)" in listing


def test_a_chosen_test_with_only_text_results_gives_no_panel_and_counts_them(tmp_path, salt_file):
    labevents = m4.write_hosp(tmp_path / "hosp")
    result, out = _ingest(tmp_path, salt_file, "--labs", labevents, "--lab-test", "Glucose (Urine)")
    assert result.exit_code == 0, result.output  # "NEG" only: no value to keep
    assert len(pq.read_table(out / "labs.parquet")) == 0
    assert [(r["reason"], r["detail"]) for r in _rejects(out)] == [
        ("non_numeric", "1 rows without a numeric valuenum")
    ]


def test_an_all_text_panel_is_no_panel_and_its_rows_are_counted(tmp_path, salt_file):
    rows = [r for r in m4.labevents_rows() if r["itemid"] == "51003"]  # "<0.01", "0.04", ...
    labevents = m4.write_hosp(tmp_path / "hosp", rows=rows)
    result, out = _ingest(tmp_path, salt_file, "--labs", labevents)
    assert result.exit_code == 0, result.output
    assert len(pq.read_table(out / "labs.parquet")) == 2  # the draws with 0.04
    assert [r["reason"] for r in _rejects(out)] == ["non_numeric"]


def test_labevents_without_d_labitems_is_a_one_line_input_error(tmp_path, salt_file):
    labevents = m4.write_hosp(tmp_path / "hosp")
    (tmp_path / "hosp" / "d_labitems.csv.gz").unlink()
    result, out = _ingest(tmp_path, salt_file, "--labs", labevents)
    assert result.exit_code == 3
    message = result.output.strip()
    assert len(message.splitlines()) == 1 and str(labevents) in message
    assert "d_labitems" in message and "--lab-items" in message
    assert not out.exists()


def test_lab_items_given_elsewhere_name_the_tests(tmp_path, salt_file):
    labevents = m4.write_hosp(tmp_path / "hosp", gz=False)
    moved = tmp_path / "dictionary" / "d_labitems.csv"
    moved.parent.mkdir()
    (tmp_path / "hosp" / "d_labitems.csv").rename(moved)
    result, out = _ingest(tmp_path, salt_file, "--labs", labevents, "--lab-items", moved)
    assert result.exit_code == 0, result.output
    assert "Creatinine" in _info(out)["tests"]


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("--lab-test", "Lactate"), 2, "'Lactate' is neither a test name nor an itemid"),
        (("--lab-test", "Glucose"), 2, "(it names Glucose (Blood), Glucose (Urine))"),
        (("--set", "mimic_subject_format=patient"), 2, "must hold exactly one {}"),
        (("--set", "lab_top=0"), 2, "lab_top must be at least 1"),
    ],
)
def test_impossible_lab_settings_are_config_errors(tmp_path, salt_file, args, code, words):
    labevents = m4.write_hosp(tmp_path / "hosp")
    result, _ = _ingest(tmp_path, salt_file, "--labs", labevents, *args)
    assert result.exit_code == code, result.output
    assert words in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("cell", ["Smith", "1e7", "+10000032", "10000032.5", "-4", "١٢", "²"])
def test_a_subject_id_that_is_not_a_number_is_an_input_error(tmp_path, salt_file, cell):
    """Digits only, as record_list's rule: 1e7 would merge with 10000000 as p10000000."""
    rows = m4.labevents_rows()
    rows[3]["subject_id"] = cell
    labevents = m4.write_hosp(tmp_path / "hosp", rows=rows)
    result, _ = _ingest(tmp_path, salt_file, "--labs", labevents)
    assert result.exit_code == 3 and str(labevents) in result.output
    assert f"{cell!r} is not a whole number" in result.output


def test_d_labitems_listing_an_itemid_twice_is_an_input_error(tmp_path, salt_file):
    items = (*m4.D_LABITEMS, (50912, "Creatinine, Serum", "Blood", "Chemistry"))
    labevents = m4.write_hosp(tmp_path / "hosp", items=items)
    result, _ = _ingest(tmp_path, salt_file, "--labs", labevents)
    assert result.exit_code == 3 and "itemid 50912 is listed twice" in result.output


def test_a_label_shared_by_fluids_and_by_items_gets_fluid_then_itemid(tmp_path):
    path = m4.write_csv(tmp_path / "d_labitems.csv", ("itemid", "label", "fluid", "category"), [
        {"itemid": "50931", "label": "Glucose", "fluid": "Blood", "category": "Chemistry"},
        {"itemid": "51478", "label": "Glucose", "fluid": "Urine", "category": "Hematology"},
        {"itemid": "50811", "label": "Hemoglobin", "fluid": "Blood", "category": "Blood Gas"},
        {"itemid": "51222", "label": "Hemoglobin", "fluid": "Blood", "category": "Hematology"},
        {"itemid": "50912", "label": "Creatinine", "fluid": "Blood", "category": "Chemistry"},
    ])  # fmt: skip
    assert mimic_iv.read_labitems(path) == {
        50931: "Glucose (Blood)",
        51478: "Glucose (Urine)",
        50811: "Hemoglobin (Blood, 50811)",
        51222: "Hemoglobin (Blood, 51222)",
        50912: "Creatinine",
    }


def test_a_gzipped_d_labitems_is_read_by_its_bytes_whatever_its_name(tmp_path):
    plain = m4.write_csv(tmp_path / "items.csv", ("itemid", "label", "fluid", "category"), [
        {"itemid": "50912", "label": "Creatinine", "fluid": "Blood", "category": "Chemistry"},
    ])  # fmt: skip
    renamed = tmp_path / "d_labitems.csv"  # gzip bytes under a plain name
    renamed.write_bytes(gzip.compress(plain.read_bytes()))
    assert mimic_iv.read_labitems(renamed) == {50912: "Creatinine"}


def test_the_subject_key_is_one_to_one_and_refuses_what_is_not_a_number():
    assert mimic_iv.subject_key("10000032", "p{}", "t") == "p10000032"
    assert mimic_iv.subject_key("10000032.0", "{}", "t") == "10000032"
    with pytest.raises(Exception, match="not a whole number"):
        mimic_iv.subject_key("p10000032", "p{}", "t")  # would become pp10000032
    for other_digits in ("١٢", "１２", "²", "12.0.0"):  # int() reads two as 12
        with pytest.raises(InputError, match="not a whole number"):
            mimic_iv.subject_key(other_digits, "p{}", "t")


# ---------------------------------------------------------------- MIMIC-IV-ECG
def test_only_ascii_digit_folders_are_mimic_iv_ecg_folders():
    """A folder in other scripts' digits is not MIMIC's layout (no patient from it, a
    no_patient reject), rather than a subject_id that stops the whole run."""
    assert mimic_iv.ecg_folder_subject("files/p1000/p10000032/s4/4.hea") == "10000032"
    assert mimic_iv.ecg_folder_subject("files/p١٠٠٠/p١٠٠٠٠٠٣٢/s٤/4.hea") is None


def test_record_list_alone_ingests_the_records_it_lists(tmp_path, salt_file):
    record_list = m4.write_mimic_ecg(tmp_path / "mimic-iv-ecg")
    result, out = _ingest(tmp_path, salt_file, "--ecg-map", record_list)
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out / "ecg.parquet").to_pylist()
    got = sorted((r["patient_id"], r["time"], r["samples"], r["orig_rate"]) for r in rows)
    want = sorted(
        (PSEUDO.pseudonym("patient", f"p{s}"), _shifted(f"p{s}", t), 5000, 500.0)
        for s, _, t in m4.ECGS
    )
    assert got == want
    assert all(r["lead_mask"] == [1] * 12 for r in rows)  # aVF/aVL order read by name


def test_record_list_rows_outside_ecg_are_counted_not_lost(tmp_path, salt_file):
    """--ecg names one patient's folder: the other rows of record_list.csv are not read,
    and the stats say how many, so rows read = rows of a given record + rows outside."""
    record_list = m4.write_mimic_ecg(tmp_path / "mimic-iv-ecg")
    subject = m4.ECGS[0][0]
    folder = tmp_path / "mimic-iv-ecg" / "files" / f"p{str(subject)[:4]}" / f"p{subject}"
    ours = sum(s == subject for s, _, _ in m4.ECGS)
    result, out = _ingest(tmp_path, salt_file, "--ecg", folder, "--ecg-map", record_list)
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "manifest.json").read_text())["stats"]
    assert 0 < ours < len(m4.ECGS)
    assert stats["ecg_map_rows"] == len(m4.ECGS)
    assert stats["ecg_map_rows_outside_ecg"] == len(m4.ECGS) - ours
    assert stats["ecgs"] == ours and stats["rejects"] == 0
    assert "ecg map rows outside ecg" in " ".join(result.output.split())


def test_a_gzipped_record_list_reads_as_the_plain_one(tmp_path, salt_file):
    import gzip

    record_list = m4.write_mimic_ecg(tmp_path / "mimic-iv-ecg")
    zipped = record_list.with_suffix(".csv.gz")
    zipped.write_bytes(gzip.compress(record_list.read_bytes()))
    tables = []
    for table in (record_list, zipped):
        result, out = _ingest(tmp_path / table.name, salt_file, "--ecg-map", table)
        assert result.exit_code == 0, result.output
        tables.append(pq.read_table(out / "ecg.parquet").to_pylist())
    assert tables[0] == tables[1] and len(tables[0]) == len(m4.ECGS)


def test_record_list_beside_an_ecg_folder_gives_patients_and_times(tmp_path, salt_file):
    root = tmp_path / "mimic-iv-ecg"
    record_list = m4.write_mimic_ecg(root)
    args = ("--ecg", root / "files", "--ecg-map", record_list)
    result, out = _ingest(tmp_path, salt_file, *args)
    assert result.exit_code == 0, result.output
    assert _rejects(out) == [] and len(pq.read_table(out / "ecg.parquet")) == len(m4.ECGS)


def test_records_in_mimic_iv_ecg_folders_need_no_map(tmp_path, salt_file):
    root = tmp_path / "mimic-iv-ecg"
    m4.write_mimic_ecg(root)
    result, out = _ingest(tmp_path, salt_file, "--ecg", root / "files")
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out / "ecg.parquet").to_pylist()
    patients = sorted(r["patient_id"] for r in rows)  # from the pNNNNNNNN folder
    assert patients == sorted(PSEUDO.pseudonym("patient", f"p{s}") for s, _, _ in m4.ECGS)
    # the time from the header's base date and time
    assert sorted(r["time"] for r in rows) == sorted(_shifted(f"p{s}", t) for s, _, t in m4.ECGS)


def test_machine_measurements_as_the_ecg_map_is_a_one_line_input_error(tmp_path, salt_file):
    path = m4.write_csv(tmp_path / "machine_measurements.csv",
                        ("subject_id", "study_id", "cart_id", "ecg_time", "rr_interval"),
                        [{"subject_id": "10000032", "study_id": "40689238", "cart_id": "6848296",
                          "ecg_time": "2180-07-23 08:44:00", "rr_interval": "659"}])  # fmt: skip
    result, _ = _ingest(tmp_path, salt_file, "--ecg-map", path)
    assert result.exit_code == 3 and len(result.output.strip().splitlines()) == 1
    assert "record_list.csv" in result.output and str(path) in result.output


# ---------------------------------------------------------------- with MIMIC-CXR images
def _mimic_cxr_dataset(tmp_path, salt_file):
    from cxrkit.stages.ingest import IngestConfig, run

    files = layouts.mimic_tree(tmp_path / "mimic-cxr-jpg", with_reports=False)
    m4.write_cxr_metadata(tmp_path / "mimic-cxr-jpg")  # beside files/, with StudyDate
    cfg = IngestConfig(
        sources=[str(files)], out=str(tmp_path / "ds"), image_size=64, salt_file=str(salt_file)
    )
    return run(cfg)


def test_mimic_cxr_images_and_mimic_iv_tables_pair_without_rewriting_an_id(tmp_path, salt_file):
    from cxrkit.io.dataset import dataset_shards
    from cxrkit.stages import pairs

    dataset = _mimic_cxr_dataset(tmp_path, salt_file)
    labevents = m4.write_hosp(tmp_path / "mimic-iv" / "hosp")
    record_list = m4.write_mimic_ecg(tmp_path / "mimic-iv-ecg")
    result, physio = _ingest(tmp_path, salt_file, "--labs", labevents, "--ecg-map", record_list,
                             "--dataset", dataset.path)  # fmt: skip
    assert result.exit_code == 0, result.output
    paired = pairs.run(dataset.path, physio, tmp_path / "pairs", pairs.PairsConfig())
    rows = pq.read_table(paired.path / "pairs.parquet").to_pylist()
    images = [r for shard in dataset_shards(dataset) for r in pq.read_table(shard).to_pylist()]
    study_of = {r["image_id"]: r["study_id"] for r in images}
    ecgs = {r["ecg_id"]: r for r in pq.read_table(physio / "ecg.parquet").to_pylist()}

    def study(raw):
        return PSEUDO.pseudonym("study", raw)

    ecg_hours = {
        study_of[r["image_id"]]: r["ecg_delta_hours"] for r in rows if r["ecg_id"] is not None
    }
    # 2180-05-06 10:02 ECG for the study of that day (noon): -1.97 h; 2132-10-14 23:00: -13 h;
    # the 2180-07-23 ECG is a month from any image; the 06-26 study has none
    assert ecg_hours == {
        study("s50414267"): pytest.approx(-(1 + 58 / 60)),
        study("s57375967"): pytest.approx(-13.0),
    }
    assert all(ecgs[r["ecg_id"]]["patient_id"] == r["patient_id"] for r in rows if r["ecg_id"])
    lab_hours = sorted(r["lab_delta_hours"] for r in rows)
    assert lab_hours == pytest.approx(sorted([-4.5] * 2 + [-2.75] * 2 + [-6.0] * 2))
    coverage = paired.stats["coverage"]
    assert (coverage["images"], coverage["with_ecg"], coverage["with_labs"]) == (6, 4, 6)
    assert (coverage["both"], coverage["none"]) == (4, 0)


def test_a_bare_subject_format_keeps_mimic_ids_apart_from_mimic_cxr_folders(
    tmp_path, salt_file, caplog, monkeypatch
):
    import logging

    from cxrkit.stages import pairs

    dataset = _mimic_cxr_dataset(tmp_path, salt_file)
    labevents = m4.write_hosp(tmp_path / "mimic-iv" / "hosp")
    result, physio = _ingest(tmp_path, salt_file, "--labs", labevents,
                             "--set", 'mimic_subject_format="{}"')  # fmt: skip
    assert result.exit_code == 0, result.output
    monkeypatch.setattr(logging.getLogger("cxrkit"), "propagate", True)  # the CLI turned it off
    with caplog.at_level("WARNING", logger="cxrkit.stages.pairs"):
        paired = pairs.run(dataset.path, physio, tmp_path / "pairs", pairs.PairsConfig())
    assert paired.stats["coverage"]["with_labs"] == 0
    assert any("every image is unpaired" in r.getMessage() for r in caplog.records)


def test_ecg_signals_streamed_to_disk_are_the_npy_file_np_save_writes(tmp_path, salt_file):
    import io

    import numpy as np

    record_list = m4.write_mimic_ecg(tmp_path / "mimic-iv-ecg")
    result, out = _ingest(tmp_path, salt_file, "--ecg-map", record_list)
    assert result.exit_code == 0, result.output
    array = np.load(out / "ecg.npy")
    assert array.shape == (len(m4.ECGS), 12, 5000) and array.dtype == np.float32
    buffer = io.BytesIO()
    np.save(buffer, array)
    assert (out / "ecg.npy").read_bytes() == buffer.getvalue()
    assert not list(out.glob("*.part"))


def test_lab_patients_dataset_keeps_only_patients_with_an_image(tmp_path, salt_file):
    dataset = _mimic_cxr_dataset(tmp_path, salt_file)
    labevents = m4.write_hosp(tmp_path / "mimic-iv" / "hosp")
    result, out = _ingest(tmp_path, salt_file, "--labs", labevents, "--dataset", dataset.path,
                          "--set", "lab_patients=dataset")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out / "labs.parquet").to_pylist()
    assert sorted({r["patient_id"] for r in rows}) == sorted(
        PSEUDO.pseudonym("patient", p) for p in ("p10000032", "p10000764")
    )
    stats = json.loads((out / "manifest.json").read_text())["stats"]
    numeric = [v for v in m4.draw_values(3).values() if v.replace(".", "").isdigit()]
    assert stats["lab_panels"] == 3 and stats["lab_rows_other_patients"] == len(numeric)


def test_lab_patients_dataset_sharing_no_patient_publishes_no_panel_and_says_so(
    tmp_path, salt_file
):
    dataset = _mimic_cxr_dataset(tmp_path, salt_file)
    labevents = m4.write_hosp(tmp_path / "mimic-iv" / "hosp")
    result, out = _ingest(tmp_path, salt_file, "--labs", labevents, "--dataset", dataset.path,
                          "--set", "lab_patients=dataset",
                          "--set", 'mimic_subject_format="{}"')  # fmt: skip
    assert result.exit_code == 0, result.output  # bare ids never meet the p-keyed folders
    assert len(pq.read_table(out / "labs.parquet")) == 0
    stats = json.loads((out / "manifest.json").read_text())["stats"]
    assert stats["lab_panels"] == 0 and stats["lab_rows_other_patients"] == stats["lab_rows"] - 3
    assert (
        "no lab patient has an image" in result.output and "mimic_subject_format" in result.output
    )


def test_lab_patients_dataset_filters_a_long_table_too(tmp_path, salt_file):
    from physio_support import serum_long_table

    dataset = _mimic_cxr_dataset(tmp_path, salt_file)
    labs = tmp_path / "labs.csv"
    serum_long_table(["p10000032", "p10002428"]).to_csv(labs, index=False)
    result, out = _ingest(tmp_path, salt_file, "--labs", labs, "--dataset", dataset.path,
                          "--set", "lab_patients=dataset")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out / "labs.parquet").to_pylist()
    assert [r["patient_id"] for r in rows] == [PSEUDO.pseudonym("patient", "p10000032")]


def test_lab_patients_dataset_without_a_dataset_is_a_config_error(tmp_path, salt_file):
    labevents = m4.write_hosp(tmp_path / "hosp")
    result, _ = _ingest(tmp_path, salt_file, "--labs", labevents, "--set", "lab_patients=dataset")
    assert result.exit_code == 2 and "needs --dataset" in result.output


def test_a_truncated_labevents_download_is_a_one_line_input_error(tmp_path, salt_file):
    labevents = m4.write_hosp(tmp_path / "hosp", rows=m4.labevents_rows() * 50)
    data = labevents.read_bytes()
    labevents.write_bytes(data[: len(data) // 2])  # an interrupted download
    result, out = _ingest(tmp_path, salt_file, "--labs", labevents)
    assert result.exit_code == 3, result.output
    assert len(result.output.strip().splitlines()) == 1 and str(labevents) in result.output
    assert not out.exists()


def test_a_corrupt_labevents_gzip_is_a_one_line_input_error(tmp_path, salt_file):
    import gzip

    labevents = m4.write_hosp(tmp_path / "hosp", gz=False)
    data = bytearray(gzip.compress(labevents.read_bytes(), mtime=0))
    data[10] = 0xFF  # the first deflate block's header: an invalid block type (bit rot)
    labevents = labevents.with_suffix(".csv.gz")
    labevents.write_bytes(bytes(data))
    result, out = _ingest(tmp_path, salt_file, "--labs", labevents)
    assert result.exit_code == 3, result.output
    assert len(result.output.strip().splitlines()) == 1 and str(labevents) in result.output
    assert "gzip" in result.output and not out.exists()


def test_labevents_missing_a_column_names_it(tmp_path, salt_file):
    rows = [{k: v for k, v in r.items() if k != "valueuom"} for r in m4.labevents_rows()]
    header = [c for c in m4.LABEVENTS_HEADER if c != "valueuom"]
    labevents = m4.write_csv(tmp_path / "hosp" / "labevents.csv", header, rows)
    result, _ = _ingest(tmp_path, salt_file, "--labs", labevents)
    assert result.exit_code == 3 and "needs columns ['valueuom']" in result.output


def test_records_the_list_names_but_the_download_lacks_are_missing_file_rejects(
    tmp_path, salt_file
):
    record_list = m4.write_mimic_ecg(tmp_path / "mimic-iv-ecg")
    gone = next((tmp_path / "mimic-iv-ecg").rglob("44458630.hea"))
    gone.unlink()
    result, out = _ingest(tmp_path, salt_file, "--ecg-map", record_list)
    assert result.exit_code == 0, result.output
    assert [r["reason"] for r in _rejects(out)] == ["missing_file"]
    assert len(pq.read_table(out / "ecg.parquet")) == len(m4.ECGS) - 1


def test_panels_written_block_by_block_equal_panels_written_at_once(
    tmp_path, salt_file, monkeypatch
):
    from cxrkit.stages import physio, physio_labs

    labevents = m4.write_hosp(tmp_path / "hosp")
    tables = []
    for block in (physio_labs.PANEL_BLOCK, 3):  # 4 panels: one block, then two
        monkeypatch.setattr(physio_labs, "PANEL_BLOCK", block)
        out = tmp_path / f"physio-{block}"
        cfg = physio.PhysioConfig(out=str(out), labs=str(labevents), salt_file=str(salt_file))
        made = physio.run(cfg)
        tables.append(pq.read_table(out / "labs.parquet").to_pylist())
        stats = made.stats
    assert tables[0] == tables[1] and len(tables[0]) == len(m4.DRAWS)
    assert pq.ParquetFile(tmp_path / "physio-3" / "labs.parquet").num_row_groups == 2
    assert 0 < stats["lab_missing_fraction"] < 1


def test_distill_stage_pairs_on_mimic_tables_reports_the_coverage(tmp_path, salt_file):
    dataset = _mimic_cxr_dataset(tmp_path, salt_file)
    root = tmp_path / "mimic-iv"
    labevents = m4.write_hosp(root / "hosp")
    record_list = m4.write_mimic_ecg(tmp_path / "mimic-iv-ecg")
    result, physio = _ingest(tmp_path, salt_file, "--labs", labevents, "--ecg-map", record_list,
                             "--dataset", dataset.path, "--set", "lab_patients=dataset")  # fmt: skip
    assert result.exit_code == 0, result.output
    out = tmp_path / "pacx"
    result = cli("distill", dataset.path, "--physio", physio, "--out", out, "--stage", "pairs",
                 "--preset", "pacx-mae")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "pairing coverage" in result.output
    manifest = json.loads((tmp_path / "pacx.work" / "pairs" / "manifest.json").read_text())
    coverage = manifest["stats"]["coverage"]
    assert (coverage["with_ecg"], coverage["with_labs"], coverage["none"]) == (4, 6, 0)
