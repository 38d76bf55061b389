"""Report parsing: MIMIC-style free text, the real IU XML reports, report index, mapping CSV."""

from __future__ import annotations

import importlib.util
import tarfile

import pytest

from cxrkit.errors import InputError, Reject
from cxrkit.io.mapping import read_mapping_csv
from cxrkit.io.report_index import ReportIndex, patient_study_for_image
from cxrkit.io.reports import (
    iter_iu_reports,
    parse_iu_xml,
    parse_report_text,
    section_spans,
    split_sections,
)

needs_txv = pytest.mark.skipif(
    importlib.util.find_spec("torchxrayvision") is None,
    reason="the IU reports ship with torchxrayvision (pip install --no-deps torchxrayvision)",
)

MIMIC_REPORT = """\
WET READ: ___ ___ ___ 4:17 PM
  No acute process.
______________________________________________________________________________
                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows.

 IMPRESSION:

 No acute cardiopulmonary process.
"""


# ---------------------------------------------------------------- section splitting


def test_mimic_report_splits_into_its_sections():
    sections = split_sections(MIMIC_REPORT)
    assert sections["findings"] == (
        "There is no focal consolidation, pleural effusion or pneumothorax. "
        "Bilateral nodular opacities that most likely represent nipple shadows."
    )
    assert sections["impression"] == "No acute cardiopulmonary process."
    assert sections["indication"] == "___F with new onset ascites // eval for infection"
    assert sections["comparison"] == "None."
    assert sections["technique"] == "Chest PA and lateral"
    assert sections["examination"] == "CHEST (PA AND LAT)"


def test_wet_read_preamble_stays_out_of_findings_and_text():
    report = parse_report_text(MIMIC_REPORT, source="mimic")
    assert split_sections(MIMIC_REPORT)["wet_read"] == "___ ___ ___ 4:17 PM No acute process."
    assert "4:17 PM" not in report.text
    assert report.text.startswith("FINDINGS: There is no focal consolidation")
    assert "\n\nIMPRESSION: No acute cardiopulmonary process.\n\n" in report.text


def test_inline_headers_keep_the_text_after_the_colon():
    sections = split_sections("FINDINGS: Lungs are clear.\nIMPRESSION: Normal.")
    assert sections == {"findings": "Lungs are clear.", "impression": "Normal."}


def test_headers_match_in_any_case_inline_or_alone_on_a_line():
    report = parse_report_text("findings:\nno effusion.\n\nImpression\nnormal chest.")
    assert (report.findings, report.impression) == ("no effusion.", "normal chest.")


def test_missing_findings_leaves_findings_none():
    report = parse_report_text("INDICATION: cough\nIMPRESSION: No pneumonia.")
    assert report.findings is None
    assert report.impression == "No pneumonia."
    assert report.indication == "cough"
    assert report.text == "IMPRESSION: No pneumonia.\n\nINDICATION: cough"


def test_final_report_preamble_title_is_not_findings():
    text = (
        "                FINAL REPORT\n CHEST RADIOGRAPH PERFORMED ON ___\n\n"
        " CLINICAL HISTORY:  Fever.\n\n FINDINGS:  No focal consolidation.\n\n"
        " CONCLUSION:  No pneumonia."
    )
    report = parse_report_text(text)
    assert report.findings == "No focal consolidation."
    assert report.impression == "No pneumonia."  # CONCLUSION is the impression
    assert report.history == "Fever."
    assert "PERFORMED" not in report.text


def test_unheaded_body_after_comparison_becomes_findings():
    report = parse_report_text("COMPARISON: None.\n\nThe lungs are clear.\n\nIMPRESSION: Normal.")
    assert report.comparison == "None."
    assert report.findings == "The lungs are clear."


def test_unknown_layout_keeps_raw_text_and_no_sections():
    text = "  Heart size normal.\nLungs clear.  "
    report = parse_report_text(text)
    assert (report.findings, report.impression) == (None, None)
    assert report.text == "Heart size normal.\nLungs clear."
    assert report.source == "text"


def test_unknown_all_caps_header_ends_the_findings():
    sections = split_sections(
        "FINDINGS: Small left effusion.\nRECOMMENDATION(S): Follow-up.\nNOTE TO CLINICIAN: call"
    )
    assert sections["findings"] == "Small left effusion."
    assert sections["recommendation"] == "Follow-up."
    assert sections["note to clinician"] == "call"


def test_repeated_impressions_are_joined():
    sections = split_sections("IMPRESSION: Edema.\nADDENDUM: reviewed.\nIMPRESSION: Unchanged.")
    assert sections["impression"] == "Edema. Unchanged."
    assert sections["addendum"] == "reviewed."


def test_a_sentence_starting_with_a_header_word_is_not_a_header():
    sections = split_sections("FINDINGS:\nImpression on the trachea by a goiter.\nFindings stable.")
    assert sections == {"findings": "Impression on the trachea by a goiter. Findings stable."}


def test_section_spans_are_offsets_into_the_text():
    text = "FINDINGS:  Lungs clear. \n\nIMPRESSION: Normal."
    spans = section_spans(text)
    assert spans == [("findings", 11, 23), ("impression", 38, 45)]
    assert [text[s:e] for _, s, e in spans] == ["Lungs clear.", "Normal."]


# ---------------------------------------------------------------- IU XML (real data)


@pytest.fixture(scope="module")
def iu_reports():
    return list(iter_iu_reports())


@needs_txv
def test_all_3955_iu_reports_parse_with_recorded_section_counts(iu_reports):
    counts = {
        "total": len(iu_reports),
        "findings": sum(r.findings is not None for r in iu_reports),
        "impression": sum(r.impression is not None for r in iu_reports),
        "both": sum(r.findings is not None and r.impression is not None for r in iu_reports),
        "mesh": sum(bool(r.mesh) for r in iu_reports),
        "images": sum(len(r.images) for r in iu_reports),
    }
    print("IU report counts:", counts)
    # Counted once by hand from the XML (AbstractText elements with text, parentImage ids).
    assert counts == {
        "total": 3955,
        "findings": 3425,
        "impression": 3921,
        "both": 3419,
        "mesh": 3955,
        "images": 7470,
    }
    assert all(r.source == "iu_xml" for r in iu_reports)


@needs_txv
def test_iu_report_cxr1_fields(iu_reports):
    first = next(r for r in iu_reports if r.uid == "CXR1")
    assert first.findings.startswith("The cardiac silhouette and mediastinum size are within")
    assert first.impression == "Normal chest x-XXXX."
    assert (first.indication, first.comparison) == ("Positive TB test", "None.")
    assert first.mesh == ["normal"]
    assert first.images == ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]
    assert first.text.startswith("FINDINGS: The cardiac silhouette")
    assert "\n\nIMPRESSION: Normal chest x-XXXX." in first.text


@needs_txv
def test_iu_mesh_terms_keep_their_qualifiers(iu_reports):
    terms = {term for r in iu_reports for term in r.mesh}
    assert {"normal", "Cardiomegaly/mild", "Lung/hypoinflation"} <= terms
    assert sum(r.mesh == ["normal"] for r in iu_reports) == 1391


@needs_txv
def test_iu_parent_image_ids_are_unique(iu_reports):
    ids = [image for r in iu_reports for image in r.images]
    assert len(ids) == len(set(ids))


@needs_txv
def test_report_index_maps_iu_images_by_parent_image_id(iu_reports):
    from cxrkit.io.bundled import iu_reports_archive

    index = ReportIndex.build(iu_reports_archive())
    assert len(index) == 3955
    assert index.for_image("/data/iu/CXR1_1_IM-0001-4001.png").uid == "CXR1"
    assert index.for_image("CXR1_1_IM-0001-3001_resized.jpg").uid == "CXR1"  # stem prefix
    assert index.for_image("/data/iu/CXR1_1_IM-0001-9999.png") is None
    sample = iu_reports[1234]
    assert index.for_image(f"{sample.images[0]}.dcm").uid == sample.uid


XML = (
    '<?xml version="1.0" encoding="utf-8"?><eCitation><uId id="CXR9"/><Abstract>'
    '<AbstractText Label="FINDINGS">Heart  normal.</AbstractText>'
    '<AbstractText Label="IMPRESSION">No acute disease.</AbstractText></Abstract>'
    "<MeSH><major>normal</major><automatic>automatic term</automatic></MeSH>"
    '<parentImage id="CXR9_IM-0001-1001"/></eCitation>'
)


def test_iu_xml_reads_bytes_text_and_path_alike(tmp_path):
    path = tmp_path / "9.xml"
    path.write_text(XML)
    reports = [parse_iu_xml(XML.encode()), parse_iu_xml(XML), parse_iu_xml(path)]
    assert reports[0] == reports[1] == reports[2]
    assert reports[0].findings == "Heart normal."
    assert (reports[0].mesh, reports[0].mesh_automatic) == (["normal"], ["automatic term"])
    assert reports[0].images == ["CXR9_IM-0001-1001"]


def test_iu_xml_with_a_doctype_is_refused():
    bomb = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><eCitation>&a;</eCitation>'
    with pytest.raises(InputError, match="DOCTYPE"):
        parse_iu_xml(bomb)


def test_malformed_or_foreign_xml_is_an_input_error():
    with pytest.raises(InputError, match="not well-formed"):
        parse_iu_xml("<eCitation><uId></eCitation>", name="broken.xml")
    with pytest.raises(InputError, match="not an IU report"):
        parse_iu_xml("<html/>")


def test_iu_archive_that_is_not_a_tarball_is_an_input_error(tmp_path):
    fake = tmp_path / "reports.tgz"
    fake.write_bytes(b"not a tarball")
    with pytest.raises(InputError, match="reports.tgz"):
        list(iter_iu_reports(fake))


def test_report_index_over_a_directory_of_iu_xml(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "9.xml").write_text(XML)
    index = ReportIndex.build(tmp_path)
    assert index.for_image("images/CXR9_IM-0001-1001.png").impression == "No acute disease."
    assert index.for_image("images/CXR9_IM-0001-1002.png") is None


def test_iu_tarball_streams_without_extracting(tmp_path):
    member = tmp_path / "9.xml"
    member.write_text(XML)
    archive = tmp_path / "mini.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(member, arcname="ecgen-radiology/9.xml")
    member.unlink()
    assert [r.uid for r in iter_iu_reports(archive)] == ["CXR9"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mini.tgz"]


# ---------------------------------------------------------------- MIMIC tree


@pytest.fixture
def mimic_tree(tmp_path):
    root = tmp_path / "files"
    study = root / "p10" / "p10000032" / "s50414267"
    other = root / "p10" / "p10000032" / "s53189527"
    for folder in (study, other):
        folder.mkdir(parents=True)
    (root / "p10" / "p10000032" / "s50414267.txt").write_text(MIMIC_REPORT)
    (root / "p10" / "p10000032" / "s53189527.txt").write_text("IMPRESSION: Cardiomegaly.")
    (study / "02aa804e-bde0afdd.dcm").write_bytes(b"")
    return root


def test_mimic_images_map_to_their_study_report(mimic_tree):
    index = ReportIndex.build(mimic_tree)
    assert len(index) == 2
    image = mimic_tree / "p10/p10000032/s50414267/02aa804e-bde0afdd.dcm"
    report = index.for_image(image)
    assert report.source == "mimic" and report.uid == "s50414267"
    assert report.impression == "No acute cardiopulmonary process."
    other = index.for_image("/elsewhere/jpg/p10/p10000032/s53189527/x.jpg")
    assert other.impression == "Cardiomegaly."
    assert index.for_image("/elsewhere/p10/p10000032/s59999999/x.jpg") is None


def test_mimic_report_is_read_once_per_study(mimic_tree):
    index = ReportIndex.build(mimic_tree)
    first = index.for_image("p10000032/s50414267/a.dcm")
    assert index.for_image("p10000032/s50414267/b.dcm") is first


def test_patient_and_study_come_from_the_mimic_layout():
    path = "/d/files/p10/p10000032/s50414267/02aa804e.dcm"
    assert patient_study_for_image(path) == ("p10000032", "s50414267")
    assert ReportIndex.patient_study_for_image(path) == ("p10000032", "s50414267")
    assert patient_study_for_image("/d/images/s50414267/02aa804e.dcm") is None


def test_single_text_report_applies_to_every_image(tmp_path):
    path = tmp_path / "report.txt"
    path.write_text("FINDINGS: Clear.\nIMPRESSION: Normal.")
    index = ReportIndex.build(path)
    assert index.for_image("any.png").impression == "Normal."
    assert index.for_image("other.dcm").uid == "report"


def test_sidecar_text_reports_match_the_image_stem(tmp_path):
    (tmp_path / "chest01.txt").write_text("IMPRESSION: Left effusion.")
    index = ReportIndex.build(tmp_path)
    assert index.for_image("/images/chest01.png").impression == "Left effusion."
    assert index.for_image("/images/chest02.png") is None


def test_report_index_without_reports_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no reports"):
        ReportIndex.build(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        ReportIndex.build(tmp_path / "missing")


# ---------------------------------------------------------------- mapping CSV


def _csv(tmp_path, text: str):
    path = tmp_path / "mapping.csv"
    path.write_text(text)
    return path


def test_mapping_csv_reads_paths_ids_split_and_labels(tmp_path):
    (tmp_path / "r1.txt").write_text("FINDINGS: Clear.\nIMPRESSION: Normal.")
    path = _csv(
        tmp_path,
        "image_path,report_path,report_text,study_id,patient_id,split,cardiomegaly,"
        "Pleural_Effusion,No Finding,comment\n"
        "img/a.png,r1.txt,,s1,p1,TRAIN,1,,0,x\n"
        '/abs/b.dcm,,"IMPRESSION: Mild edema.",,,,-1,0.0,,y\n',
    )
    first, second = read_mapping_csv(path)
    assert first.image_path == tmp_path / "img" / "a.png"
    assert first.report_path == tmp_path / "r1.txt"
    assert (first.study_id, first.patient_id, first.split) == ("s1", "p1", "train")
    assert first.labels == {"Cardiomegaly": 1.0, "No Finding": 0.0}
    assert str(second.image_path) == "/abs/b.dcm" and second.report_path is None
    assert (second.study_id, second.split) == (None, None)
    assert second.labels == {"Cardiomegaly": -1.0, "Pleural Effusion": 0.0}
    assert first.load_report().impression == "Normal."
    assert first.load_report().source == "mapping"
    assert second.load_report().impression == "Mild edema."


def test_mapping_row_without_a_report_loads_none(tmp_path):
    (row,) = read_mapping_csv(_csv(tmp_path, "image_path,report_text\na.png,\n"))
    assert row.load_report() is None


def test_mapping_report_file_missing_is_a_per_item_reject(tmp_path):
    (row,) = read_mapping_csv(_csv(tmp_path, "image_path,report_path\na.png,gone.txt\n"))
    with pytest.raises(Reject) as caught:
        row.load_report()
    assert caught.value.reason == "report_unreadable"


def test_mapping_csv_needs_an_image_path_column(tmp_path):
    with pytest.raises(InputError, match="image_path"):
        read_mapping_csv(_csv(tmp_path, "path,report_text\na.png,x\n"))


def test_mapping_csv_needs_a_report_column(tmp_path):
    with pytest.raises(InputError, match="report_path or report_text"):
        read_mapping_csv(_csv(tmp_path, "image_path,split\na.png,train\n"))


def test_mapping_csv_row_without_image_path_names_the_line(tmp_path):
    with pytest.raises(InputError, match=r"mapping\.csv:3: image_path is empty"):
        read_mapping_csv(_csv(tmp_path, "image_path,report_text\na.png,x\n,y\n"))


def test_mapping_csv_bad_split_names_the_line(tmp_path):
    with pytest.raises(InputError, match=r"mapping\.csv:2: split 'training'"):
        read_mapping_csv(_csv(tmp_path, "image_path,report_text,split\na.png,x,training\n"))


def test_mapping_csv_bad_label_value_names_the_column(tmp_path):
    with pytest.raises(InputError, match=r":2: label Edema='yes'"):
        read_mapping_csv(_csv(tmp_path, "image_path,report_text,Edema\na.png,x,yes\n"))


def test_mapping_csv_with_extra_fields_is_refused(tmp_path):
    with pytest.raises(InputError, match="more fields than the header"):
        read_mapping_csv(_csv(tmp_path, "image_path,report_text\na.png,x,extra\n"))


def test_unreadable_mapping_csv_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot read mapping CSV"):
        read_mapping_csv(tmp_path / "missing.csv")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81image_path")
    with pytest.raises(InputError, match="binary.csv"):
        read_mapping_csv(binary)
    with pytest.raises(InputError, match="empty"):
        read_mapping_csv(_csv(tmp_path, ""))


@needs_txv
def test_iu_report_text_reparses_to_the_same_sections(iu_reports):
    # The demo and mapping CSVs hand Report.text back to parse_report_text.
    for report in iu_reports:
        again = parse_report_text(report.text, source="mapping")
        assert (again.findings, again.impression, again.text) == (
            report.findings,
            report.impression,
            report.text,
        ), report.uid
        assert (again.indication, again.comparison) == (report.indication, report.comparison)


def test_mimic_report_text_reparses_to_the_same_report():
    report = parse_report_text(MIMIC_REPORT, source="mimic")
    assert parse_report_text(report.text, source="mimic") == report


def test_all_caps_subtitle_right_under_a_header_stays_in_that_section():
    text = (
        "FINDINGS:\n PA AND LATERAL VIEWS OF THE CHEST: The lungs are clear.\nIMPRESSION: Normal."
    )
    sections = split_sections(text)
    assert sections["findings"] == "PA AND LATERAL VIEWS OF THE CHEST: The lungs are clear."
    assert sections["impression"] == "Normal."


def test_stray_xml_in_a_report_tree_is_skipped(tmp_path, caplog):
    (tmp_path / "9.xml").write_text(XML)
    (tmp_path / "pom.xml").write_text("<project/>")
    index = ReportIndex.build(tmp_path)
    assert len(index) == 1
    assert "pom.xml" in caplog.text


def test_report_index_refuses_a_mapping_csv(tmp_path):
    path = _csv(tmp_path, "image_path,report_text\na.png,x\n")
    with pytest.raises(InputError, match="mapping CSV"):
        ReportIndex.build(path)
