"""DICOM metadata: the fields a DecodedImage carries, read from the kept elements.

Everything here is a pure function of a pydicom ``Dataset`` parsed with the
allow-list of :data:`cxrkit.io.dicom.KEPT_TAGS`: identifiers, dates and coarse
demographics that the caller pseudonymises, and what the image is (view,
modality, body part, pixel spacing, encoding). The view is inferred from
ViewPosition, then the view code meanings, then series/protocol descriptions,
because ViewPosition is often blank or non-standard in real archives.
"""

from __future__ import annotations

import re

from pydicom.dataset import Dataset

from cxrkit.io.decoded import empty_meta
from cxrkit.io.deid import parse_date

CHEST_MODALITIES = frozenset({"CR", "DX", "DR", "RG"})  # RG: digitised film radiographs

MAX_AGE_YEARS = 130.0
_AGE_RE = re.compile(r"^(\d{1,3})([YMWD]?)$")
_AGE_UNIT_YEARS = {"Y": 1.0, "": 1.0, "M": 1.0 / 12.0, "W": 7.0 / 365.25, "D": 1.0 / 365.25}
_VIEW_POSITIONS = {"PA": "PA", "AP": "AP", "LL": "LL", "LATERAL": "LATERAL", "LAT": "LATERAL",
                   "RL": "LATERAL", "LEFT LATERAL": "LL", "RIGHT LATERAL": "LATERAL"}  # fmt: skip
# Keywords found in ViewPosition variants, code meanings and series/protocol names.
_VIEW_PATTERNS = (
    ("LL", re.compile(r"\bLEFT LAT(ERAL)?\b|\bLL\b")),
    ("LATERAL", re.compile(r"\bLAT(ERAL)?\b|\bRL\b")),
    ("PA", re.compile(r"\bP ?/? ?A\b|\bPOSTERI?O ?ANTERIOR\b")),
    ("AP", re.compile(r"\bA ?/? ?P\b|\bANTERI?O ?POSTERIOR\b|\bPORTABLE\b|\bSUPINE\b")),
)


def _text(ds: Dataset, keyword: str) -> str | None:
    """A single-valued string element, stripped; None when absent or empty."""
    value = ds.get(keyword)
    text = "" if value is None else str(value).strip()
    return text or None


def parse_age(
    patient_age: str | None, birth_date: str | None = None, study_date: str | None = None
) -> float | None:
    """Age in years from PatientAge ("045Y", "006M", "002W", "010D"), else birth vs study date.

    Returns: float years, or None when neither source gives an age in [0, 130].
    """
    match = _AGE_RE.match((patient_age or "").strip().upper())
    if match:
        years = int(match.group(1)) * _AGE_UNIT_YEARS[match.group(2)]
        if years <= MAX_AGE_YEARS:
            return years
    birth, study = parse_date(birth_date), parse_date(study_date)
    if birth is not None and study is not None and study >= birth:
        years = (study - birth).days / 365.25
        if years <= MAX_AGE_YEARS:
            return years
    return None


def views_in_text(text: str) -> set[str]:
    """The view classes a free-text description mentions (LL wins over LATERAL)."""
    upper = re.sub(r"[_\-.,;:()\[\]]+", " ", text.upper())
    found = {view for view, pattern in _VIEW_PATTERNS if pattern.search(upper)}
    if "LL" in found:
        found.discard("LATERAL")
    return found


def infer_view(view_position: str | None, code_meanings: list[str], descriptions: list[str]) -> str:
    """PA / AP / LATERAL / LL / UNKNOWN from ViewPosition, then the view code
    meanings, then series/protocol descriptions; a text naming two views is skipped.
    """
    position = (view_position or "").strip().upper()
    if position in _VIEW_POSITIONS:
        return _VIEW_POSITIONS[position]
    for text in [position, *code_meanings, *descriptions]:
        found = views_in_text(text) if text else set()
        if len(found) == 1:
            return found.pop()
    return "UNKNOWN"


def _pixel_spacing(ds: Dataset, modality: str | None) -> list[float] | None:
    """(row, col) mm; detector spacing first for projection radiographs; None if unusable."""
    order = ("ImagerPixelSpacing", "PixelSpacing")
    if modality not in CHEST_MODALITIES:
        order = order[::-1]
    for keyword in order:
        try:
            values = [float(v) for v in ds.get(keyword) or ()]
        except (TypeError, ValueError):
            continue
        if len(values) == 2 and all(v > 0 for v in values):
            return values
    return None


def _code_meanings(ds: Dataset) -> list[str]:
    meanings = []
    for item in ds.get("ViewCodeSequence") or ():
        meaning = item.get("CodeMeaning")
        if meaning:
            meanings.append(str(meaning))
    return meanings


def extract_meta(ds: Dataset) -> dict:
    """The metadata dict of a DecodedImage (keys: cxrkit.io.decoded.META_KEYS)."""
    modality = (_text(ds, "Modality") or "").upper() or None
    sex = (_text(ds, "PatientSex") or "").upper()
    study = parse_date(_text(ds, "StudyDate"))
    burned = (_text(ds, "BurnedInAnnotation") or "").upper()
    try:
        n_frames = max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        n_frames = 1
    descriptions = [t for t in (_text(ds, "SeriesDescription"), _text(ds, "ProtocolName")) if t]
    return empty_meta(
        patient_id=_text(ds, "PatientID"),
        study_uid=_text(ds, "StudyInstanceUID"),
        series_uid=_text(ds, "SeriesInstanceUID"),
        sop_uid=_text(ds, "SOPInstanceUID"),
        accession=_text(ds, "AccessionNumber"),
        study_date=study.strftime("%Y%m%d") if study else None,
        view=infer_view(_text(ds, "ViewPosition"), _code_meanings(ds), descriptions),
        sex=sex if sex in ("M", "F", "O") else None,
        age=parse_age(
            _text(ds, "PatientAge"), _text(ds, "PatientBirthDate"), _text(ds, "StudyDate")
        ),
        pixel_spacing=_pixel_spacing(ds, modality),
        modality=modality,
        body_part=_text(ds, "BodyPartExamined"),
        orig_height=int(ds.get("Rows") or 0) or None,
        orig_width=int(ds.get("Columns") or 0) or None,
        bits_stored=int(ds.get("BitsStored") or 0) or None,
        transfer_syntax=str(ds.file_meta.get("TransferSyntaxUID", "")) or None,
        photometric=_text(ds, "PhotometricInterpretation"),
        manufacturer=_text(ds, "Manufacturer"),
        burned_in={"YES": True, "NO": False}.get(burned),
        n_frames=n_frames,
    )
