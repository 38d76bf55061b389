"""The decoded-image record every reader returns, and its metadata keys.

:class:`DecodedImage` is the contract between the readers (:mod:`cxrkit.io.dicom`,
:mod:`cxrkit.io.images`) and ingest: (H, W) float32 in [0, 1] at the original
resolution, bright = bone (the MONOCHROME2 convention), after all intensity steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Metadata keys every DecodedImage carries (DICOM fills them; PNG/JPEG mostly None).
META_KEYS = (
    "patient_id",
    "study_uid",
    "series_uid",
    "sop_uid",
    "accession",
    "study_date",
    "view",
    "sex",
    "age",
    "pixel_spacing",
    "modality",
    "body_part",
    "orig_height",
    "orig_width",
    "bits_stored",
    "transfer_syntax",
    "photometric",
    "manufacturer",
    "burned_in",
    "n_frames",
    "exif_orientation",  # PNG/JPEG: the EXIF Orientation 2..8 applied to the pixels, else None
)


@dataclass
class DecodedImage:
    """One decoded radiograph, ready for resizing and storage.

    `pixels`: (H, W) float32 in [0, 1], original resolution, bright = bone.
    `source_format`: "dicom" | "png" | "jpeg".
    `photometric`: as found in the source (DICOM PhotometricInterpretation, or the
    Pillow mode such as "L", "I;16", "RGB" for PNG/JPEG).
    `meta`: raw metadata with the keys of :data:`META_KEYS`; PHI included, the caller
    pseudonymises before anything is stored.
    `full_shape`: the source's (H, W) when `pixels` were decoded at a reduced resolution
    (JPEG 2000 resolution levels, JPEG DCT scaling); None: `pixels` are at the source's
    resolution. Sizes are those of the upright image after an EXIF orientation
    (``meta["exif_orientation"]``, :mod:`cxrkit.io.orientation`).
    """

    pixels: np.ndarray
    source_format: str
    photometric: str
    meta: dict[str, Any] = field(default_factory=dict)
    full_shape: tuple[int, int] | None = None


def empty_meta(**values: Any) -> dict[str, Any]:
    """Return a meta dict with every key of :data:`META_KEYS` (None unless given)."""
    meta: dict[str, Any] = dict.fromkeys(META_KEYS)
    meta.update(values)
    return meta
