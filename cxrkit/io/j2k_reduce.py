"""JPEG 2000 at a reduced resolution level: decode only what the stored size needs.

A JPEG 2000 codestream is a wavelet pyramid: skipping the N finest decomposition
levels (OpenJPEG's ``cp_reduce``) yields the image at ``ceil(side / 2**N)`` without
decoding the detail sub-bands, about 2-4x faster per level on radiographs. Ingest
stores a downscaled image anyway, so :func:`decode_reduced` picks the largest N whose
long side is still >= the stored long side (the final antialiased resize still
downsamples) and decodes there through Pillow's OpenJPEG binding.

Only the simple, common case takes this path: one frame component, unsigned samples,
at most 16 bits, a main-header COD marker giving the level count. Anything else,
and any failure of the reduced decode, returns None and the caller decodes in full.
"""

from __future__ import annotations

import io
import math
import struct

import numpy as np
from PIL import Image, ImageFile

_SOC, _SIZ, _COD, _SOT = 0xFF4F, 0xFF51, 0xFF52, 0xFF90


def codestream_header(codestream: bytes) -> tuple[int, int, int, bool, int] | None:
    """Parse the main header of a J2K codestream.

    Returns: (width, height, precision, signed, decomposition levels) of a
    one-component codestream, or None when it is not one / the header is unreadable.
    """
    if len(codestream) < 4 or struct.unpack(">H", codestream[:2])[0] != _SOC:
        return None
    pos, size, levels = 2, None, None
    while size is None or levels is None:
        if pos + 4 > len(codestream):
            return None
        marker, length = struct.unpack(">HH", codestream[pos : pos + 4])
        body = codestream[pos + 4 : pos + 2 + length]
        if marker == _SOT or marker >> 8 != 0xFF or length < 2:
            return None  # tile data before SIZ+COD, or not a marker: not the simple case
        if marker == _SIZ and len(body) >= 37:
            x1, y1, x0, y0 = struct.unpack(">IIII", body[2:18])
            (n_comp,) = struct.unpack(">H", body[34:36])
            if n_comp != 1:
                return None
            ssiz = body[36]
            size = (x1 - x0, y1 - y0, (ssiz & 0x7F) + 1, bool(ssiz & 0x80))
        elif marker == _COD and len(body) >= 6:
            levels = body[5]
        pos += 2 + length
    width, height, precision, signed = size
    return width, height, precision, signed, levels


def reduce_levels(long_side: int, target: int, levels: int) -> int:
    """The largest N <= `levels` with ``ceil(long_side / 2**N) >= target`` (0: no gain)."""
    n = 0
    while n < levels and math.ceil(long_side / (1 << (n + 1))) >= target:
        n += 1
    return n


def decode_reduced(codestream: bytes, target_long_side: int) -> np.ndarray | None:
    """Decode `codestream` at the coarsest resolution whose long side is >= the target.

    Takes: one JPEG 2000 codestream (a DICOM frame) and the long side the caller will
    resize to. Returns: (h, w) uint16/uint8 stored values at ``ceil(side / 2**N)``, or
    None when no level can be skipped or this codestream is not the simple case.
    """
    header = codestream_header(codestream)
    if header is None:
        return None
    width, height, precision, signed, levels = header
    if signed or precision > 16:
        return None
    n = reduce_levels(max(width, height), target_long_side, levels)
    if n == 0:
        return None
    power = 1 << n
    size = (-(-width // power), -(-height // power))
    try:
        img = Image.open(io.BytesIO(codestream), formats=["JPEG2000"])
        if img.mode not in ("L", "I;16") or img.size != (width, height):
            return None
        codec, _box, offset, args = img.tile[0]
        # Pillow < 11 rounds the reduced size where OpenJPEG takes the ceiling, and then
        # rejects the decoded tile ("broken data stream"); set the tile at OpenJPEG's size.
        img._size = size
        img.tile = [(codec, (0, 0, *size), offset, (args[0], n, 0, *args[3:]))]
        ImageFile.ImageFile.load(img)
        arr = np.asarray(img)
    except (OSError, ValueError, IndexError, TypeError, Image.DecompressionBombError):
        return None
    if arr.shape != (size[1], size[0]):
        return None
    # Pillow scales samples up to the mode's full depth (a 15-bit sample is shifted by
    # 1 into I;16); shift back to the stored values.
    shift = (8 if img.mode == "L" else 16) - precision
    return arr >> shift if shift > 0 else arr.copy()
