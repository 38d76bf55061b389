"""Ingest of the IU X-ray collection as its common re-distributions ship it: Kaggle's
``images/images_normalized`` + ``indiana_projections.csv`` + ``indiana_reports.csv`` and
R2Gen's ``iu_xray/images/<id>/0.png`` + ``annotation.json``, built at test time from the
real IU reports (read in place from torchxrayvision) and real small images."""

from __future__ import annotations

import json
from collections import defaultdict

import iu_layouts_support as iu
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from cxrkit.artifacts import open_artifact
from cxrkit.errors import InputError
from cxrkit.io.bundled import iu_reports_archive, pediatric_jpegs
from cxrkit.io.dataset import dataset_shards
from cxrkit.io.iu_tables import IuTables, iu_key
from cxrkit.io.tables import find_tables
from cxrkit.stages.ingest import IngestConfig, run


@pytest.fixture(scope="module")
def reports() -> list[iu.XmlReport]:
    return iu.xml_reports(6)


def _ingest(tmp_path, salt_file, sources, name="dataset", **kw):
    out = tmp_path / name
    art = run(
        IngestConfig(
            sources=[str(s) for s in sources], out=str(out), image_size=64,
            salt_file=str(salt_file), **kw,
        )
    )  # fmt: skip
    assert art.stats["rejects"] == 0, art.stats
    rows = [r for f in dataset_shards(open_artifact(out)) for r in pq.read_table(f).to_pylist()]
    return art, rows


# ---------------------------------------------------------------- Kaggle
def test_kaggle_uid_gives_one_patient_and_study_per_report(tmp_path, salt_file, reports):
    folder = iu.kaggle_tree(tmp_path, reports)
    art, rows = _ingest(tmp_path, salt_file, [folder])
    assert sorted(art.stats["dataset_tables"]) == ["indiana_projections.csv", "indiana_reports.csv"]
    assert len(rows) == 12
    by_patient = defaultdict(list)
    for row in rows:
        by_patient[row["patient_id"]].append(row)
    assert len(by_patient) == 6 and len({r["study_id"] for r in rows}) == 6
    for group in by_patient.values():
        assert sorted(r["view"] for r in group) == ["FRONTAL", "LATERAL"]
        assert len({r["report_text"] for r in group}) == 1
        assert len({r["split"] for r in group}) == 1
    assert art.stats["report_source_counts"] == {"iu_csv": 12}
    assert art.stats["iu_projection_rows_without_image"] == 0
    assert art.stats["iu_report_rows_without_image"] == 0


def test_kaggle_rows_without_an_image_are_counted(tmp_path, salt_file, reports):
    """Rows read = rows used + rows without an image: a report whose two images are
    gone, and one more lateral image gone, are counted in the stats, not lost."""
    folder = iu.kaggle_tree(tmp_path, reports)
    gone = [*reports[0].images, reports[1].images[1]]
    for image_id in gone:
        (folder / iu.kaggle_name(image_id)).unlink()
    art, rows = _ingest(tmp_path, salt_file, [folder])
    stats = art.stats
    assert stats["iu_projection_rows"] == 12 and stats["iu_projection_rows_without_image"] == 3
    assert stats["iu_report_rows"] == 6 and stats["iu_report_rows_without_image"] == 1
    assert len(rows) == 12 - 3 and len({r["patient_id"] for r in rows}) == 6 - 1


def test_kaggle_and_openi_store_the_same_report_under_the_same_ids(tmp_path, salt_file, reports):
    """The same report via the Kaggle CSV and via the Open-i XML: same patient and study
    pseudonyms, same findings / impression / composed text (the CSV lost only the
    parentImage list and the automatic MeSH terms, which the dataset does not store)."""
    _, kaggle = _ingest(tmp_path, salt_file, [iu.kaggle_tree(tmp_path / "k", reports)], "k-ds")
    _, openi = _ingest(
        tmp_path, salt_file, [iu.openi_tree(tmp_path / "o", reports)], "o-ds",
        reports=str(iu_reports_archive()),
    )  # fmt: skip
    columns = ("patient_id", "study_id", "image_id", "report_findings", "report_impression",
               "report_text", "split")  # fmt: skip
    assert sorted(tuple(r[c] for c in columns) for r in kaggle) == sorted(
        tuple(r[c] for c in columns) for r in openi
    )
    assert {r["report_source"] for r in kaggle} == {"iu_csv"}
    assert {r["report_source"] for r in openi} == {"iu_xml"}
    first = reports[0]  # the text itself, against the XML read without cxrkit
    row = next(r for r in kaggle if r["report_findings"] == " ".join(
        first.sections["findings"].split()
    ))  # fmt: skip
    assert row["report_text"].startswith("FINDINGS: ")
    assert "\n\nIMPRESSION: " in row["report_text"]


def test_every_bundled_report_reads_the_same_from_the_kaggle_csv(tmp_path):
    """All 3,955 IU reports (3,927 with text): the Kaggle CSV row gives the XML's findings, impression,
    indication, comparison, composed text and MeSH major terms (a report without any
    text gives none)."""
    from cxrkit.io.reports import iter_iu_reports

    path = iu.kaggle_reports_csv(tmp_path / "indiana_reports.csv", iu.xml_reports(None, None))
    tables = IuTables.read([path])
    fields = ("findings", "impression", "indication", "comparison", "text", "mesh", "uid")
    compared = 0
    for xml in iter_iu_reports(iu_reports_archive()):
        csv_report = tables.reports[iu_key(xml.uid)]
        assert [getattr(csv_report, f) for f in fields] == [getattr(xml, f) for f in fields]
        compared += bool(xml.text)
    assert len(tables.reports) == 3955 and compared == 3927


def test_an_image_whose_uid_has_no_report_row_is_kept_without_a_report(
    tmp_path, salt_file, reports, caplog
):
    folder = iu.kaggle_tree(tmp_path, reports)
    table = tmp_path / "indiana_reports.csv"
    lines = table.read_text().splitlines(keepends=True)
    dropped = reports[2].uid[3:]
    table.write_text("".join(line for line in lines if not line.startswith(f"{dropped},")))
    art, rows = _ingest(tmp_path, salt_file, [folder])
    assert len(rows) == 12
    assert art.stats["report_source_counts"] == {"iu_csv": 10, "none": 2}
    bare = [r for r in rows if r["report_source"] == "none"]
    assert len({r["patient_id"] for r in bare}) == 1 and bare[0]["report_text"] is None
    assert sorted(r["view"] for r in bare) == ["FRONTAL", "LATERAL"]
    assert "2 IU image(s) have no report in indiana_projections.csv" in caplog.text


def test_an_image_missing_from_the_projections_takes_its_uid_from_its_name(
    tmp_path, salt_file, reports
):
    folder = iu.kaggle_tree(tmp_path, reports[:2])
    table = tmp_path / "indiana_projections.csv"
    lines = table.read_text().splitlines(keepends=True)
    unlisted = iu.kaggle_name(reports[0].images[1])
    table.write_text("".join(line for line in lines if unlisted not in line))
    _, rows = _ingest(tmp_path, salt_file, [folder])
    assert len({r["patient_id"] for r in rows}) == 2
    assert sorted(r["view"] for r in rows) == ["FRONTAL", "FRONTAL", "LATERAL", "UNKNOWN"]
    assert {r["report_source"] for r in rows} == {"iu_csv"}


def test_dataset_tables_false_ignores_the_kaggle_tables(tmp_path, salt_file, reports):
    folder = iu.kaggle_tree(tmp_path, reports[:2])
    art, rows = _ingest(tmp_path, salt_file, [folder], dataset_tables=False)
    assert art.stats["dataset_tables"] == []
    assert len({r["patient_id"] for r in rows}) == 4  # each image its own patient
    assert {r["view"] for r in rows} == {"UNKNOWN"}
    assert {r["report_source"] for r in rows} == {"none"}


def test_the_tables_are_found_from_the_dataset_root_too(tmp_path, reports):
    iu.kaggle_tree(tmp_path, reports[:1])
    want = [tmp_path / "indiana_projections.csv", tmp_path / "indiana_reports.csv"]
    assert find_tables([str(tmp_path)]) == want
    assert find_tables([str(tmp_path / "images" / "images_normalized")]) == want


@pytest.mark.parametrize(
    ("table", "text", "message"),
    [
        ("indiana_reports.csv", "uid,findings\n1,Clear.\n", "lacks the column(s) impression"),
        ("indiana_reports.csv", "uid,findings,impression\nabc,x,y\n", ":2: uid 'abc' is not"),
        ("indiana_reports.csv", "uid,findings,impression\n1,a,b\n1,c,d\n", ":3: uid 1 has a sec"),
        ("indiana_reports.csv", "uid,findings,impression\n1,a,b,c\n", ":2: more fields"),
        ("indiana_projections.csv", "uid,filename,projection\n1,a.png,Oblique\n", "'Oblique'"),
        ("indiana_projections.csv", "uid,filename\n1,a.png\n", "lacks the column(s) projection"),
    ],
)
def test_a_malformed_kaggle_table_is_refused_naming_the_file(tmp_path, table, text, message):
    path = tmp_path / table
    path.write_text(text)
    with pytest.raises(InputError) as err:
        IuTables.read([path])
    assert str(path) in str(err.value) and message in str(err.value)


def test_cli_a_malformed_kaggle_table_exits_3_with_one_line(tmp_path, salt_file, reports):
    from cxrkit.cli import app

    folder = iu.kaggle_tree(tmp_path, reports[:1])
    (tmp_path / "indiana_reports.csv").write_bytes(b"uid,findings,impression\n\xff\xfe,x,y\n")
    result = CliRunner().invoke(
        app, ["ingest", str(folder), "--out", str(tmp_path / "o"), "--salt-file", str(salt_file)]
    )
    assert result.exit_code == 3, result.output
    errors = [line for line in result.output.splitlines() if "indiana_reports.csv" in line]
    assert len(errors) == 1 and "cannot read dataset table" in errors[0]


def test_a_corrupt_gzipped_kaggle_table_is_refused_naming_the_file(tmp_path):
    import gzip

    data = bytearray(gzip.compress(b"uid,findings,impression\n1,Clear.,Normal.\n", mtime=0))
    data[10] = 0xFF  # an invalid deflate block type
    path = tmp_path / "indiana_reports.csv.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"indiana_reports\.csv\.gz.*gzip"):
        IuTables.read([path])


def test_dataset_tables_are_read_row_by_row_not_held_whole(tmp_path):
    """MIMIC-CXR-JPG's metadata has 377,110 rows: they are streamed (a dict a row held at
    once cost ~550 MiB), so the first row arrives before a bad row further on is read."""
    from cxrkit.io.table_files import iter_rows

    path = tmp_path / "mimic-cxr-2.0.0-metadata.csv"
    path.write_text("dicom_id,ViewPosition\nd1,PA\nd2,AP,extra\n")
    rows = iter_rows(path, ("dicom_id", "ViewPosition"))
    assert next(rows) == {"dicom_id": "d1", "ViewPosition": "PA"}
    with pytest.raises(InputError, match=r"metadata\.csv:3: more fields than the header"):
        next(rows)


def test_iu_key_reads_both_uid_spellings():
    assert iu_key("1") == iu_key("CXR1") == iu_key(" cxr01 ") == "iu:CXR1"
    assert iu_key("CXR1_1_IM-0001") is None and iu_key("") is None


def test_iu_uids_in_other_scripts_digits_are_not_iu_uids(tmp_path):
    """int() reads "١" and "１" as 1: taken as uids they would merge with report 1."""
    assert iu_key("١") is None and iu_key("CXR１") is None
    path = tmp_path / "indiana_reports.csv"
    path.write_text("uid,findings,impression\n1,Clear.,Normal.\n")
    tables = IuTables.read([path])
    assert tables.for_image(tmp_path / "١_IM-0001-4001.dcm.png") is None


# ---------------------------------------------------------------- R2Gen
def test_r2gen_annotation_gives_the_official_split_and_the_findings(tmp_path, salt_file, reports):
    splits = ["train", "train", "train", "train", "val", "test"]
    images = iu.r2gen_tree(tmp_path / "r", reports, splits)
    last = images / reports[5].images[0].rsplit("-", 1)[0]
    iu._small_copy(pediatric_jpegs()[-1], last / "2.png")  # an image the lists leave out
    art, rows = _ingest(tmp_path, salt_file, [images], "r-ds")
    assert art.stats["dataset_tables"] == ["annotation.json"]
    _, openi = _ingest(
        tmp_path, salt_file, [iu.openi_tree(tmp_path / "o", reports)], "o-ds",
        reports=str(iu_reports_archive()),
    )  # fmt: skip
    openi_patient = {r["report_findings"]: r["patient_id"] for r in openi}
    want_split = {
        " ".join(r.sections["findings"].split()): s for r, s in zip(reports, splits, strict=True)
    }
    assert len(rows) == 13 and len({r["patient_id"] for r in rows}) == 6
    assert sum(r["split"] == "test" for r in rows) == 3  # the unlisted image joins its report
    for row in rows:
        assert row["report_source"] == "r2gen" and row["report_impression"] is None
        assert row["report_text"] == f"FINDINGS: {row['report_findings']}"
        assert row["split"] == want_split[row["report_findings"]]
        assert row["patient_id"] == openi_patient[row["report_findings"]]


def test_openi_images_ingested_with_r2gen_take_the_official_split(tmp_path, salt_file, reports):
    """Open-i's files of a report R2Gen lists join that report's official split (a salted
    split would put one patient in two splits); they keep their XML report."""
    splits = ["train", "train", "val", "test", "test", "test"]
    r2gen = iu.r2gen_tree(tmp_path / "r", reports, splits)
    openi = iu.openi_tree(tmp_path / "o", reports)
    for png in openi.glob("*.png"):  # other pixels than R2Gen's copies: not duplicates
        Image.open(png).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(png)
    _, rows = _ingest(
        tmp_path, salt_file, [openi, r2gen], "both", reports=str(iu_reports_archive())
    )  # fmt: skip
    by_patient = defaultdict(set)
    for row in rows:
        by_patient[row["patient_id"]].add(row["split"])
    assert len(by_patient) == 6 and all(len(s) == 1 for s in by_patient.values()), by_patient
    want = {r.uid: s for r, s in zip(reports, splits, strict=True)}
    for row in rows:
        if row["report_source"] == "iu_xml":  # an Open-i file, its report from the XML
            uid = next(r.uid for r in reports if r.sections["findings"] and " ".join(
                r.sections["findings"].split()) == row["report_findings"])  # fmt: skip
            assert row["split"] == want[uid]
    assert {r["report_source"] for r in rows} == {"iu_xml", "r2gen"}


def test_r2gen_report_in_two_splits_is_refused(tmp_path, reports):
    images = iu.r2gen_tree(tmp_path, reports[:2], ["train", "test"])
    path = images.parent / "annotation.json"
    data = json.loads(path.read_text())
    data["val"] = [dict(data["train"][0], split="val")]
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"report CXR\d+ is in train and val"):
        IuTables.read([path])


def test_r2gen_image_listed_by_two_entries_is_refused(tmp_path, reports):
    """One image under two reports (in two splits) cannot be placed: which entry is right
    is unknown, and taking the last one would move the image between splits unsaid."""
    images = iu.r2gen_tree(tmp_path, reports[:2], ["train", "test"])
    path = images.parent / "annotation.json"
    data = json.loads(path.read_text())
    data["test"][0]["image_path"].append(data["train"][0]["image_path"][0])
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"test\[0\] lists .*0\.png, which train\[0\] lists"):
        IuTables.read([path])
    same = json.loads(path.read_text())  # a verbatim repeated entry says nothing new
    same["test"][0]["image_path"].pop()
    same["test"].append(same["test"][0])
    path.write_text(json.dumps(same))
    assert (
        IuTables.read([path]).for_image(images / same["test"][0]["image_path"][0]).split == "test"
    )


def test_r2gen_s_mimic_cxr_annotation_is_not_read_as_iu(tmp_path, salt_file):
    """R2Gen ships MIMIC-CXR as ``mimic_cxr/images/p10/.../<dicom_id>.jpg`` with an
    ``annotation.json`` of the same shape: its entries are no IU reports, so MIMIC's own
    tables and reports still apply (the IU reader took them: views UNKNOWN, no StudyDate,
    R2Gen's findings-only text as an IU report)."""
    import layouts_support as layouts
    import mimic4_support as m4

    root = tmp_path / "mimic_cxr"
    images = layouts.mimic_tree(root).rename(root / "images")
    m4.write_cxr_metadata(root)
    entries = [
        {"id": dicom_id, "study_id": int(study[1:]), "subject_id": int(patient[1:]),
         "report": "The lungs are clear.", "split": "train",
         "image_path": [f"{patient[:3]}/{patient}/{study}/{dicom_id}.jpg"]}
        for patient, study, dicom_id in layouts.MIMIC_FILES
    ]  # fmt: skip
    (root / "annotation.json").write_text(json.dumps({"train": entries, "val": [], "test": []}))
    art, rows = _ingest(tmp_path, salt_file, [images])
    assert art.stats["dataset_tables"] == ["mimic-cxr-2.0.0-metadata.csv"]
    assert {r["view"] for r in rows} == {"PA", "LATERAL"}
    assert all(r["study_date"] for r in rows) and "r2gen" not in art.stats["report_source_counts"]


def test_an_annotation_nested_past_the_json_reader_s_depth_is_an_input_error(tmp_path):
    """A hostile or broken annotation.json nested deeper than Python's json reader goes
    (RecursionError) is a one-line InputError naming the file, not a traceback."""
    path = tmp_path / "annotation.json"
    path.write_text('{"train": [' + "[" * 100_000 + "]" * 100_000 + "]}")
    with pytest.raises(InputError, match="cannot read R2Gen annotation .*annotation.json"):
        IuTables.read([path])


def test_an_annotation_json_of_another_shape_is_not_read(tmp_path):
    (tmp_path / "annotation.json").write_text('{"images": [], "annotations": []}')
    assert find_tables([str(tmp_path)]) == []


def test_a_report_row_without_text_gives_no_report_and_a_repeated_row_is_one(tmp_path):
    path = tmp_path / "indiana_reports.csv"
    path.write_text("uid,findings,impression\n1,,\n1,,\n2,Clear lungs.,Normal.\n")
    tables = IuTables.read([path])
    empty = tables.for_image(tmp_path / "1_IM-0001-4001.dcm.png")
    assert (empty.key, empty.view, empty.report) == ("iu:CXR1", None, None)
    kept = tables.for_image(tmp_path / "2_IM-0652-1001.dcm.png").report
    assert kept.text == "FINDINGS: Clear lungs.\n\nIMPRESSION: Normal."
    assert tables.for_image(tmp_path / "scan_0001.png") is None


def test_a_mimic_table_row_with_an_extra_field_is_refused_with_its_line(tmp_path):
    from cxrkit.io.tables import DatasetTables

    path = tmp_path / "mimic-cxr-2.0.0-metadata.csv"
    path.write_text("dicom_id,ViewPosition\nabc,PA\ndef,AP,LATERAL\n")
    with pytest.raises(InputError, match=r"metadata\.csv:3: more fields than the header"):
        DatasetTables.read([path])


@pytest.mark.parametrize("name", ["indiana_reports.csv", "annotation.json"])
def test_an_iu_copy_table_given_as_reports_says_where_it_belongs(tmp_path, name):
    from cxrkit.io.report_index import ReportIndex

    (tmp_path / name).write_text("uid,findings,impression\n")
    with pytest.raises(InputError, match="give the images folder as the source"):
        ReportIndex.build(tmp_path / name)
