"""One entry point for any supported file: sniff it, then decode it with its reader."""

from __future__ import annotations

from pathlib import Path

from cxrkit.errors import Reject
from cxrkit.io.decoded import DecodedImage
from cxrkit.io.dicom import MAX_PIXELS, read_dicom
from cxrkit.io.images import read_image
from cxrkit.io.sniff import sniff_format


def read_any(
    path: str | Path,
    *,
    allow_burned_in: bool = False,
    check_chest: bool = True,
    low_pct: float = 0.5,
    high_pct: float = 99.5,
    max_pixels: int = MAX_PIXELS,
    decode_long_side: int | None = None,
    reduce_lossless: bool = False,
) -> DecodedImage:
    """Sniff `path` and decode it with the matching reader.

    `decode_long_side`, `reduce_lossless`: see :func:`read_dicom` and
    :func:`read_image` (a JPEG file decodes at a reduced DCT scale as DICOM JPEG does;
    PNG always in full).
    Returns: a :class:`DecodedImage`. Raises: Reject("not_dicom") when a file named
    like a DICOM (``.dcm``, ``.dicom`` or no extension) is neither DICOM, PNG nor JPEG,
    Reject("unsupported_format") for any other such file, else whatever the reader rejects.
    """
    fmt = sniff_format(path)
    if fmt == "dicom":
        return read_dicom(
            path,
            allow_burned_in=allow_burned_in,
            check_chest=check_chest,
            low_pct=low_pct,
            high_pct=high_pct,
            max_pixels=max_pixels,
            decode_long_side=decode_long_side,
            reduce_lossless=reduce_lossless,
        )
    if fmt in ("png", "jpeg"):
        return read_image(
            path,
            low_pct=low_pct,
            high_pct=high_pct,
            max_pixels=max_pixels,
            decode_long_side=decode_long_side,
        )
    named_dicom = Path(path).suffix.lower() in ("", ".dcm", ".dicom")
    reason = "not_dicom" if named_dicom else "unsupported_format"
    raise Reject(reason, "not DICOM, PNG or JPEG (checked by magic bytes)")
