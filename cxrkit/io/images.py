"""Decoding of PNG/JPEG chest radiographs and the intensity/size steps shared with DICOM.

Every reader returns a :class:`DecodedImage`: a (H, W) float32 array in [0, 1] at the
original resolution, bright = bone/dense (the MONOCHROME2 convention), after all
intensity steps. Ingest then calls :func:`resize_long_side` and :func:`quantise`.

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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from cxrkit.errors import Reject

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8\xff"
DICOM_MAGIC_OFFSET = 128

CHROMA_THRESHOLD = 0.1  # (max - min channel) / full scale that counts as "coloured"
COLOUR_PIXEL_FRACTION = 0.05  # more coloured pixels than this -> not a radiograph
# The colour check looks at a strided subsample of big images: the fraction is
# stable at ~250k pixels and the full image would cost 10x more.
_STATS_MAX_PIXELS = 1 << 18

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
    """

    pixels: np.ndarray
    source_format: str
    photometric: str
    meta: dict[str, Any] = field(default_factory=dict)


def empty_meta(**values: Any) -> dict[str, Any]:
    """Return a meta dict with every key of :data:`META_KEYS` (None unless given)."""
    meta: dict[str, Any] = dict.fromkeys(META_KEYS)
    meta.update(values)
    return meta


def looks_like_headerless_dicom(head: bytes) -> bool:
    """Cheap test for a DICOM stream without the 128-byte preamble and 'DICM'.

    Such files (old ACR-NEMA style exports) start directly with an element of group
    0x0002 or 0x0008, in little- or big-endian order, followed either by a valid
    two-letter VR (explicit VR) or a 4-byte length (implicit VR). Random bytes pass
    this with probability ~1e-9, and the caller then still asks pydicom to parse.
    """
    if len(head) < 8:
        return False
    group_le = int.from_bytes(head[0:2], "little")
    group_be = int.from_bytes(head[0:2], "big")
    if group_le not in (0x0002, 0x0008) and group_be not in (0x0002, 0x0008):
        return False
    vr = head[4:6]
    if vr.isalpha() and vr.isupper():
        return True
    big = group_le not in (0x0002, 0x0008)
    length = int.from_bytes(head[4:8], "big" if big else "little")
    return length < (1 << 16)  # first header elements are short strings or group lengths


def _parses_as_dicom(path: Path) -> bool:
    """Whether pydicom, forced, reads at least one recognised element from `path`."""
    import pydicom
    from pydicom.datadict import dictionary_has_tag

    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        return any(dictionary_has_tag(elem.tag) for elem in ds)
    except Exception:  # noqa: BLE001 - any parse failure simply means "not DICOM"
        return False


def sniff_format(path: str | Path) -> str | None:
    """Identify a file by its magic bytes (the extension is ignored).

    Takes: a file path. Returns: "dicom" (preamble + 'DICM', or a header-less DICOM
    stream that pydicom parses), "png", "jpeg", or None for anything else.
    Raises nothing: an unreadable file returns None.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            head = fh.read(DICOM_MAGIC_OFFSET + 4)
    except OSError:
        return None
    if head[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM":
        return "dicom"
    if head.startswith(PNG_SIGNATURE):
        return "png"
    if head.startswith(JPEG_SOI):
        return "jpeg"
    if looks_like_headerless_dicom(head) and _parses_as_dicom(path):
        return "dicom"
    return None


def scrub_path(detail: str, path: Path) -> str:
    """Remove the file's path and name from a message (paths can carry names or MRNs)."""
    for text in sorted({str(path), str(path.absolute()), path.name}, key=len, reverse=True):
        if text:
            detail = detail.replace(text, "<file>")
    return detail


def _subsample(arr: np.ndarray, max_pixels: int = _STATS_MAX_PIXELS) -> np.ndarray:
    """A strided view of `arr` with at most ~`max_pixels` pixels (no copy)."""
    step = max(1, int(np.ceil(np.sqrt(arr.shape[0] * arr.shape[1] / max_pixels))))
    return arr[::step, ::step]


def percentile_window(values: np.ndarray, low_pct: float, high_pct: float) -> tuple[float, float]:
    """The (low, high) clip bounds used by :func:`robust_normalise`.

    Percentiles use numpy's "inverted_cdf" definition (an order statistic, no
    interpolation) so that :func:`histogram_window` reproduces them exactly.
    Falls back to (min, max) when the percentiles coincide (a mostly flat image).
    Raises: Reject("corrupt_pixels") when the image is constant.
    """
    low, high = np.percentile(values, [low_pct, high_pct], method="inverted_cdf")
    if high <= low:
        low, high = values.min(), values.max()
    if not high > low:  # also catches NaN
        raise Reject("corrupt_pixels", f"constant image (all pixels = {float(low):g})")
    return float(low), float(high)


def histogram_window(
    lut: np.ndarray, counts: np.ndarray, low_pct: float, high_pct: float
) -> tuple[float, float]:
    """:func:`percentile_window` of an image given as a value table and a count per entry.

    Takes: ``lut`` (N,) the value of each table entry, in any order (a MONOCHROME1
    table decreases); ``counts`` (N,) how many pixels take each entry. Returns the
    same (low, high) as ``percentile_window`` of the image, bit for bit: the
    percentiles are the same order statistics that np.percentile(method=
    "inverted_cdf") picks. Raises: Reject("corrupt_pixels") when the image is
    constant; ValueError for a percentile outside [0, 100], as np.percentile does.
    """
    order = np.argsort(lut, kind="stable")
    cumulative = np.cumsum(counts[order])
    total = cumulative[-1]
    bounds = []
    for pct in (low_pct, high_pct):
        if not 0.0 <= pct <= 100.0:
            raise ValueError("Percentiles must be in the range [0, 100]")
        # numpy takes the ceil(n * q)-th smallest value, q = pct / 100 (same rounding)
        rank = max(1, int(np.ceil(total * (pct / 100.0))))
        bounds.append(float(lut[order[np.searchsorted(cumulative, rank)]]))
    low, high = bounds
    if high <= low:  # mostly flat image: fall back to min/max of the pixels present
        present = lut[counts > 0]
        low, high = float(present.min()), float(present.max())
    if not high > low:
        raise Reject("corrupt_pixels", f"constant image (all pixels = {low:g})")
    return low, high


def rescale_to_unit(arr: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip `arr` to [low, high] and map linearly to float32 [0, 1] (new array)."""
    out = np.subtract(arr, np.float32(low), dtype=np.float32)
    out *= np.float32(1.0 / (high - low))
    np.clip(out, 0.0, 1.0, out=out)
    return out


def robust_normalise(arr: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
    """Percentile-window an image to float32 [0, 1].

    Takes: any real (H, W) array; percentiles in [0, 100]. Pixels below the
    `low_pct` percentile become 0, above `high_pct` become 1, linear in between.
    Returns: a new float32 array of the same shape.
    Raises: Reject("corrupt_pixels", ...) for a constant (or all-NaN) image.
    """
    if arr.size == 0:
        raise Reject("corrupt_pixels", "empty image")
    low, high = percentile_window(arr.ravel(), low_pct, high_pct)
    return rescale_to_unit(arr, low, high)


def normalise_through_table(
    index: np.ndarray, lut: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5
) -> np.ndarray:
    """``robust_normalise(lut[index])``, bit for bit, without building the float image.

    Takes: ``index`` (H, W) non-negative integers below ``len(lut)`` (stored grey
    levels); ``lut`` (N,) the value each level stands for. The percentiles come from
    the level histogram (:func:`histogram_window`), the window is applied to the N
    table entries, and one gather maps the image: ~2x faster than the float path.
    Returns: float32 (H, W) in [0, 1]. Raises: as :func:`robust_normalise`.
    """
    if index.size == 0:
        raise Reject("corrupt_pixels", "empty image")
    pairs = _level_pairs(index, lut.size)
    if pairs is None:
        counts = np.bincount(index.ravel(), minlength=lut.size)
    else:
        joint = np.bincount(pairs, minlength=1 << 16).reshape(256, 256)  # [second, first]
        counts = joint.sum(axis=0) + joint.sum(axis=1)
    low, high = histogram_window(lut, counts, low_pct, high_pct)
    table = rescale_to_unit(lut, low, high)  # (N,) float32
    if pairs is None:
        return table.take(index)  # take: ~2x faster than [index]
    # Entry first + 256 * second of the pair table holds (table[first], table[second]).
    pair_table = np.stack(np.broadcast_arrays(table[None, :], table[:, None]), axis=-1)
    pair_values = pair_table.view(np.uint64).reshape(-1).take(pairs)  # (H * W / 2,)
    return pair_values.view(np.float32).reshape(index.shape)


def _level_pairs(index: np.ndarray, size: int) -> np.ndarray | None:
    """8-bit levels read two at a time as uint16 ``first + 256 * second``, or None.

    np.bincount stalls on runs of equal values (the flat regions of a radiograph)
    and np.take pays per element; on pixel pairs both do half the passes, which
    halves the cost of an 8-bit image. None unless ``index`` is uint8 with an even
    pixel count and the table has 256 entries.
    """
    if index.dtype != np.uint8 or size != 256 or index.size % 2:
        return None
    return np.ascontiguousarray(index).reshape(-1).view("<u2")


def resize_long_side(arr: np.ndarray, size: int) -> np.ndarray:
    """Downscale so the longer side equals `size`, keeping the aspect ratio.

    Takes: (H, W) float32. Uses Pillow's float ('F') bilinear resize, which widens the
    filter with the scale factor (antialiased), with ``reducing_gap=2`` (a box
    pre-reduction: ~3x faster, visually identical). Never upscales: an image whose
    long side is already <= `size` is returned unchanged (same object).
    Returns: float32 (h, w) with max(h, w) == size.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    height, width = arr.shape
    long_side = max(height, width)
    if long_side <= size:
        return arr
    scale = size / long_side
    new_h = size if height >= width else max(1, round(height * scale))
    new_w = size if width > height else max(1, round(width * scale))
    img = Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32), mode="F")
    small = img.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(small, dtype=np.float32)


_QUANT_MAX = {"uint8": 255, "uint16": 65535}


def quantise(arr: np.ndarray, dtype: str) -> np.ndarray:
    """Map float [0, 1] to "uint8" (0..255) or "uint16" (0..65535), rounding to nearest.

    Values outside [0, 1] are clipped first. Raises: ValueError for another dtype.
    """
    if dtype not in _QUANT_MAX:
        raise ValueError(f"dtype must be 'uint8' or 'uint16', got {dtype!r}")
    scaled = np.clip(arr, 0.0, 1.0) * np.float32(_QUANT_MAX[dtype])
    np.rint(scaled, out=scaled)
    return scaled.astype(dtype)


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


def read_image(path: str | Path, *, low_pct: float = 0.5, high_pct: float = 99.5) -> DecodedImage:
    """Decode a PNG or JPEG radiograph.

    Takes: a file path and the robust-normalisation percentiles. Returns: a :class:`DecodedImage` (robust-normalised float32,
    `photometric` = Pillow mode, `meta` from :func:`empty_meta` with the size filled).
    Raises: Reject("corrupt_pixels") for truncated/undecodable files or a constant
    image; Reject("not_chest_xray") for strongly coloured images; Reject
    ("unsupported_format") when Pillow does not recognise the file.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()  # decode now: truncation surfaces here, not later
            fmt = (img.format or "").lower()
            mode = img.mode
            levels, full_scale = _pil_to_levels(img)
    except UnidentifiedImageError as exc:
        detail = scrub_path(f"not a PNG/JPEG image Pillow can read: {exc}", path)
        raise Reject("unsupported_format", detail) from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        detail = scrub_path(f"cannot decode: {exc}", path)
        raise Reject("corrupt_pixels", detail) from exc
    source_format = "jpeg" if fmt in ("jpeg", "mpo") else fmt or "unknown"
    pixels = _levels_to_unit(levels, full_scale, low_pct, high_pct)
    height, width = pixels.shape
    meta = empty_meta(orig_height=height, orig_width=width, photometric=mode)
    return DecodedImage(pixels=pixels, source_format=source_format, photometric=mode, meta=meta)


def read_any(
    path: str | Path,
    *,
    allow_burned_in: bool = False,
    check_chest: bool = True,
    low_pct: float = 0.5,
    high_pct: float = 99.5,
) -> DecodedImage:
    """Sniff `path` and decode it with the matching reader.

    Returns: a :class:`DecodedImage`. Raises: Reject("not_dicom") when a file named
    like a DICOM (``.dcm``, ``.dicom`` or no extension) is neither DICOM, PNG nor JPEG,
    Reject("unsupported_format") for any other such file, else whatever the reader rejects.
    """
    fmt = sniff_format(path)
    if fmt == "dicom":
        # Imported here: dicom.py imports this module for DecodedImage.
        from cxrkit.io.dicom import read_dicom

        return read_dicom(
            path,
            allow_burned_in=allow_burned_in,
            check_chest=check_chest,
            low_pct=low_pct,
            high_pct=high_pct,
        )
    if fmt in ("png", "jpeg"):
        return read_image(path, low_pct=low_pct, high_pct=high_pct)
    named_dicom = Path(path).suffix.lower() in ("", ".dcm", ".dicom")
    reason = "not_dicom" if named_dicom else "unsupported_format"
    raise Reject(reason, "not DICOM, PNG or JPEG (checked by magic bytes)")
