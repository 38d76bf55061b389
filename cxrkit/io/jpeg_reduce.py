"""Baseline (DCT) JPEG at 1/2, 1/4 or 1/8 scale: decode only what the stored size needs.

libjpeg can run a smaller inverse DCT per 8x8 block (4x4, 2x2 or 1x1 coefficients) and
so yields the image at ``ceil(side / 2**N)``, N <= 3, for a fraction of the IDCT and
colour work; Pillow exposes it as ``Image.draft``. Ingest stores a downscaled image
anyway, so, as for JPEG 2000 (:mod:`cxrkit.io.j2k_reduce`), the largest N whose long
side is still >= the stored long side is chosen (the final antialiased resize still
downsamples).

Only greyscale ("L") and RGB JPEGs take this path; N = 0 (the stored size is more than
half the source) leaves the image untouched, so its pixels are those of a full decode.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from cxrkit.io.j2k_reduce import reduce_levels

MAX_DCT_LEVELS = 3  # libjpeg scales by 1/2, 1/4, 1/8
_MODES = ("L", "RGB")
_ERRORS = (OSError, ValueError, SyntaxError, IndexError, TypeError, Image.DecompressionBombError)


def draft_levels(img: Image.Image, target_long_side: int) -> int:
    """Set an opened, not yet loaded JPEG to decode at ``1 / 2**N`` of its size.

    Takes: a Pillow JPEG image straight from ``Image.open`` and the long side the caller
    will resize to. Returns: N, the largest <= 3 with ``ceil(long side / 2**N) >=
    target_long_side`` (0: nothing set, the decode is the full one). After N > 0,
    ``img.size`` is ``(ceil(w / 2**N), ceil(h / 2**N))``.
    Raises: ValueError when Pillow did not take the scale asked for (the image is then
    unusable; decode a fresh one in full).
    """
    if img.format not in ("JPEG", "MPO") or img.mode not in _MODES:
        return 0
    width, height = img.size
    n = reduce_levels(max(width, height), target_long_side, MAX_DCT_LEVELS)
    power = 1 << n
    if n == 0 or min(width, height) < power:
        return 0
    # Pillow takes the scale min(w // rw, h // rh) rounded down to a power of two;
    # w // (w // power) lies in [power, 2 * power), so this request gives `power`.
    img.draft(img.mode, (width // power, height // power))
    expected = (-(-width // power), -(-height // power))
    if img.size != expected or img.decoderconfig[:1] != (power,):
        raise ValueError(f"draft gave {img.size} at {img.decoderconfig}, expected {expected}")
    return n


def decode_reduced(
    data: bytes, target_long_side: int, expected_size: tuple[int, int]
) -> np.ndarray | None:
    """Decode a greyscale JPEG (a DICOM frame) at the coarsest DCT scale >= the target.

    Takes: the JPEG bytes, the long side the caller will resize to and the (width,
    height) the caller's header claims. Returns: (h, w) uint8 at ``ceil(side / 2**N)``,
    or None when no scale can be skipped, the JPEG is not 8-bit greyscale of that size,
    or anything in the reduced decode fails (the caller then decodes in full).
    """
    try:
        img = Image.open(io.BytesIO(data), formats=["JPEG"])
        if img.mode != "L" or img.size != expected_size:
            return None
        if draft_levels(img, target_long_side) == 0:
            return None
        img.load()
        arr = np.asarray(img)
    except _ERRORS:
        return None
    if arr.dtype != np.uint8 or arr.shape != (img.size[1], img.size[0]):
        return None
    return arr
