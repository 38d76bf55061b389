"""What the folder layouts of the public chest X-ray datasets say about an image.

The public datasets encode patient, study and often the view in their paths:

| dataset | image path | patient | study | view |
|---|---|---|---|---|
| MIMIC-CXR(-JPG) | ``files/p10/p10000032/s50414267/<dicom_id>.dcm`` | ``p10000032`` | ``s50414267`` | metadata CSV |
| CheXpert | ``train/patient00001/study1/view1_frontal.jpg`` | ``patient00001`` | ``patient00001/study1`` | file name |
| IU (Open-i) | ``CXR1_1_IM-0001-3001.png`` | report ``CXR1`` | report ``CXR1`` | -- |

:func:`layout_keys` reads them from a path alone (no file is opened), so ingest can
keep all images of one patient in one split and the bootstrap can resample patients.
The IU collection has no patient ids; one report (frontal + lateral) is taken as one
patient and one study, the finest grouping that cannot leak a report across splits.
CheXpert ships its official split as folders: ``train/``, ``valid/`` (the
radiologist-labelled validation set) and, in the later test release, ``test/``;
:data:`CHEXPERT_SPLITS` maps them to cxrkit's ``train`` / ``val`` / ``test``.
IU's Kaggle and R2Gen copies (``1_IM-0001-4001.dcm.png``, ``CXR1_1_IM-0001/0.png``) carry
their report uid in tables, not in a path rule: :mod:`cxrkit.io.iu_tables` reads them.
MIMIC-CXR keeps each study's report beside the study folder
(``files/p10/p10000032/s50414267.txt``): :func:`mimic_report_beside` finds it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cxrkit.errors import ConfigError

_MIMIC_PATIENT = re.compile(r"p\d{6,}")
_MIMIC_STUDY = re.compile(r"s\d{6,}")
_MIMIC_GROUP = re.compile(r"p\d{2}")
_CHEXPERT_PATIENT = re.compile(r"patient\d+")
_CHEXPERT_STUDY = re.compile(r"study\d+")
_CHEXPERT_VIEW = re.compile(r"view\d+_(frontal|lateral)", re.IGNORECASE)
CHEXPERT_SPLITS = {"train": "train", "valid": "val", "test": "test"}
"""CheXpert's split folders -> cxrkit's split names (``valid/`` is the validation set)."""
_IU_IMAGE = re.compile(r"(CXR\d+)(?:_\d+)?_IM-\d+-\d+", re.IGNORECASE)

FRONTAL_VIEWS = frozenset(
    {"PA", "AP", "FRONTAL", "AP AXIAL", "PA LLD", "AP LLD", "AP RLD", "PA RLD"}
)
LATERAL_VIEWS = frozenset(
    {"LATERAL", "LL", "RL", "XTABLE LATERAL", "SWIMMERS", "LAO", "RAO", "LPO", "RPO"}
)
"""View codes as stored in the dataset's ``view`` column. ``FRONTAL`` is a frontal image
whose PA/AP projection is not known (CheXpert paths say only frontal/lateral)."""


@dataclass(frozen=True)
class LayoutKeys:
    """Raw (not yet pseudonymised) keys a dataset layout gives one image."""

    layout: str  # "mimic" | "chexpert" | "iu"
    patient: str
    study: str
    view: str | None = None  # "FRONTAL" / "LATERAL" when the path says so
    split: str | None = None  # "train" / "val" / "test" when a split folder holds the patient


def layout_keys(path: str | Path) -> LayoutKeys | None:
    """Patient, study (and view) of an image from its path, or None for an unknown layout.

    Takes an image path. Returns :class:`LayoutKeys` for a MIMIC-CXR study folder
    (``.../pNNNNNNNN/sNNNNNNNN/x.dcm``), a CheXpert one (``.../patientN/studyM/viewK_frontal.jpg``)
    or an IU image name (``CXR12_1_IM-0123-1001.png``); CheXpert and IU keys carry the
    layout's name so they never collide with another layout's. A CheXpert patient folder
    inside ``train/``, ``valid/`` or ``test/`` also gives the split (:data:`CHEXPERT_SPLITS`).
    Never raises.
    """
    path = Path(path)
    parts = path.parent.parts
    if len(parts) >= 2:
        patient, study = parts[-2], parts[-1]
        if _MIMIC_PATIENT.fullmatch(patient) and _MIMIC_STUDY.fullmatch(study):
            # Unprefixed: the keys cxrkit has always used for MIMIC (pseudonyms stay stable).
            return LayoutKeys("mimic", patient, study)
        if _CHEXPERT_PATIENT.fullmatch(patient) and _CHEXPERT_STUDY.fullmatch(study):
            match = _CHEXPERT_VIEW.fullmatch(path.stem)
            view = None if match is None else match.group(1).upper()
            split = CHEXPERT_SPLITS.get(parts[-3]) if len(parts) >= 3 else None
            return LayoutKeys(
                "chexpert", f"chexpert:{patient}", f"chexpert:{patient}/{study}", view, split
            )
    match = _IU_IMAGE.match(path.stem)
    if match is not None:
        report = match.group(1).upper()
        return LayoutKeys("iu", f"iu:{report}", f"iu:{report}")
    return None


def mimic_report_beside(path: str | Path) -> Path | None:
    """The MIMIC-CXR report of an image's study folder, when it sits beside the folder.

    ``files/p10/p10000032/s50414267/x.dcm`` -> ``files/p10/p10000032/s50414267.txt``
    if that file exists, else None (one ``stat``; never raises).
    """
    path = Path(path)
    study_dir = path.parent
    if not (
        _MIMIC_STUDY.fullmatch(study_dir.name) and _MIMIC_PATIENT.fullmatch(study_dir.parent.name)
    ):
        return None
    report = study_dir.parent / f"{study_dir.name}.txt"
    try:
        return report if report.is_file() else None
    except OSError:
        return None


def is_frontal(view: str | None) -> bool:
    """Whether a stored view code is a frontal projection (PA, AP, FRONTAL...)."""
    return (view or "").upper() in FRONTAL_VIEWS


def unknown_view_names(
    spec: str | list[str] | tuple[str, ...], present: Iterable[str]
) -> list[str]:
    """The names of a view filter that can only be typos: neither ``frontal`` /
    ``lateral`` / ``unknown``, nor a view code of :data:`FRONTAL_VIEWS` /
    :data:`LATERAL_VIEWS`, nor a code in ``present`` (the dataset's stored views, so a
    mapping CSV's own codes stay usable). A known code the dataset lacks is not one
    (``PA,AP`` on a PA-only dataset). Takes the filter as :func:`expand_views` does;
    returns the offending names upper-case, in order. Never raises.
    """
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    known = FRONTAL_VIEWS | LATERAL_VIEWS | {"FRONTAL", "LATERAL", "UNKNOWN"}
    stored = {str(v).strip().upper() for v in present}
    upper = (n.strip().upper() for n in names)
    return [n for n in upper if n and n not in known and n not in stored]


def check_view_filter(views: list[str], counts: Mapping[str, int], where: str) -> None:
    """Refuse a view filter with a name that can only be a typo (:func:`unknown_view_names`),
    so ``PA,APP`` never runs on PA alone.

    Takes the filter, the dataset's stored view counts (its ``view_counts`` stat) and the
    dataset's path for the message. Raises ConfigError naming the bad names and the
    dataset's views; an empty filter passes.
    """
    if views and (bad := unknown_view_names(views, counts)):
        found = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none recorded"
        raise ConfigError(
            f"views: no view is named {', '.join(bad)}; views in the dataset {where}: "
            f"{found} (frontal / lateral name their groups)"
        )


def expand_views(spec: str | list[str] | tuple[str, ...]) -> frozenset[str]:
    """A view filter as the set of stored view codes it keeps.

    Takes ``"PA,AP"`` or a list of names; ``frontal`` and ``lateral`` stand for all
    frontal / lateral codes (``frontal`` = PA, AP, FRONTAL, ...). Case-insensitive.
    Returns upper-case codes. Raises ValueError for an empty filter.
    """
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    keep: set[str] = set()
    for name in (n.strip().upper() for n in names):
        if not name:
            continue
        if name == "FRONTAL":
            keep |= FRONTAL_VIEWS
        elif name == "LATERAL":
            keep |= LATERAL_VIEWS
        else:
            keep.add(name)
    if not keep:
        raise ValueError("empty view filter: name views such as PA,AP or frontal")
    return frozenset(keep)
