"""The labeler on report text as users feed it: MIMIC-CXR free text, Stanford / CheXpert-plus
layout, IU "XXXX" marks, and encoding debris (CRLF, tabs, unicode spaces and dashes, HTML
entities, all caps).

The MIMIC-style and Stanford-style reports here are synthetic: written for these tests in
those formats (caps headers, ~80-column wrapping with a leading space, ``___`` placeholders,
WET READ blocks, numbered impressions, END OF IMPRESSION / attestation footers).
"""

from __future__ import annotations

import math

import pytest

from cxrkit.text.entities import readable_text
from cxrkit.text.labeler import CHEXPERT_CLASSES, Labeler


@pytest.fixture(scope="module")
def labeler():
    return Labeler()


@pytest.fixture(scope="module")
def whole_report(labeler):
    """The findings+impression policy (what ``cxrkit annotate`` uses), same pipeline."""
    return Labeler(extractor=labeler.extractor, sections="findings+impression")


def _labels(labeler, text: str) -> dict[str, float]:
    ((labels, _),) = labeler.label([text])
    return {c: v for c, v in zip(CHEXPERT_CLASSES, labels, strict=True) if not math.isnan(v)}


def _mentions(labeler, text: str) -> list[tuple[str, str]]:
    ((_, entities),) = labeler.label([text])
    return [(e.text, e.chexpert) for e in entities if e.chexpert]


# ------------------------------------------------------------------ whitespace and wrapping


# MIMIC wraps at ~80 columns and indents every line with a space; a break (and its
# indentation) inside a cue or a phrase must not split it.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("IMPRESSION: \n \n Right basilar opacity, possibly atelectasis, though pneumonia cannot be\n"
         " excluded.", {"Lung Opacity": 1.0, "Atelectasis": -1.0, "Pneumonia": -1.0}),
        ("IMPRESSION:  Endotracheal\n tube terminates 4 cm above the carina.",
         {"No Finding": 1.0, "Support Devices": 1.0}),
        ("IMPRESSION:  Moderate pulmonary\n    edema.", {"Edema": 1.0}),
        ("IMPRESSION:  No focal consolidation,  pleural  effusion or pneumothorax.",
         {"No Finding": 1.0, "Consolidation": 0.0, "Pleural Effusion": 0.0, "Pneumothorax": 0.0}),
        ("IMPRESSION: No\tpleural\teffusion.\tMild\tcardiomegaly.",
         {"Cardiomegaly": 1.0, "Pleural Effusion": 0.0}),
        ("IMPRESSION:\r\n No pleural\r\n effusion.\r\n Small right\r\n pneumothorax.",
         {"Pleural Effusion": 0.0, "Pneumothorax": 1.0}),
    ],
)  # fmt: skip
def test_wrapped_and_padded_lines_keep_phrases_and_cues_whole(labeler, text, expected):
    assert _labels(labeler, text) == expected


def test_a_wrapped_phrase_is_one_mention_with_exact_offsets(labeler):
    text = "IMPRESSION:  Small left pleural\n    effusion.  Endotracheal\n tube in place."
    mentions = _mentions(labeler, text)
    assert mentions == [("pleural\n    effusion", "Pleural Effusion"),
                        ("Endotracheal\n tube", "Support Devices")]  # fmt: skip
    ((_, entities),) = labeler.label([text])
    assert all(text[e.start : e.end] == e.text for e in entities)


def test_a_line_break_between_list_items_still_ends_the_clause(labeler):
    # no sentence punctuation, indented continuation lines: the "no" stays on its line
    text = "IMPRESSION:\n      No pleural effusion\n      Cardiomegaly"
    assert _labels(labeler, text) == {"Cardiomegaly": 1.0, "Pleural Effusion": 0.0}


def test_readable_text_maps_every_character_back_to_the_original():
    text = "A.\r\n  b\t\tc&nbsp;d\u00a0e  \n\n\n   f pneumo\u00adthorax"
    readable, origin = readable_text(text)
    assert len(origin) == len(readable) + 1 and origin[-1] == len(text)
    assert readable == "A.\nb c d e\n\nf pneumothorax"
    assert [text[origin[i]] for i, ch in enumerate(readable) if ch.isalpha()] == list(
        "Abcdef") + list("pneumothorax")  # fmt: skip


def test_readable_text_leaves_plain_text_alone():
    text = "FINDINGS: No effusion.\n\nIMPRESSION: Normal chest."
    assert readable_text(text) == (text, None)


# ------------------------------------------------------------------ unicode and HTML debris


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("IMPRESSION: No pleural\u00a0effusion. Mild cardiomegaly.",  # no-break space
         {"Cardiomegaly": 1.0, "Pleural Effusion": 0.0}),
        ("IMPRESSION: No pleural effusion&nbsp;or pneumothorax.",  # an HTML entity
         {"No Finding": 1.0, "Pleural Effusion": 0.0, "Pneumothorax": 0.0}),
        ("IMPRESSION: Mild cardiomegaly &amp; pulmonary&#160;edema.",
         {"Cardiomegaly": 1.0, "Edema": 1.0}),
        ("IMPRESSION: Small pneumo\u00adthorax.", {"Pneumothorax": 1.0}),  # soft hyphen
        ("IMPRESSION: Small\u200b pneumothorax.", {"Pneumothorax": 1.0}),  # zero-width space
        ("IMPRESSION: \uff2e\uff4f pneumothorax.", {"No Finding": 1.0, "Pneumothorax": 0.0}),
        # a line separator is a line break, as "\n" is
        ("IMPRESSION: No pleural effusion\u2028Cardiomegaly",
         {"Cardiomegaly": 1.0, "Pleural Effusion": 0.0}),
        ("IMPRESSION: Right basilar opacity \u2014 possibly atelectasis. No pneumothorax.",
         {"Lung Opacity": 1.0, "Atelectasis": -1.0, "Pneumothorax": 0.0}),
        ("IMPRESSION: \u201cNo acute disease.\u201d", {"No Finding": 1.0}),
    ],
)  # fmt: skip
def test_unicode_spaces_dashes_and_html_entities(labeler, text, expected):
    assert _labels(labeler, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FINDINGS: Cardiomegaly.<br>No pneumothorax.",
         {"Cardiomegaly": 1.0, "Pneumothorax": 0.0}),
        ("<p>FINDINGS: Mild cardiomegaly.</p><p>No pleural effusion</p>",
         {"Cardiomegaly": 1.0, "Pleural Effusion": 0.0}),
        # the header inside a tag is still the impression
        ("FINDINGS: Small left effusion.<BR/><b>IMPRESSION:</b> No acute disease.<br/>"
         "Left lower lobe pneumonia.", {"Pneumonia": 1.0}),
        ("FINDINGS: Right upper lobe nodule <5 mm.", {"Lung Lesion": 1.0}),  # not a tag
    ],
)  # fmt: skip
def test_html_markup_reads_as_line_breaks_and_spaces(labeler, text, expected):
    assert _labels(labeler, text) == expected


def test_offsets_stay_exact_through_entities_and_unicode(labeler):
    text = "IMPRESSION: Small left pleural&nbsp;effusion and pneumo\u00adthorax."
    ((_, entities),) = labeler.label([text])
    assert [e.chexpert for e in entities if e.chexpert] == ["Pleural Effusion", "Pneumothorax"]
    assert all(text[e.start : e.end] == e.text for e in entities)


# ------------------------------------------------------------------ all caps


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("IMPRESSION: PNEUMONIA CANNOT BE EXCLUDED.", {"Pneumonia": -1.0}),
        ("IMPRESSION: CANNOT EXCLUDE SMALL LEFT PLEURAL EFFUSION.", {"Pleural Effusion": -1.0}),
        ("IMPRESSION: NO PLEURAL EFFUSION OR PNEUMOTHORAX. MILD CARDIOMEGALY.",
         {"Cardiomegaly": 1.0, "Pleural Effusion": 0.0, "Pneumothorax": 0.0}),
    ],
)  # fmt: skip
def test_all_caps_reports_read_like_lower_case_ones(labeler, text, expected):
    assert _labels(labeler, text) == expected
    assert _labels(labeler, text.lower()) == expected


# ------------------------------------------------------------------ MIMIC-CXR layout


# Synthetic reports in MIMIC-CXR's raw layout (not copied from any report).
def _mimic(*lines: str) -> str:
    """MIMIC-CXR's raw layout: every line, blank ones too, starts with a space."""
    return "".join(f" {line}\n" for line in lines)


MIMIC_NO_HEADERED_FINDINGS = _mimic(
    "                                FINAL REPORT",
    "EXAMINATION:  CHEST (PA AND LAT)",
    "",
    "INDICATION:  ___ year old man with cough and fever  // eval for pneumonia",
    "",
    "TECHNIQUE:  Chest PA and lateral",
    "",
    "COMPARISON:  ___",
    "",
    "PA and lateral views of the chest provided.  There is a large left pleural",
    "effusion with adjacent atelectasis.  No pneumothorax.  The heart size is",
    "normal.",
)

MIMIC_WITH_WET_READ = _mimic(
    "WET READ: ___ ___ ___ 9:15 PM",
    " Possible small left apical pneumothorax; recommend dedicated upright view.",
    "______________________________________________________________________________",
    "                                FINAL REPORT",
    "INDICATION:  ___ year old woman status post left chest tube removal.",
    "",
    "COMPARISON:  Chest radiograph from ___.",
    "",
    "FINDINGS:",
    "",
    "Left chest tube has been removed.  No pneumothorax is seen on the upright",
    "view.  The lungs are clear.  The cardiomediastinal silhouette is normal.",
)

MIMIC_AS_ABOVE = _mimic(
    "                                FINAL REPORT",
    "INDICATION:  Status post CABG.",
    "",
    "COMPARISON:  ___.",
    "",
    "FINDINGS:  As compared to the previous radiograph, the patient has been",
    "extubated.  The left chest tube is in unchanged position.  No pneumothorax.",
    "Moderate cardiomegaly with retrocardiac atelectasis.",
    "",
    "IMPRESSION:  As above.",
)

MIMIC_ADDENDUM_FIRST = _mimic(
    "                                FINAL ADDENDUM",
    "ADDENDUM:  On further review, there is a small right apical pneumothorax.",
    "Dr. ___ was paged at ___ on ___.",
    "",
    "                                FINAL REPORT",
    "FINDINGS:  The lungs are clear.  No pleural effusion.",
    "",
    "IMPRESSION:  No acute cardiopulmonary process.",
)


def test_text_after_a_one_paragraph_section_is_the_report_body(labeler, whole_report):
    expected = {"Pleural Effusion": 1.0, "Atelectasis": 1.0, "Pneumothorax": 0.0,
                "Cardiomegaly": 0.0}  # fmt: skip
    assert _labels(labeler, MIMIC_NO_HEADERED_FINDINGS) == expected
    assert _labels(whole_report, MIMIC_NO_HEADERED_FINDINGS) == expected


def test_indication_on_the_line_below_its_header_is_still_indication(whole_report):
    text = "INDICATION:\n\n ___ year old with pneumonia.\n\nFINDINGS: The lungs are clear."
    assert _labels(whole_report, text) == {"No Finding": 1.0}


def test_a_wet_read_is_superseded_by_the_final_report(labeler, whole_report):
    expected = {"No Finding": 1.0, "Pneumothorax": 0.0, "Support Devices": 0.0,
                "Enlarged Cardiomediastinum": 0.0}  # fmt: skip
    assert _labels(labeler, MIMIC_WITH_WET_READ) == expected
    assert _labels(whole_report, MIMIC_WITH_WET_READ) == expected


def test_a_wet_read_alone_is_the_report(labeler):
    text = " WET READ: ___ ___ 4:12 PM\n  Large right pleural effusion."
    assert _labels(labeler, text) == {"Pleural Effusion": 1.0}


def test_an_impression_that_says_as_above_reads_the_findings(labeler):
    assert _labels(labeler, MIMIC_AS_ABOVE) == {
        "Cardiomegaly": 1.0, "Atelectasis": 1.0, "Pneumothorax": 0.0, "Support Devices": 1.0}  # fmt: skip


def test_an_addendum_amends_the_report_wherever_it_stands(labeler, whole_report):
    assert _labels(labeler, MIMIC_ADDENDUM_FIRST) == {"Pneumothorax": 1.0}
    assert _labels(whole_report, MIMIC_ADDENDUM_FIRST) == {
        "Pneumothorax": 1.0, "Pleural Effusion": 0.0}  # fmt: skip


def test_numbered_impression_with_placeholders(labeler):
    text = (
        "                                 FINAL REPORT\n"
        " INDICATION:  ___ with hypoxia  // ?edema\n \n"
        " COMPARISON:  Chest radiograph from ___.\n \n"
        " FINDINGS:  Mild cardiomegaly.\n \n"
        " IMPRESSION: \n \n"
        " 1.  Endotracheal tube terminates 4 cm above the carina.  Nasogastric tube\n"
        " courses below the diaphragm with the tip out of view.\n"
        " 2.  Moderate pulmonary edema, increased from ___, with moderate bilateral\n"
        " pleural effusions.\n"
        " 3.  No pneumothorax.\n"
    )
    assert _labels(labeler, text) == {"Edema": 1.0, "Pleural Effusion": 1.0,
                                      "Pneumothorax": 0.0, "Support Devices": 1.0}  # fmt: skip
    ((_, entities),) = labeler.label([text])
    assert not [e for e in entities if "___" in e.text]  # a placeholder is never a mention


# ------------------------------------------------------------------ de-identification marks


# IU replaced words inside sentences with "XXXX" (4,989 marks in the development half, 271
# next to a cue and 273 next to a mention); MIMIC-CXR writes "___". A mark is an unknown
# word: it neither negates nor makes a mention, and a statement ("the heart is ... enlarged")
# reads through it as it reads through an adverb.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The heart is XXXX XXXX enlarged.", {"Cardiomegaly": 1.0}),
        ("Heart size is ___ normal.", {"No Finding": 1.0, "Cardiomegaly": 0.0}),
        ("The mediastinum appears to be XXXX unremarkable.",
         {"No Finding": 1.0, "Enlarged Cardiomediastinum": 0.0}),
        ("XXXX right pleural opacity.", {"Lung Opacity": 1.0}),
        ("No XXXX acute disease.", {"No Finding": 1.0}),
        ("No ___ pneumothorax.", {"No Finding": 1.0, "Pneumothorax": 0.0}),
        ("Opacity most XXXX representing atelectasis.", {"Lung Opacity": 1.0, "Atelectasis": 1.0}),
        ("Dr. ___ was notified at ___ on ___. No XXXX.", {"No Finding": 1.0}),
    ],
)  # fmt: skip
def test_deidentification_marks_are_unknown_words(whole_report, text, expected):
    assert _labels(whole_report, text) == expected
    ((_, entities),) = whole_report.label([text])
    assert not [e for e in entities if not e.text.strip("X_")]  # a mark is never a mention


# ------------------------------------------------------------------ Stanford / CheXpert-plus

STANFORD_REPORT = """\
NARRATIVE:
CHEST, 2 VIEWS

CLINICAL HISTORY: Cough and fever.

COMPARISON: None.

FINDINGS: Left retrocardiac opacity. The heart is normal in size. No pleural effusion.

IMPRESSION:
1. Left lower lobe opacity, possibly pneumonia.
2.No pleural effusion.

END OF IMPRESSION:

SUMMARY:
4-POSSIBLE SIGNIFICANT FINDINGS, MAY NEED ACTION

I have personally reviewed the images for this examination and agree with the findings
described above.
Physician to Physician Radiology Consult Line: (650) 555-0100
Electronically signed by: ___, MD on ___
"""


def test_stanford_report_labels_its_numbered_impression(labeler, whole_report):
    assert _labels(labeler, STANFORD_REPORT) == {
        "Lung Opacity": 1.0, "Pneumonia": -1.0, "Pleural Effusion": 0.0}  # fmt: skip
    # the attestation's "findings described above" does not make the impression point back
    assert "Cardiomegaly" not in _labels(labeler, STANFORD_REPORT)
    assert _labels(whole_report, STANFORD_REPORT) == {
        "Lung Opacity": 1.0, "Pneumonia": -1.0, "Pleural Effusion": 0.0, "Cardiomegaly": 0.0}  # fmt: skip


@pytest.mark.parametrize(
    "impression", ["As above.", "1. As described above.", "See findings.", "Findings as above.",
                   "Please see above."],
)  # fmt: skip
def test_impressions_that_point_back(labeler, impression):
    text = f"FINDINGS: Small right pleural effusion.\n\nIMPRESSION: {impression}"
    assert _labels(labeler, text) == {"Pleural Effusion": 1.0}


# ------------------------------------------------------------------ header spellings


def test_a_header_alone_on_its_line_needs_no_colon(labeler, whole_report):
    text = _mimic("INDICATION", "Pneumonia?", "", "FINDINGS", "The lungs are clear.")
    assert _labels(labeler, text) == {"No Finding": 1.0}
    assert _labels(whole_report, text) == {"No Finding": 1.0}


def test_a_header_word_inside_a_sentence_is_not_a_header(whole_report):
    text = "FINDINGS: Comparison\nwith the prior shows a new left pleural effusion."
    assert _labels(whole_report, text) == {"Pleural Effusion": 1.0}


@pytest.mark.parametrize("header", ["IMPRESSIONS", "CONCLUSIONS", "Conclusion"])
def test_plural_and_synonym_impression_headers(labeler, header):
    text = f"FINDINGS: Small left pleural effusion.\n\n{header}: No pneumothorax."
    assert _labels(labeler, text) == {"No Finding": 1.0, "Pneumothorax": 0.0}


def test_a_wrapped_all_caps_line_is_joined(labeler):
    text = ("IMPRESSION: NO FOCAL CONSOLIDATION. THERE IS NO EVIDENCE OF A PLEURAL\n"
            "EFFUSION OR PNEUMOTHORAX. MILD CARDIOMEGALY.")  # fmt: skip
    assert _labels(labeler, text) == {"Consolidation": 0.0, "Pleural Effusion": 0.0,
                                      "Pneumothorax": 0.0, "Cardiomegaly": 1.0}  # fmt: skip


def test_short_all_caps_lines_are_list_items(labeler):
    # a line that stops well before the wrap column ended there: its break ends the clause
    text = "IMPRESSION:\nNO PLEURAL EFFUSION\nCARDIOMEGALY\nNO PNEUMOTHORAX"
    assert _labels(labeler, text) == {"Pleural Effusion": 0.0, "Cardiomegaly": 1.0,
                                      "Pneumothorax": 0.0}  # fmt: skip


def test_numbered_wet_read_and_addendum_headers(whole_report):
    text = _mimic(
        "WET READ VERSION #1",
        " ___ ___ 11:02 PM  Possible right lower lobe pneumonia.",
        "______________________________________________________________________________",
        "                                FINAL REPORT",
        "FINDINGS:  The lungs are clear.  No pneumonia.",
        "",
        "ADDENDUM #1:  Small left pleural effusion, missed on the original read.",
    )
    assert _labels(whole_report, text) == {"Pneumonia": 0.0, "Pleural Effusion": 1.0}


@pytest.mark.parametrize("text", ["<br>&nbsp;</p>", "<p></p>\r\n\t", "\u00a0\u200b", "___ ___"])
def test_markup_or_placeholders_alone_are_no_report(labeler, text):
    assert _labels(labeler, text) == {}


def test_a_wrapped_line_before_a_capitalised_word_is_joined(labeler):
    # the line ran to the wrap column without a full stop: "CHF" continues the sentence
    text = _mimic(
        "IMPRESSION:  No acute cardiopulmonary process.  There is no radiographic evidence of",
        "CHF or pneumonia.",
    )
    assert _labels(labeler, text) == {"No Finding": 1.0, "Edema": 0.0, "Pneumonia": 0.0}


def test_a_header_alone_on_the_next_line_is_not_joined(labeler):
    text = _mimic(
        "FINDINGS:  There is a small left pleural effusion with adjacent basilar atelectasis",
        "IMPRESSION",
        "No pneumothorax.",
    )
    assert _labels(labeler, text) == {"No Finding": 1.0, "Pneumothorax": 0.0}


def test_debris_never_breaks_labelling_or_offsets(labeler):
    # seeded random texts made of report words and every kind of debris handled above
    import random

    pieces = ["no", "pleural", "effusion", "cannot be", "excluded", "IMPRESSION:", "FINDINGS",
              "Cardiomegaly", "PICC", "line", ".", ",", " ", "  ", "\n", "\r\n", "\n \n ", "\t",
              "\u00a0", "\u2014", "\u00ad", "\u200b", "\u2028", "&nbsp;", "&amp;", "&#160;",
              "&bogus;", "<br>", "</p>", "<b>", "<5", "XXXX", "___", "1.", "\uff2e", "\x0c",
              "\u201cno\u201d", "WET READ:", "ADDENDUM #1:", "As above."]  # fmt: skip
    rng = random.Random(16)
    texts = ["".join(rng.choice(pieces) + rng.choice(("", " ", " ")) for _ in range(rng.randint(1, 80)))
             for _ in range(300)]  # fmt: skip
    checked = 0
    for text, (labels, entities) in zip(texts, labeler.label(texts), strict=True):
        assert len(labels) == len(CHEXPERT_CLASSES)
        for entity in entities:
            assert text[entity.start : entity.end] == entity.text
            checked += 1
    assert checked > 1000
