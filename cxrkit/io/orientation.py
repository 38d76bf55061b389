"""EXIF orientation of PNG/JPEG radiographs: show the image as a viewer would.

A JPEG (APP1 ``Exif``) or a PNG (``eXIf`` chunk, or ImageMagick's "Raw profile type
exif" text) may store its pixels rotated or mirrored and say so in the EXIF
Orientation tag (0x0112); phones and some PACS export tools do. Viewers, and Pillow's
``ImageOps.exif_transpose``, apply it. Ingest does the same, so the stored chest image
is upright as the user saw it, whatever decode path (full, or reduced DCT scale:
:mod:`cxrkit.io.jpeg_reduce`) produced the grey levels: the transpose is exact on
the decoded (H, W) array, so both paths transpose the same way.

Values 2..8 are applied with ``exif_transpose``'s mapping; 1 and a missing tag change
nothing. Anything else is ignored and the pixels are kept as stored: an out-of-range
value (0, 9, 65535), a tag of the wrong type, an EXIF block Pillow cannot parse
(truncated, bad offsets). A hostile EXIF never rejects an image whose pixels decode.
"""

from __future__ import annotations

import struct
import warnings

import numpy as np
from PIL import Image

ORIENTATION_TAG = 0x0112
_EXIF_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    KeyError,
    IndexError,
    TypeError,
    EOFError,
    struct.error,
)


def exif_orientation(img: Image.Image) -> int | None:
    """The EXIF Orientation of a loaded Pillow image when it asks for a transpose.

    Takes: a Pillow image after ``load()`` (a PNG's ``eXIf`` chunk may follow the pixel
    data). Returns: 2..8, or None for no tag, 1, a value outside 1..8, a non-integer
    value, or EXIF that does not parse. Never raises for a bad EXIF block.
    """
    try:
        with warnings.catch_warnings():  # Pillow warns "Corrupt EXIF data" and goes on
            warnings.simplefilter("ignore", UserWarning)
            value = img.getexif().get(ORIENTATION_TAG)
    except _EXIF_ERRORS:
        return None
    if isinstance(value, tuple) and len(value) == 1:  # a count-1 SHORT read as a tuple
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 8:
        return None
    return value


def apply_orientation(arr: np.ndarray, orientation: int | None) -> np.ndarray:
    """Transpose a decoded (H, W[, C]) array so it shows as EXIF `orientation` says.

    Takes: the array as stored in the file and a value from :func:`exif_orientation`.
    Returns: the upright array, C-contiguous (orientations 5..8 swap H and W); `arr`
    itself for None or 1. The mapping is Pillow's ``exif_transpose``: 2 mirror
    left-right, 3 rotate 180, 4 mirror top-bottom, 5 transpose, 6 rotate 90 clockwise,
    7 transverse, 8 rotate 90 counter-clockwise.
    Raises: ValueError for another value.
    """
    if orientation in (None, 1):
        return arr
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    if orientation not in ops:
        raise ValueError(f"EXIF orientation must be 1..8, got {orientation!r}")
    return np.ascontiguousarray(ops[orientation](arr))
