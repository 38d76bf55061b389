"""The radiology lexicon: phrases for findings, anatomy and devices, each mapped to a CheXpert class.

The 14 CheXpert observations (Irvin et al., 2019) are recognised from their
common synonyms, plurals and spelling variants. The CheXpert labeler's own
mention lists (``phrases/mention/*.txt``, substrings there) are the floor: each
of their phrases, in a short sentence, gets its class
(``tests/test_text_chexpert_reference.py``); the rest was extended on the
even-uid half of the IU reports (see ``benchmarks/labeler.py``). Matching is
case-insensitive on whole tokens (statements: regexes over the text).

Each entry is a :class:`Term`: an entity ``label`` (FINDING / ANATOMY / DEVICE
/ NORMAL), the CheXpert class it maps to (``""`` for findings outside the 14,
e.g. granuloma, which still count as "a finding" for No Finding) and an
optional fixed ``assertion``: ``"negated"`` marks phrases that state the
absence themselves ("normal heart size" is a negative Cardiomegaly mention),
``"uncertain"`` phrases that hedge themselves ("borderline heart size") and
``"hedged"`` phrases that are uncertain unless negated (CheXpert's post-negation
uncertainty rules: "vascular congestion" is an uncertain Edema mention, "no vascular
congestion" a negative one). Entries labelled ``SHIELD`` make no entity: they only keep
their words from shorter entries ("telephone line" is not a device, "humerus lesion"
not a Lung Lesion).

Phrase lists are written compactly: ``"nodule(s), opacit(y|ies)"`` expands to
nodule, nodules, opacity, opacities (see :func:`expand`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FINDING, ANATOMY, DEVICE, NORMAL = "FINDING", "ANATOMY", "DEVICE", "NORMAL"
SHIELD = "SHIELD"  # matched only to keep its words from shorter entries; never an entity
OTHER = ""  # a finding outside the 14 CheXpert classes

_VARIANT = re.compile(r"\(([^()]*)\)")
# Organs whose lesions / masses / nodules are not Lung Lesions.
_ORGANS = (
    "humerus", "humeral", "bone", "bony", "osseous", "lytic", "sclerotic", "blastic", "liver",
    "hepatic", "renal", "kidney", "adrenal", "thyroid", "breast", "skin", "cutaneous",
    "subcutaneous", "splenic", "spleen", "rib", "vertebral", "spinal", "spine", "clavicle",
    "clavicular", "scapula", "scapular", "pancreatic", "abdominal", "nipple", "shoulder",
    "sternal", "sternum", "neck", "axillary", "axilla", "chest wall", "soft tissue",
)  # fmt: skip


def expand(spec: str) -> tuple[str, ...]:
    """Expand a comma-separated phrase list with ``stem(a|b)`` variants.

    ``"effusion(s), opacit(y|ies)"`` -> ("effusion", "effusions", "opacity",
    "opacities"); ``(s)`` alone means "with or without s".
    """
    out: list[str] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        forms = [item]
        while any(_VARIANT.search(f) for f in forms):
            grown = []
            for form in forms:
                match = _VARIANT.search(form)
                if match is None:
                    grown.append(form)
                    continue
                options = match.group(1).split("|")
                if len(options) == 1:
                    options = ["", options[0]]
                grown += [form[: match.start()] + opt + form[match.end() :] for opt in options]
            forms = grown
        out += forms
    return tuple(dict.fromkeys(f.lower() for f in out))


@dataclass(frozen=True)
class Term:
    """One lexicon entry: phrases and/or token patterns sharing a label, class and assertion."""

    label: str
    chexpert: str
    phrases: tuple[str, ...] = ()
    token_patterns: tuple[tuple[dict, ...], ...] = ()
    assertion: str = ""  # "" = context; "negated" / "uncertain" = fixed; "hedged" = see above


def _any(*words: str, op: str | None = None) -> dict:
    token: dict = {"LOWER": {"IN": list(words)}}
    if op:
        token["OP"] = op
    return token


# Lung site words (a regex alternation) of the two fillers below.
_LUNG_SITES = (
    "right|left|bilateral|upper|lower|middle|mid|midlung|lung|lobe|apical|basilar|base|hilar|"
    "perihilar|lingular|peripheral|pulmonary"
)
# Size and site words that may stand between "calcified" and "nodule".
_CALCIFIED_FILLER = {
    "REGEX": r"(?:\d+(?:\.\d+)?|mm|cm|x|small|tiny|punctate|subcentimeter|few|several|"
    rf"multiple|scattered|stable|{_LUNG_SITES}|calcified)",
    "OP": "{1,5}",
}
# Site and kind words that may stand between "nodular" and "opacity" / "density" (CheXpert's
# "nodular opacity"): "nodular right lower lobe opacity", "nodular interstitial opacities".
_NODULAR_FILLER = {
    "REGEX": rf"(?:{_LUNG_SITES}|infrahilar|suprahilar|interstitial|alveolar|airspace|"
    r"parenchymal|reticular|mixed|patchy|scattered)",
    "OP": "{1,4}",
}
# Token-pattern pieces for "the heart size is mildly enlarged" and friends.
_ADV = _any("mildly", "moderately", "markedly", "severely", "slightly", "minimally", "massively",
            "significantly", "again", "now", "still", "somewhat", "very", "grossly", "stably",
            "borderline", "likely", "probably", "possibly", op="{0,2}")  # fmt: skip
_BE = _any(
    "is",
    "are",
    "appears",
    "appear",
    "remains",
    "remain",
    "seems",
    "be",
    "was",
    "has",
    "been",
    "become",
    "becomes",
    "looks",
    "may",
    "to",
    op="{0,3}",  # "appears to be"
)  # fmt: skip
_THE = _any("the", op="?")
_HEART = _any("heart", "cardiac", "cardiopericardial")
_HEART_NOUN = _any("size", "silhouette", "silhouettes", "shadow", "contour", "contours",
                   "outline", op="?")  # fmt: skip
# Enlarged Cardiomediastinum subjects: CheXpert's mention list has "mediastinum",
# "cardiomediastinum", "contour", "mediastinal configuration / silhouette", "pericardial
# silhouette" -- the cardiomediastinal silhouette and contours are not the heart.
_MEDIASTINUM = _any("mediastinum", "cardiomediastinum", "mediastinal", "cardiomediastinal",
                    "cardiothymic", "pericardial", "hilar")  # fmt: skip
_MEDIASTINUM_NOUN = _any("silhouette", "silhouettes", "contour", "contours", "configuration",
                         "shadow", "width", "outline", op="?")  # fmt: skip
# "heart size and mediastinal contours are ...": an optional "and <one to three words>"
# after the subject; the labeler gives the statement to both classes when it names both.
_AND = {"REGEX": r"and(?:\s+(?!(?:not|no|is|are|be|was|were|may|never|without)\b)[a-z]+){1,3}",
        "OP": "?"}  # fmt: skip
_ENLARGED = _any("enlarged", "increased", "large", "prominent", "enlarging", "widened", "wide")
_NORMAL = _any("normal", "unremarkable", "nl")
_STABLE = _any("stable", "unchanged")
_LIMITS = _any("limit", "limits", "range")
# "at the upper limits of normal", "top normal", "high-normal": negative in CheXpert
# (patterns/negation.txt: limit < upper, of normal, at|within).
_UPPER_NORMAL = (_any("at", "in", "near", "within", op="?"), _THE,
                 _any("upper", "high", "top", "upper-normal", "high-normal", "top-normal"),
                 _any("limits", "limit", "range", "normal", "end", op="?"),
                 _any("of", op="?"), _any("normal", op="?"))  # fmt: skip


# Devices that break ("<device> ... is fractured", "fracture of the ... <device>").
_BROKEN_DEVICE = expand("screw(s), lead(s), catheter(s), plate(s), rod(s), hardware, line(s)")

# "... is stable / unchanged / not changed / similar to prior" (post_negation_uncertainty.txt)
_STABLE_SAYS = {
    "REGEX": r"stable|unchanged|not(?:\s+(?:significantly|appreciably|substantially))?\s+changed"
    r"|similar\s+to(?:\s+the)?(?:\s+(?:prior|previous|earlier|before|study|exam|examination|"
    r"film|radiograph)){1,2}"
}
# "no (significant / interval) change in ..." as the first word: a bare "no" is in every
# report, these phrases are rare (single spaces, as the reports write them).
_NO_CHANGE = _any("no change", "no significant change", "no interval change",
                  "no significant interval change", "no appreciable change")  # fmt: skip

# "stable and" before a normal predicate: "heart size is stable and within normal limits"
# is negative (CheXpert matches negation before post-negation uncertainty such as "stable").
_STABLE_AND = {"REGEX": r"(?:stable|unchanged)(?:\s+and)?", "OP": "?"}


def _statements(subject: tuple, noun: dict) -> dict[str, tuple]:
    """Token patterns of "<subject> [and ...] is <predicate>" by assertion ("" = positive)."""
    head = (subject, noun, _AND, _BE, _ADV)
    normal_head = (*head, _STABLE_AND, _ADV)
    return {
        "": ((*head, _ENLARGED),),
        "negated": (
            (*normal_head, _NORMAL),
            (*normal_head, _any("within"), _any("normal", "nl"), _LIMITS),
            (*normal_head, _any("normal"), _any("in"), _any("size", "contour", "configuration")),
            (*head, _any("not"), _ADV, _ENLARGED),
            (*normal_head, *_UPPER_NORMAL),
            (_NORMAL, subject, noun, _AND),
        ),
        # CheXpert (post_negation_uncertainty.txt): a stable / unchanged silhouette,
        # contour, size, heart or mediastinum is uncertain, not negative; so are "no change
        # in", "not changed", "similar to prior" and "stable appearance of" one.
        # (One regex per subject and form: each costs a match attempt at every subject word.)
        "uncertain": (
            (*head, _STABLE_SAYS),
            (_STABLE, subject, noun),
            (_NO_CHANGE, _any("in"), _THE, subject, noun),
            (_STABLE, _any("appearance"), _any("of"), _THE, subject, noun),
        ),  # fmt: skip
    }


_HEART_SAYS = _statements(_HEART, _HEART_NOUN)
_MEDIASTINUM_SAYS = _statements(_MEDIASTINUM, _MEDIASTINUM_NOUN)

TERMS: tuple[Term, ...] = (
    # ------------------------------------------------------------------ Cardiomegaly
    Term(FINDING, "Cardiomegaly", expand(
        "cardiomegaly, cardiomegally, cardiac enlargement, heart enlargement, enlarged heart, "
        "enlargement of the heart, enlarged cardiac silhouette, enlarged heart size, "
        "enlargement of the cardiac silhouette, large heart, cardiac hypertrophy, "
        "increased heart size, increased cardiac silhouette, prominent cardiac silhouette, "
        "enlarged cardiac shadow, enlarged cardiac contour(s), globular heart, "
        "cardiac silhouette enlargement, enlarged cardiopericardial silhouette, "
        "increase in heart size, interval increase in heart size, increase in cardiac size, "
        "increase in the size of the heart, increased size of the heart"),
        token_patterns=(*_HEART_SAYS[""], (_ENLARGED, _HEART, _HEART_NOUN))),
    Term(FINDING, "Cardiomegaly", assertion="uncertain", phrases=expand(
        "borderline heart size, borderline cardiac size, borderline size heart, "
        "borderline cardiac silhouette, borderline enlarged heart"), token_patterns=(
        *_HEART_SAYS["uncertain"],
        (_HEART, _HEART_NOUN, _BE, _any("borderline"),
         _any("enlarged", "large", "size", "normal", op="?")),
    )),
    Term(FINDING, "Cardiomegaly", assertion="negated", phrases=expand(
        "normal heart size, normal cardiac size, normal-sized heart, normal size heart, "
        "normal heart, normal cardiac silhouette(s), normal cardiac contour(s), "
        "normal size of the heart, top normal heart size, top-normal heart size, "
        "upper normal heart size, high normal heart size"),
        token_patterns=_HEART_SAYS["negated"]),
    # ------------------------------------------------------------------ Enlarged Cardiomediastinum
    Term(FINDING, "Enlarged Cardiomediastinum", expand(
        "widened mediastinum, mediastinal widening, widening of the mediastinum, "
        "enlarged mediastinum, mediastinal enlargement, prominent mediastinum, "
        "enlarged cardiomediastinal silhouette, widened cardiomediastinal silhouette, "
        "prominent cardiomediastinal silhouette, mediastinal mass(es), "
        "enlarged cardiomediastinum, prominent mediastinal contour(s), "
        "enlarged cardiomediastinal contour(s), cardiac silhouette and vascularity"),
        token_patterns=_MEDIASTINUM_SAYS[""]),
    Term(FINDING, "Enlarged Cardiomediastinum", assertion="uncertain",
         token_patterns=_MEDIASTINUM_SAYS["uncertain"]),
    Term(FINDING, "Enlarged Cardiomediastinum", assertion="negated", phrases=expand(
        "normal cardiomediastinal silhouette(s), normal cardiomediastinal contour(s), "
        "normal cardiomediastinal size, normal mediastinum, normal mediastinal contour(s), "
        "normal mediastinal silhouette(s), normal mediastinal width"),
        token_patterns=_MEDIASTINUM_SAYS["negated"]),
    # ------------------------------------------------------------------ Lung Opacity
    Term(FINDING, "Lung Opacity", expand(
        "opacit(y|ies), opacification(s), opacified, densit(y|ies), increased densit(y|ies), "
        "infiltrate(s), infiltration(s), infiltrative, haziness, hazy opacit(y|ies), "
        "airspace disease, air space disease, air-space disease, airspace opacit(y|ies), "
        "air space opacit(y|ies), air-space opacit(y|ies), airspace process(es), "
        "air space process(es), airspace shadowing, parenchymal opacit(y|ies), "
        "groundglass, ground glass, ground-glass opacit(y|ies), ground glass opacit(y|ies), "
        "reticular opacit(y|ies), interstitial opacit(y|ies), interstitial infiltrate(s), "
        "interstitial marking(s), increased interstitial marking(s), "
        "prominent interstitial marking(s), interstitial disease, "
        "interstitial lung disease, interstitial lung, reticular marking(s), reticulonodular, "
        "increased marking(s), "
        "increased lung marking(s), coarse marking(s), parenchymal abnormalit(y|ies), "
        "focal abnormalit(y|ies), interstitial pattern(s), reticular pattern(s), "
        "reticulation, reticular change(s), decreased translucency, scar(s), scarring, scarred, "
        "parenchymal scar(s), parenchymal scarring, fibrotic change(s), fibrotic scarring, "
        "peribronchial thickening, bronchial wall thickening, wall thickening, "
        "interstitial change(s), interstitial thickening")),
    # ------------------------------------------------------------------ Lung Lesion
    Term(FINDING, "Lung Lesion", expand(
        "nodule(s), micronodule(s), pulmonary nodule(s), lung nodule(s), mass(es), "
        "lung mass(es), pulmonary mass(es), lesion(s), nodular focus, nodular foci, nodular shadow(s), "
        "nodular lesion(s), nodularity, masslike opacit(y|ies), mass-like opacit(y|ies), "
        "neoplasm(s), tumor(s), carcinoma(s), cavitary lesion(s), lump(s), "
        # CheXpert: Lung Lesion (the labeler adds Lung Opacity when the words say "opaci").
        "nodular densit(y|ies), nodular opacit(y|ies), nodular opacification, "
        # CheXpert matches its phrases as substrings, so "reticulonodular opacities" and
        # "reticular-nodular opacities" hold its "nodular opacities"; "fibronodular"
        # scarring / thickening / infiltrate names nodules (every one on the dev half is
        # indexed "Nodule").
        "reticulonodular opacit(y|ies), reticulonodular densit(y|ies), "
        "reticular-nodular opacit(y|ies), reticular-nodular densit(y|ies), "
        "micronodular opacit(y|ies), fibronodular"),
        token_patterns=((_any("nodular"), _NODULAR_FILLER,
                         _any(*expand("opacit(y|ies), densit(y|ies), opacification"))),)),
    # Lesions of other organs (CheXpert unmentions "calcified nodul", "massive"), as
    # shields: "humerus lesion", "mass in the left breast" are not Lung Lesions.
    Term(FINDING, OTHER, expand(
        "calcified nodule(s), calcified pulmonary nodule(s), calcified lung nodule(s), "
        "pericardial effusion(s), "
        # a density of bone or soft tissue is no Lung Opacity (CheXpert's lung_opacity.txt
        # has only "increased density"; a bare "density" is a no_finding.txt finding)
        "bony densit(y|ies), osseous densit(y|ies), bone densit(y|ies), "
        "sclerotic densit(y|ies), cortical densit(y|ies), corticated densit(y|ies), "
        "metallic densit(y|ies)") + tuple(
        f"{organ} {kind}" for organ in _ORGANS for kind in expand("lesion(s), mass(es), nodule(s)")),
        token_patterns=(
            (_any(*expand("lesion(s), mass(es), nodule(s)")),
             _any("in", "of", "within", "involving", "at", "along"), _THE,
             {"REGEX": r"[a-z0-9-]+", "OP": "{0,3}"}, _any(*_ORGANS)),
            (_any("lucent", "lytic", "osteolytic", "sclerotic", "blastic", "osteoblastic",
                  "expansile", "destructive", "permeative"),
             _any(*expand("lesion(s), mass(es), focus, foci"))),
            # "calcified nodul" with its size and site between: "5 mm calcified right
            # midlung nodule", "calcified left lower lobe nodules".
            (_any("calcified", "calcific", "densely"), _CALCIFIED_FILLER,
             _any(*expand("nodule(s), nodular densit(y|ies)"))),
        )),
    # ------------------------------------------------------------------ Edema
    # CheXpert counts vascular congestion and heart failure as edema mentions.
    Term(FINDING, "Edema", expand(
        "edema, oedema, edematous, pulmonary edema, interstitial edema, alveolar edema, "
        "interstitial pulmonary edema, heart failure, congestive heart failure, chf, "
        "congestive failure, pulmonary venous hypertension, fluid overload, volume overload, "
        "kerley b line(s), kerley line(s), perihilar haziness, early failure")),
    # CheXpert (post_negation_uncertainty.txt): vascular / pulmonary congestion,
    # indistinctness and vascular prominence are uncertain Edema unless negated.
    Term(FINDING, "Edema", assertion="hedged", phrases=expand(
        "vascular congestion, pulmonary vascular congestion, pulmonary congestion, congestion, "
        "pulmonary venous congestion, venous congestion, vascular engorgement, engorgement, "
        "vascular redistribution, "
        "indistinctness, indistinct pulmonary vasculature, pulmonary vascular prominence, "
        "prominent pulmonary vasculature, vascular prominence, increased lung vascularity, "
        "increased pulmonary vascularity, increased vascularity, indistinct vascular margination, "
        "vascular indistinctness, prominence of the central vasculature, "
        "prominence of the pulmonary vasculature, prominent central vasculature"),
        token_patterns=(
            (_any("vascularity", "vasculature", "vessels", "vascular"),
             _any("markings", op="?"), _BE, _ADV,
             _any("prominent", "increased", "engorged", "congested", "indistinct", "cephalized")),
        )),
    # ------------------------------------------------------------------ Consolidation
    Term(FINDING, "Consolidation", expand(
        "consolidation(s), consolidative, consolidated, consolidative opacit(y|ies), "
        "consolidative process(es), airspace consolidation(s), air space consolidation(s), "
        "lobar consolidation, focal consolidation(s), air bronchogram(s)")),
    # ------------------------------------------------------------------ Pneumonia
    Term(FINDING, "Pneumonia", expand(
        "pneumonia(s), bronchopneumonia, pneumonitis, pna, aspiration pneumonia, "
        "multifocal pneumonia, lobar pneumonia, atypical pneumonia, developing pneumonia, "
        "early pneumonia, infection(s), infectious, infected, infectious process(es), "
        "infective process(es), infectious infiltrate(s), infectious etiolog(y|ies)")),
    # ------------------------------------------------------------------ Atelectasis
    Term(FINDING, "Atelectasis", expand(
        "atelectasis, atelectases, atelectatic, atelectatic change(s), "
        "atelectatic opacit(y|ies), subsegmental atelectasis, subsegmental atelectatic, "
        "plate-like atelectasis, platelike atelectasis, discoid atelectasis, "
        "linear atelectasis, bibasilar atelectasis, dependent atelectasis, "
        "relaxation atelectasis, compressive atelectasis, collapse, lobar collapse, "
        "collapsed")),
    # ------------------------------------------------------------------ Pneumothorax
    Term(FINDING, "Pneumothorax", expand(
        "pneumothorax, pneumothoraces, pneumothoraxes, ptx, hydropneumothorax, "
        "tension pneumothorax, apical pneumothorax, "
        # air in the pleural space is a pneumothorax, however worded
        "pleural air, pleural air collection(s), pleural gas")),
    # ------------------------------------------------------------------ Pleural Effusion
    Term(FINDING, "Pleural Effusion", expand(
        "effusion(s), pleural effusion(s), pleural fluid, pleural fluid collection(s), "
        "hydrothorax, hemothorax, loculated effusion(s), subpulmonic effusion(s), "
        "parapneumonic effusion(s), empyema, fluid in the fissure, fissural fluid, "
        "layering fluid, fluid in the minor fissure, fluid in the major fissure")),
    # ------------------------------------------------------------------ Pleural Other
    Term(FINDING, "Pleural Other", expand(
        "pleural thickening(s), apical pleural thickening(s), pleural plaque(s), "
        "calcified pleural plaque(s), pleural scar(s), pleural scarring, "
        "pleural calcification(s), fibrothorax, pleural-parenchymal scar(s), "
        "pleural-parenchymal scarring, pleuroparenchymal scar(s), pleuroparenchymal scarring, "
        "pleural parenchymal scarring, pleural reaction, apical cap(s), "
        "pleural based opacit(y|ies), pleural-based opacit(y|ies), "
        "pleural based densit(y|ies), pleural-based densit(y|ies), "
        "pleural abnormalit(y|ies), pleural disease, fibrosis, pulmonary fibrosis, "
        "interstitial fibrosis, apical fibrosis, pleuro-parenchymal scar(s), "
        "pleuro-parenchymal scarring, pleuro-pericardial scar(s), pleuro-pericardial scarring, "
        "pleural parenchymal scar(s)")),
    # ------------------------------------------------------------------ Fracture
    Term(FINDING, "Fracture", expand(
        "fracture(s), fractured, fx, fx's, fracture deformit(y|ies), rib fracture(s), "
        "compression fracture(s), compression deformit(y|ies), healed fracture(s), "
        "healing fracture(s), old fracture(s), displaced fracture(s), vertebral compression")),
    # ------------------------------------------------------------------ Support Devices
    # CheXpert's support_devices.txt names tubes, lines, catheters, pacers, valves, hardware,
    # screws, plates, markers, coils, drains, ...; it has no clip, suture, staple or wire:
    # surgical clips and sternotomy wires are not support devices ("pacing wire" is one,
    # through the reference's "pacer" and this list).
    Term(DEVICE, "Support Devices", expand(
        "endotracheal tube(s), et tube(s), ett, et, ng tube(s), ngt, nasogastric tube(s), "
        "og tube(s), ogt, orogastric tube(s), feeding tube(s), dobhoff tube(s), "
        "dobbhoff tube(s), enteric tube(s), gastrostomy tube(s), chest tube(s), "
        "thoracostomy tube(s), tracheostomy, tracheostomy tube(s), trach, trach tube(s), "
        "picc(s), picc line(s), piccline(s), picc's, central line(s), "
        "central venous catheter(s), venous catheter(s), catheter(s), catheter tip(s), "
        "pigtail catheter(s), dialysis catheter(s), hemodialysis catheter(s), "
        "swan-ganz catheter(s), swan ganz catheter(s), pulmonary artery catheter(s), "
        "ij line(s), internal jugular line(s), subclavian line(s), cvc(s), port(s), "
        "port-a-cath(s), portacath(s), pacemaker(s), pacer(s), pacemaker lead(s), "
        "pacer lead(s), pacing lead(s), pacing wire(s), pacer wire(s), lead(s), aicd(s), "
        "icd(s), defibrillator(s), defibrillator lead(s), cardiac device(s), "
        "dual-chamber pacemaker(s), dual lead pacemaker(s), single lead pacemaker(s), "
        "loop recorder(s), cardiac monitor(s), electrode(s), generator(s), stent(s), "
        "vascular stent(s), valve replacement(s), prosthetic valve(s), valve prosthes(is|es), "
        "hardware, surgical hardware, orthopedic hardware, fixation hardware, "
        "prosthes(is|es), implant(s), device(s), medical device(s), support device(s), "
        "monitoring device(s), drain(s), tube(s), line(s), iabp, intra-aortic balloon pump, "
        "impella, lvad, cannula(s), ecmo cannula(s), ventriculoperitoneal shunt(s), "
        "vp shunt(s), shunt catheter(s), mediport(s), medi-port(s), port catheter(s), "
        "power port(s), defibrillator pad(s), external pad(s), pacer pad(s), pacing pad(s), "
        "chest drain(s), pleural drain(s), surgical drain(s), mediastinal drain(s), "
        "pigtail drain(s), jp drain(s), arthroplast(y|ies), shoulder arthroplast(y|ies), "
        "marker(s), skin marker(s), nipple marker(s), plate(s), fixation plate(s), screw(s), "
        "apparatus, support apparatus, coil(s), embolization coil(s), equipment, "
        "monitoring equipment, support line(s), support tube(s), "
        # the reference's substring "valve" / "hardware" reach these; stimulators are devices
        "prosthetic aortic valve(s), prosthetic mitral valve(s), prosthetic pulmonic valve(s), "
        "prosthetic pulmonary valve(s), prosthetic tricuspid valve(s), annuloplasty ring(s), "
        "internal fixation, internal fixation hardware, prosthetic shoulder(s), "
        "prosthetic joint(s), stimulator(s), nerve stimulator(s), spinal cord stimulator(s), "
        "neurostimulator(s), vagal nerve stimulator(s)")),
    # A broken device is a device, not a Fracture: "catheter fracture", "fractured lead".
    Term(DEVICE, "Support Devices", expand(
        "catheter fracture(s), lead fracture(s), fracture of the catheter, "
        "fracture of the lead, fractured catheter(s), fractured lead(s), fractured pacer lead(s), "
        "fractured pacemaker lead(s), fractured screw(s), fractured hardware, "
        "fractured proximal lead(s), fractured distal lead(s), "
        # longer than the device phrase inside them ("central venous catheter")
        "central venous catheter fracture(s), venous catheter fracture(s), "
        "central line fracture(s), picc fracture(s), picc line fracture(s), "
        "port catheter fracture(s), dialysis catheter fracture(s), "
        "tunneled catheter fracture(s), pacemaker lead fracture(s), pacer lead fracture(s)"),
        token_patterns=(
            # "the lateral most screw (of the clavicular fixation plate) is fractured"
            (_any(*_BROKEN_DEVICE), {"REGEX": r"[a-z]+", "OP": "{0,5}"}, _BE, _ADV,
             _any("fractured", "broken")),
            # "fracture of the lateral most fixation screw"
            (_any("fracture", "fractures"), _any("of", "in", "involving"), _THE,
             {"REGEX": r"[a-z]+", "OP": "{0,4}"}, _any(*_BROKEN_DEVICE)),
        )),
    # ------------------------------------------------------------------ other findings
    # Not one of the 14 classes, but a finding: a positive one keeps No Finding off.
    Term(FINDING, OTHER, expand(
        "granuloma(s), granulomata, calcified granuloma(s), granulomatous disease, "
        "calcified lymph node(s), "
        "emphysema, emphysematous, emphysematous change(s), "
        "hyperinflation, hyperinflated, hyperexpansion, hyperexpanded, hyperaerated, "
        "overinflation, overinflated, hyperlucency, increased ap diameter, "
        "flattened diaphragms, flattened hemidiaphragms, flattening of the diaphragms, "
        "copd, chronic obstructive pulmonary disease, chronic lung disease, chronic changes, "
        "bulla(e), bleb(s), bronchiectasis, bronchitis, "
        "peribronchial cuffing, air trapping, cyst(s), lucency, "
        "hypoinflation, hypoinflated, low lung volume(s), scoliosis, dextroscoliosis, "
        "levoscoliosis, dextrocurvature, levocurvature, kyphosis, kyphotic, "
        "degenerative, degenerative change(s), thoracic degenerative changes, "
        "degenerative disc disease, degenerative joint disease, arthritic change(s), "
        "osteophyte(s), spondylosis, spurring, osteopenia, osteopenic, osteoporosis, "
        "demineralization, hiatal hernia(s), hernia(s), calcification(s), calcified, "
        "atherosclerosis, atherosclerotic, atherosclerotic disease, "
        "atherosclerotic calcification(s), tortuosity, tortuous, ectasia, ectatic, "
        "unfolded, unfolding, dilated, aneurysm(s), eventration, elevated hemidiaphragm(s), "
        "elevation, blunting, blunted, pectus, pectus excavatum, deformit(y|ies), "
        "lymphadenopathy, adenopathy, hilar enlargement, prominent hila, prominent hilum, "
        "pneumomediastinum, subcutaneous emphysema, free air, pneumoperitoneum, "
        "mastectomy, pneumonectomy, lobectomy, abnormalit(y|ies), "
        "sarcoidosis, tuberculosis, histoplasmosis, granulomatous infection, "
        "tuberculous infection, tuberculosis infection, old granulomatous process, "
        "histoplasmosis infection, prior infection, previous infection, old infection, "
        "remote infection, "
        "granulomatous process, rib deformit(y|ies), deformity of the rib(s), "
        "wedge deformit(y|ies), wedging, callus, osteophytosis, airways disease, "
        "airway disease, small airways disease, reactive airways disease, thickening, "
        "contusion(s), pulmonary contusion(s), hypertension, pulmonary hypertension, "
        "pulmonary arterial hypertension, prominence, hemorrhage, hematoma(s), arthropathy, "
        "bronchospasm, asthma, bronchiolitis, aortic disease, inflammation, inflammatory, "
        "osteodystrophy, aerophagia, bullet(s), bullet fragment(s), radiopaque foreign bod(y|ies), "
        "foreign bod(y|ies), thoracentesis, irregular lucency, "
        "fissural thickening, thickening of the minor fissure, "
        # CheXpert: findings of no_finding.txt, not of a class ("volume loss" is not
        # Atelectasis, "aspiration" not Pneumonia, "cephalization" not Edema, "metastasis"
        # not a Lung Lesion); cancers and cavities outside lung_lesion.txt likewise.
        "volume loss, aspiration, cephalization, cephalization of the vasculature, "
        "metastasis, metastases, metastatic disease, malignanc(y|ies), cancer, lung cancer, "
        "neoplastic, cavit(y|ies), cavitation, cavitary, "
        # not in lung_opacity.txt: crowded markings of low lung volumes, a prominent
        # interstitium ("prominen" is a no_finding.txt phrase)
        "bronchovascular crowding, interstitial prominence, "
        # findings with no class that the lists above missed (dev half)
        "hypoventilation, hypoventilated, hypoventilatory, underinflation, underinflated, "
        "degeneration, endplate change(s), endplate sclerosis, scoliotic, scoliotic curvature, "
        # no_finding.txt's "prominen" is a substring: "prominent hilar ...", "markings appear
        # slightly prominent"; spellings of findings listed above
        "prominent, arthritis, low volume lung(s), dextro curvature, levo curvature"),
        token_patterns=(
            (_any("volume", "volumes"), _BE, _ADV,
             _any("low", "decreased", "reduced", "diminished")),
        )),
    # ------------------------------------------------------------------ shields
    # "line" and "plate" are devices, but not in these phrases.
    Term(SHIELD, OTHER, expand(
        "telephone line, phone line, consult line, consultation line, telephone, "
        "pleural line, visceral pleural line, pleural reflection line, skin line, skin fold line, "
        "skinfold line, midline, junction line, anterior junction line, posterior junction line, "
        "paratracheal line, paraspinal line, paraspinous line, azygoesophageal line, "
        "mach line, line of sight, plate-like, plate like, platelike, "
        # Kerley / septal lines are interstitial edema signs, not lines
        "kerley line(s), kerley a line(s), kerley b line(s), b line(s), septal line(s), "
        # breast implants are not support devices
        "breast prosthes(is|es), breast implant(s), breast augmentation prosthes(is|es), "
        # a broken sternotomy wire is neither a Fracture nor a device (no wire in the list)
        "wire fracture(s), fractured wire(s), fractured sternotomy wire(s), "
        "fractured sternal wire(s), sternal wire fracture(s), sternotomy wire fracture(s), "
        # clips of an abdominal operation: no chest device, and no finding (CheXpert's
        # lists have no "clip": No Finding stays)
        "cholecystectomy clip(s), cholecystectomy surgical clip(s)")),
    # The heart as a place, not the subject (the reference's positional unmentions,
    # extract.py: "over the" / "in the" [+ left / right / superior] + a heart phrase):
    # "a nodule projecting near the left heart is unchanged" says nothing of heart size.
    Term(SHIELD, OTHER, tuple(
        f"{where} the{side} {heart}"
        for where in ("over", "overlying", "overly", "in", "near", "adjacent to", "behind",
                      "projecting over", "projecting near", "projecting adjacent to")
        for side in ("", " left", " right", " superior")
        for heart in ("heart", "cardiac silhouette", "cardiac shadow", "cardiac contour")
    )),
    # ------------------------------------------------------------------ anatomy
    Term(ANATOMY, OTHER, expand(
        "lung(s), bilateral lungs, lung base(s), lung apex, lung apices, lung field(s), "
        "lung zone(s), lobe(s), upper lobe(s), lower lobe(s), middle lobe, lingula, "
        "hilum, hila, hilar, perihilar, hemithorax, hemithoraces, hemidiaphragm(s), "
        "diaphragm(s), costophrenic angle(s), costophrenic, mediastinum, mediastinal, "
        "heart, heart size, cardiac, cardiac silhouette(s), cardiac contour(s), "
        "cardiomediastinal silhouette(s), mediastinal contour(s), aorta, aortic arch, "
        "trachea, carina, bronchus, bronchi, airway(s), pleura, pleural, pleural space(s), "
        "rib(s), clavicle(s), scapula(e), spine, thoracic spine, vertebra(e), "
        "vertebral bod(y|ies), sternum, shoulder(s), humerus, soft tissue(s), chest wall, "
        "osseous, osseous structure(s), bony structure(s), bony thorax, "
        "pulmonary vasculature, vasculature, pulmonary arter(y|ies), svc, right atrium, "
        "cavoatrial junction, stomach, abdomen, bowel, thorax, chest, apex, apices, "
        "base(s), bibasilar, basilar, apical, fissure(s), retrocardiac, "
        "retrocardiac region, pulmonary, cardiopulmonary")),
    # ------------------------------------------------------------------ normal statements
    Term(NORMAL, OTHER, expand(
        "normal, unremarkable, within normal limits, clear, lungs are clear, lungs clear, "
        "well expanded, well-expanded, well aerated, well-aerated, negative, no acute, "
        "no acute disease, no active disease, no acute abnormalit(y|ies), no acute process, "
        "no acute finding(s), no acute pulmonary disease, no acute cardiopulmonary disease, "
        "no acute cardiopulmonary abnormalit(y|ies), no acute cardiopulmonary process, "
        "no acute cardiopulmonary finding(s), no abnormality, no disease, "
        "no evidence of acute cardiopulmonary disease, "
        "no radiographic evidence of acute cardiopulmonary disease, normal chest, "
        "normal study, normal examination, stable chest")),
)  # fmt: skip


def entity_ruler_patterns(terms: tuple[Term, ...] = TERMS) -> list[dict]:
    """spaCy EntityRuler patterns for the lexicon's phrases.

    Each pattern's ``id`` encodes ``"<CheXpert class>|<assertion>"`` so the
    entity's ``ent_id_`` carries both; phrases are tokenised by the pipeline's
    own tokenizer and matched on LOWER. Token patterns go to
    :func:`statement_regexes` instead.
    """
    patterns: list[dict] = []
    for term in terms:
        pattern_id = f"{term.chexpert}|{term.assertion}"
        for phrase in dict.fromkeys(term.phrases):
            patterns.append({"label": term.label, "pattern": phrase, "id": pattern_id})
    return patterns


# Between two words of a statement: white space, and up to two de-identification marks
# (IU's "XXXX", MIMIC-CXR's "___"), which stand for a word nobody can read: "heart size
# XXXX within normal limits", "heart size is ___ normal".
_GAP = r"\s+(?:(?:xxxx|___)\s+){0,2}"


def statement_regexes(terms: tuple[Term, ...] = TERMS) -> list[tuple[str, str, str, list[str]]]:
    """(regex, label, pattern id, first words) for each token pattern, as a word regex.

    Token patterns describe statements ("the heart size is mildly enlarged") in
    spaCy's Matcher syntax (LOWER values or IN sets, ops ?, *, {m,n}). Run as a
    spaCy Matcher with optional tokens they cost ~0.5 ms per report, more than
    the rest of the pipeline together; as one regex over the text, microseconds.
    Matching is case-insensitive on whole words; tokens are separated by whitespace
    and at most two de-identification marks (``_GAP``).
    """
    out = []
    for term in terms:
        for tokens in term.token_patterns:
            parts = []
            for index, token in enumerate(tokens):
                if "REGEX" in token:  # a raw regex piece (the first token must be words)
                    body = "(?:" + token["REGEX"] + ")"
                else:
                    values = token["LOWER"]
                    words = values["IN"] if isinstance(values, dict) else [values]
                    body = "(?:" + "|".join(re.escape(w) for w in words) + ")"
                body = body if index == 0 else _GAP + body
                op = token.get("OP")
                parts.append(body if op is None else f"(?:{body}){op}")  # ?, *, {m,n} as in regex
            first = tokens[0]["LOWER"]
            first_words = list(first["IN"]) if isinstance(first, dict) else [first]
            if tokens[0].get("OP"):
                raise ValueError(f"{term.chexpert}: a statement cannot start with an optional word")
            regex = r"\b" + "".join(parts) + r"\b"
            out.append((regex, term.label, f"{term.chexpert}|{term.assertion}", first_words))
    return out


def split_pattern_id(ent_id: str) -> tuple[str, str]:
    """``"Cardiomegaly|negated"`` -> ("Cardiomegaly", "negated"); other ids -> (id, "")."""
    chexpert, _, assertion = ent_id.partition("|")
    return chexpert, assertion
