"""Decoding of PNG/JPEG chest radiographs (DICOM: :mod:`cxrkit.io.dicom`; any file:
:func:`cxrkit.io.decode.read_any`; the shared steps: :mod:`cxrkit.io.intensity`).

Every reader returns a :class:`DecodedImage`: a (H, W) float32 array in [0, 1] at the
original resolution (or, with ``decode_long_side``, a JPEG at a reduced DCT scale:
:mod:`cxrkit.io.jpeg_reduce`), bright = bone/dense (the MONOCHROME2 convention), after all
intensity steps. Ingest then calls :func:`~cxrkit.io.intensity.resize_long_side` and
:func:`~cxrkit.io.intensity.quantise`.

Decisions (documented here because ingest's behaviour follows from them):

- PNG/JPEG go through the same :func:`robust_normalise` as DICOM, so every stored
  image has the same percentile-window statistics whatever its source (a 12-bit
  image in a 16-bit PNG container is stretched to the full range too). Integer
  levels get the same result, bit for bit, from a histogram and a value table
  (:func:`normalise_through_table`), as DICOM stored values do.
- Colour files are converted to luminance (ITU-R 601, Pillow's ``convert("L")``
  weights), because radiographs are often saved as RGB with R == G == B. A file in
  which more than :data:`COLOUR_PIXEL_FRACTION` of the pixels carry strong chroma
  (max - min channel > :data:`CHROMA_THRESHOLD` of full scale) is rejected as
  ``not_chest_xray``: it is a photograph, a chart or a heavily annotated screenshot.
  A few coloured arrows or labels stay under the limit and pass.
- A constant image (nothing to normalise) is rejected as ``corrupt_pixels``; a file
  Pillow does not recognise as ``unsupported_format``.
- For PNG/JPEG, ``photometric`` is the Pillow mode ("L", "I;16", "RGB", "P"...).
- An EXIF Orientation (JPEG, PNG ``eXIf``) of 2..8 is applied as viewers and Pillow's
  ``ImageOps.exif_transpose`` do (:mod:`cxrkit.io.orientation`), after decoding and
  before normalising, in the full and the reduced decode alike; ``full_shape`` and
  ``meta["orig_height"/"orig_width"]`` are then the upright image's, and
  ``meta["exif_orientation"]`` records the value applied (None: nothing applied). A bad
  value or an unparsable EXIF block is ignored: the pixels are kept as stored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cxrkit.errors import Reject
from cxrkit.io.decoded import DecodedImage, empty_meta
from cxrkit.io.intensity import normalise_through_table, robust_normalise
from cxrkit.io.jpeg_reduce import draft_levels
from cxrkit.io.orientation import apply_orientation, exif_orientation
from cxrkit.io.path_scrub import scrub_detail

CHROMA_THRESHOLD = 0.1  # (max - min channel) / full scale that counts as "coloured"
COLOUR_PIXEL_FRACTION = 0.05  # more coloured pixels than this -> not a radiograph
# The colour check looks at a strided subsample of big images: the fraction is
# stable at ~250k pixels and the full image would cost 10x more.
_STATS_MAX_PIXELS = 1 << 18


def _subsample(arr: np.ndarray, max_pixels: int = _STATS_MAX_PIXELS) -> np.ndarray:
    """A strided view of `arr` with at most ~`max_pixels` pixels (no copy)."""
    step = max(1, int(np.ceil(np.sqrt(arr.shape[0] * arr.shape[1] / max_pixels))))
    return arr[::step, ::step]


def _check_colour(rgb: np.ndarray) -> None:
    """Reject images with strong chroma in many pixels. `rgb`: (H, W, 3) uint8."""
    sample = _subsample(rgb).astype(np.int16)
    chroma = sample.max(axis=2) - sample.min(axis=2)  # (h, w)
    fraction = float(np.mean(chroma > CHROMA_THRESHOLD * 255))
    if fraction > COLOUR_PIXEL_FRACTION:
        raise Reject(
            "not_chest_xray",
            f"colour image: {fraction:.0%} of pixels have strong chroma "
            f"(radiographs are grey; limit {COLOUR_PIXEL_FRACTION:.0%})",
        )


def _pil_to_levels(img: Image.Image) -> tuple[np.ndarray, int | None]:
    """A loaded Pillow image as (H, W) grey levels and their full-scale value.

    Integer modes give (uint8/uint16/int32 levels, 255 or 65535): level ``v`` reads
    as ``v / full_scale``. Float images, and 32-bit ones beyond 16 bits, give
    (float32 array, None).
    """
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img).astype(np.uint16, copy=False), 65535
    if mode == "I":  # 16-bit PNGs open as 32-bit int in older Pillow
        arr = np.asarray(img)
        maxval = 65535 if arr.max(initial=0) > 255 else 255
        if arr.min(initial=0) < 0 or arr.max(initial=0) > maxval:
            return arr.astype(np.float32) / np.float32(maxval), None
        return arr, maxval
    if mode == "F":
        return np.asarray(img, dtype=np.float32), None
    if mode in ("L", "1"):
        return np.asarray(img.convert("L")), 255
    if mode == "LA":
        return np.asarray(img.getchannel("L")), 255
    # RGB, RGBA, P (palette), CMYK, YCbCr...: check chroma, then luminance.
    rgb = img.convert("RGB")
    _check_colour(np.asarray(rgb))
    return np.asarray(rgb.convert("L")), 255


def _levels_to_unit(
    levels: np.ndarray, full_scale: int | None, low_pct: float, high_pct: float
) -> np.ndarray:
    """Robust-normalise grey levels (see :func:`_pil_to_levels`) to float32 [0, 1]."""
    if full_scale is None:
        return robust_normalise(levels, low_pct, high_pct)
    # Integer levels: percentiles from the histogram, the same values and the same
    # result as robust_normalise(levels / full_scale) in float32, ~2x faster.
    table = np.arange(full_scale + 1, dtype=np.float32) / np.float32(full_scale)
    return normalise_through_table(levels, table, low_pct, high_pct)


def read_image(
    path: str | Path,
    *,
    low_pct: float = 0.5,
    high_pct: float = 99.5,
    max_pixels: int = 100_000_000,
    decode_long_side: int | None = None,
) -> DecodedImage:
    """Decode a PNG or JPEG radiograph.

    Takes: a file path and the robust-normalisation percentiles; `decode_long_side`, the
    long side the caller will downscale to, lets a JPEG decode at the smallest 1/2, 1/4
    or 1/8 DCT scale still at least that large (:mod:`cxrkit.io.jpeg_reduce`; None:
    always full resolution). Returns: a :class:`DecodedImage` (robust-normalised
    float32, `photometric` = Pillow mode, `meta` from :func:`empty_meta` with the
    source's size and ``exif_orientation``; after a reduced decode `pixels` is smaller
    and `full_shape` is the source's (H, W)). An EXIF orientation is applied (module
    docstring): sizes are then those of the upright image.
    Raises: Reject("corrupt_pixels") for truncated/undecodable files or a constant
    image; Reject("not_chest_xray") for strongly coloured images; Reject
    ("unsupported_format") when Pillow does not recognise the file.
    """
    path = Path(path)
    try:
        decoded = None
        if decode_long_side:
            decoded = _load_levels(path, max_pixels, decode_long_side)
        if decoded is None:  # full resolution, and the errors of record
            decoded = _load_levels(path, max_pixels, None)
        fmt, mode, (height, width), (levels, full_scale), orientation = decoded
    except UnidentifiedImageError as exc:
        detail = scrub_detail(f"not a PNG/JPEG image Pillow can read: {exc}", path)
        raise Reject("unsupported_format", detail) from exc
    except Image.DecompressionBombError as exc:  # Pillow's own limit, at open
        raise Reject("too_large", scrub_detail(str(exc), path)) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        detail = scrub_detail(f"cannot decode: {exc}", path)
        raise Reject("corrupt_pixels", detail) from exc
    source_format = "jpeg" if fmt in ("jpeg", "mpo") else fmt or "unknown"
    if orientation is not None:
        levels = apply_orientation(levels, orientation)
        if orientation >= 5:  # a quarter turn or a transpose: the upright image is W x H
            height, width = width, height
    pixels = _levels_to_unit(levels, full_scale, low_pct, high_pct)
    reduced = pixels.shape != (height, width)
    meta = empty_meta(orig_height=height, orig_width=width, photometric=mode)
    meta["exif_orientation"] = orientation
    return DecodedImage(
        pixels=pixels,
        source_format=source_format,
        photometric=mode,
        meta=meta,
        full_shape=(height, width) if reduced else None,
    )


def _load_levels(
    path: Path, max_pixels: int, decode_long_side: int | None
) -> tuple[str, str, tuple[int, int], tuple[np.ndarray, int | None], int | None] | None:
    """Open and decode `path`: (format, mode, source (H, W) as stored,
    :func:`_pil_to_levels` as stored, :func:`~cxrkit.io.orientation.exif_orientation`).

    With `decode_long_side`, a JPEG is decoded at a reduced DCT scale where one applies
    (else in full from the same open file); None then means "the reduced decode failed:
    open again and decode in full" (the failure is left for the full decode to report).
    Pillow's errors of a full decode propagate.
    """
    with Image.open(path) as img:
        width, height = img.size  # from the header; nothing decoded yet
        if width * height > max_pixels:
            raise Reject(
                "too_large",
                f"header claims {width}x{height} pixels > max_pixels {max_pixels:,}",
            )
        fmt, mode = (img.format or "").lower(), img.mode
        if decode_long_side is not None:
            try:
                if draft_levels(img, decode_long_side) > 0:
                    img.load()
                    return fmt, mode, (height, width), _pil_to_levels(img), exif_orientation(img)
            except Reject:
                raise
            except (OSError, ValueError, SyntaxError, IndexError, TypeError):
                return None
            # No scale to skip (a PNG, a small JPEG): draft set nothing, decode this in full.
        img.load()  # decode now: truncation surfaces here, not later
        return fmt, mode, (height, width), _pil_to_levels(img), exif_orientation(img)
