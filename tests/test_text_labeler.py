"""CheXpert-style labels: aggregation, No Finding, sections, garbage rows."""

from __future__ import annotations

import math

import pytest

from cxrkit.text.labeler import CHEXPERT_CLASSES, Labeler, format_label


@pytest.fixture(scope="module")
def labeler():
    return Labeler()


def _labels(labeler, text: str) -> dict[str, float]:
    ((labels, _),) = labeler.label([text])
    return {c: v for c, v in zip(CHEXPERT_CLASSES, labels, strict=True) if not math.isnan(v)}


def test_classes_are_the_14_chexpert_observations_in_order():
    assert len(CHEXPERT_CLASSES) == 14
    assert CHEXPERT_CLASSES[0] == "No Finding" and CHEXPERT_CLASSES[-1] == "Support Devices"


def test_positive_uncertain_and_negative_mentions(labeler):
    labels = _labels(labeler, "FINDINGS: Cardiomegaly. Possible pneumonia. No pneumothorax.")
    assert labels == {"Cardiomegaly": 1.0, "Pneumonia": -1.0, "Pneumothorax": 0.0}


def test_a_positive_mention_wins_over_a_negative_one(labeler):
    labels = _labels(labeler, "No left effusion. Small right pleural effusion.")
    assert labels["Pleural Effusion"] == 1.0


def test_no_finding_ignores_support_devices(labeler):
    labels = _labels(labeler, "Right PICC tip in the SVC. No pneumothorax or effusion.")
    assert labels == {"No Finding": 1.0, "Support Devices": 1.0, "Pneumothorax": 0.0,
                      "Pleural Effusion": 0.0}  # fmt: skip


def test_no_finding_is_blank_when_a_finding_is_uncertain(labeler):
    assert "No Finding" not in _labels(labeler, "Possible small effusion.")


def test_a_finding_outside_the_14_blocks_no_finding(labeler):
    assert "No Finding" not in _labels(labeler, "Calcified granuloma. No effusion.")


def test_a_positive_child_leaves_lung_opacity_as_mentioned(labeler):
    labels = _labels(labeler, "Right lower lobe consolidation.")
    assert labels == {"Consolidation": 1.0}  # Lung Opacity stays blank (no propagation)


def test_indication_and_history_never_make_labels(labeler):
    text = "INDICATION: Pneumonia?\n\nHISTORY: effusion.\n\nFINDINGS: The lungs are clear."
    assert _labels(labeler, text) == {"No Finding": 1.0}
    assert _labels(Labeler(sections="findings+impression"), text) == {"No Finding": 1.0}


@pytest.mark.parametrize("text", ["", "   ", "1234 5678", "... --- ...", None])
def test_texts_without_a_letter_are_all_blank(labeler, text):
    assert _labels(labeler, text) == {}


@pytest.mark.parametrize(
    "text", ["asdf qwerty zxcv", "肺部清晰，无胸腔积液。", "Comparison is made."]
)
def test_a_text_with_no_mention_is_no_finding_as_in_chexpert(labeler, text):
    # stages/aggregate.py starts every report at no_finding = True.
    assert _labels(labeler, text) == {"No Finding": 1.0}


def test_format_label_matches_the_chexpert_csv():
    assert [format_label(v) for v in (1.0, 0.0, -1.0, float("nan"))] == ["1.0", "0.0", "-1.0", ""]


# Robustness on real report text: list numbering, wrapped lines, hedges, other organs.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("IMPRESSION: 1.Cardiomegaly 2.no pleural effusion 3.no pneumothorax",
         {"Cardiomegaly": 1.0, "Pleural Effusion": 0.0, "Pneumothorax": 0.0}),
        ("No pleural\neffusion.", {"No Finding": 1.0, "Pleural Effusion": 0.0}),
        ("Small left pleural\neffusion.", {"Pleural Effusion": 1.0}),
        ("Cardiomegaly.\nNo effusion.", {"Cardiomegaly": 1.0, "Pleural Effusion": 0.0}),
        ("Mild scarring and/or atelectasis at the bases.",
         {"Lung Opacity": -1.0, "Atelectasis": -1.0}),
        ("Left basilar atelectasis/infiltrate.", {"Atelectasis": -1.0, "Lung Opacity": -1.0}),
        # a bone lesion is a finding (No Finding stays blank), not a Lung Lesion
        ("Lytic lesion of the left humerus. Lungs are clear.", {}),
        ("Lucent lesion with a sclerotic margin in the right humeral head.", {}),
        ("Expansile lesion of the right posterior 9th rib.", {}),
        ("Findings discussed with Dr. X on the telephone line. No pneumothorax.",
         {"No Finding": 1.0, "Pneumothorax": 0.0}),
        ("Results given via the consult line.", {"No Finding": 1.0}),
        ("A visceral pleural line is seen at the right apex.", {"No Finding": 1.0}),
        ("Bilateral reticular pattern.", {"Lung Opacity": 1.0}),
        ("Peribronchial thickening.", {"Lung Opacity": 1.0}),
        # crowded markings of low volumes are not an opacity (a finding all the same)
        ("Low lung volumes with bronchovascular crowding.", {}),
        # a broken device is a device, not a Fracture
        ("Left central venous catheter fracture at the clavicle.",
         {"No Finding": 1.0, "Support Devices": 1.0}),
        ("Pacemaker with a fractured proximal lead. Old right rib fracture.",
         {"Support Devices": 1.0, "Fracture": 1.0}),
        ("The lateral most screw of the clavicular fixation plate is fractured.",
         {"No Finding": 1.0, "Support Devices": 1.0}),
        ("Clavicle fixation plate with fracture of the lateral most fixation screw.",
         {"No Finding": 1.0, "Support Devices": 1.0}),
        ("Calcified nodes from prior histoplasmosis infection.", {}),
        # findings outside the 14 keep No Finding blank
        ("The lungs appear clear. Lung volumes are low.", {}),
        ("The lungs are hypoventilated. No focal consolidation.", {"Consolidation": 0.0}),
        ("Lung volumes are normal.", {"No Finding": 1.0}),
        # a calcified nodule with size and site words between is still calcified ...
        ("Stable 5 mm calcified right upper lobe nodule.", {}),
        # ... but "calcified" does not reach past a granuloma to a new nodule
        ("Calcified granuloma and a new right upper lobe nodule.", {"Lung Lesion": 1.0}),
        ("Heart size and mediastinal contours are stable and within normal limits.",
         {"No Finding": 1.0, "Cardiomegaly": 0.0, "Enlarged Cardiomediastinum": 0.0}),
        # CheXpert's "nodular opacities" is a substring of these; fibronodular names nodules
        ("Multiple reticular-nodular opacities in the upper lobes bilaterally.",
         {"Lung Opacity": 1.0, "Lung Lesion": 1.0}),
        ("Reticulonodular opacities at the bases.", {"Lung Opacity": 1.0, "Lung Lesion": 1.0}),
        ("Reticulonodular changes in the left lung base.", {"Lung Opacity": 1.0}),
        ("Minimal fibronodular scarring right apex, otherwise lungs clear.",
         {"Lung Opacity": 1.0, "Lung Lesion": 1.0}),
        # CheXpert's "nodular opacity" with the site or kind between
        ("Nodular right lower lobe opacity.", {"Lung Opacity": 1.0, "Lung Lesion": 1.0}),
        ("Mixed nodular interstitial opacities distributed through bilateral lungs.",
         {"Lung Opacity": 1.0, "Lung Lesion": 1.0}),
        # a density is a Lung Opacity mention; the longer "nodular density" keeps that
        ("Nodular densities consistent with chronic granulomatous disease.",
         {"Lung Opacity": 1.0, "Lung Lesion": 1.0}),
        # CheXpert's "interstitial lung" (lung_opacity.txt), not only "... lung disease"
        ("Chronically increased interstitial lung markings without focal airspace disease.",
         {"Lung Opacity": 1.0}),
        # no_finding.txt's "prominen" (a substring) and other findings outside the 14
        ("The heart is normal in size. Prominent hilar vessels.", {"Cardiomegaly": 0.0}),
        ("The lungs are clear. Multilevel cervical arthritis.", {}),
        ("Low volume lungs. The heart is not enlarged.", {"Cardiomegaly": 0.0}),
        ("Mild dextro curvature of the thoracic spine.", {}),
        # a density of bone is a finding, not a Lung Opacity (lung_opacity.txt: "increased
        # density" only; "density" is a no_finding.txt phrase)
        ("Corticated bony density over the lateral aspect of the clavicle.", {}),
        ("Vague density in the right lower lung.", {"Lung Opacity": 1.0}),
        # abdominal surgical clips: neither a chest device nor a finding (CheXpert has no "clip")
        ("Cholecystectomy clips are present. The lungs are clear.", {"No Finding": 1.0}),
        # a template that drops the "of" of "clear of"
        ("Lungs are expanded and clear airspace disease. Negative for pneumothorax.",
         {"No Finding": 1.0, "Lung Opacity": 0.0, "Pneumothorax": 0.0}),
        ("Small medial left upper lobe pleural air collection.", {"Pneumothorax": 1.0}),
        ("No pleural air collections. Lungs are clear.", {"No Finding": 1.0, "Pneumothorax": 0.0}),
        ("Lungs are clear. Negative acute cardiopulmonary abnormality.", {"No Finding": 1.0}),
        ("Right chest drain. Left chest wall mediport.",
         {"No Finding": 1.0, "Support Devices": 1.0}),
        # "defib" is also a no_finding.txt phrase: it blocks No Finding (CheXpert).
        ("Right chest drain and defibrillator pads. Left chest wall mediport.",
         {"Support Devices": 1.0}),
    ],
)  # fmt: skip
def test_real_text_quirks(labeler, text, expected):
    assert _labels(labeler, text) == expected


@pytest.fixture(scope="module")
def iu_reports():
    from cxrkit.io.reports import iter_iu_reports

    return {str(r.uid): r.text for r in iter_iu_reports()}


@pytest.mark.parametrize(
    ("uid", "expected"),
    [
        # "mild XXXX scarring and/or atelectasis in the lung bases" (FINDINGS)
        ("CXR1075", {"Atelectasis": -1.0}),
        # "Question of left lower lobe pneumonia and/or pleural effusion. 2. Borderline heart size"
        ("CXR1076", {"Pneumonia": -1.0, "Pleural Effusion": -1.0, "Cardiomegaly": -1.0}),
        # "Expansile lesion of the right posterior 9th rib ... multiple myeloma": not the lung
        ("CXR146", {"Lung Lesion": None}),
        # results given "by telephone": not a device
        ("CXR249", {"Support Devices": None}),
    ],
)
def test_real_iu_reports(iu_reports, uid, expected):
    ((labels, _),) = Labeler(sections="findings+impression").label([iu_reports[uid]])
    got = dict(zip(CHEXPERT_CLASSES, labels, strict=True))
    for name, value in expected.items():
        assert math.isnan(got[name]) if value is None else got[name] == value, (name, got[name])


def test_impression_policy_reads_only_the_impression_of_a_real_report(iu_reports):
    text = iu_reports["CXR1075"]  # scarring / atelectasis in FINDINGS only
    ((labels, _),) = Labeler().label([text])
    assert math.isnan(labels[CHEXPERT_CLASSES.index("Atelectasis")])
