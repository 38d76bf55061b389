"""Prepare one chest radiograph exactly as cxrkit does before its image encoder.

This file is shipped in every cxrkit export as ``preprocess.py`` and needs only
numpy, Pillow and torch (no cxrkit). Inside cxrkit it is
``cxrkit.export.preprocess``. Usage, from an export directory::

    from preprocess import preprocess, transform_config
    x = preprocess("image.jpg", **transform_config("."))   # (1, 1, S, S) float32
    embedding = encoder(x)

The steps, which are cxrkit's ingest followed by its evaluation transform:

1. grey levels: PNG/JPEG through Pillow (8-bit as is, 16-bit levels as is, colour
   to luminance with ``convert("L")``), scaled to [0, 1] by the full scale
   (255 or 65535). DICOM: pass a numpy array after the modality and VOI LUTs with
   MONOCHROME1 inverted (bright bone), e.g. with pydicom's ``apply_modality_lut``
   and ``apply_voi_lut``.
2. percentile window: clip to the ``low_pct`` and ``high_pct`` percentiles
   (0.5 and 99.5 by default; numpy's ``inverted_cdf`` order statistics) and map
   that range linearly to [0, 1].
   A JPEG file is decoded as ingest decoded it (``decode_reduce`` "lossy" or
   "all", ingest's default): at the smallest libjpeg DCT scale (1/2, 1/4, 1/8)
   whose long side is still >= ``store_size`` (Pillow's ``draft``), and the
   window is taken on that image. Pillow images and arrays are taken as decoded.
   A PNG/JPEG file's EXIF Orientation 2..8 is applied after decoding, as ingest and
   Pillow's ``ImageOps.exif_transpose`` do (a bad value or broken EXIF is ignored);
   for a Pillow image you opened, call ``exif_transpose`` yourself.
3. stored image: downscale the long side to ``store_size`` (Pillow bilinear on
   float, ``reducing_gap=2``; the size follows the source's full size; never
   upscaled) and round to ``store_dtype`` (uint8: 0..255).
4. model input: resize the long side to ``image_size`` (torch bilinear,
   antialiased), clamp to [0, 1], centre-pad to a square with black (0). The
   image is letterboxed, never cropped: timm's ``create_transform`` with
   ``crop_mode="center"`` would cut the costophrenic angles off a portrait film.
5. normalise: ``(x - mean) / std``.
"""

from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# 2: decode_reduce (a JPEG decoded at a reduced DCT scale, as ingest does);
# 3: a file's EXIF orientation applied, as ingest does.
TRANSFORM_VERSION = 3
TRANSFORM_KEYS = (
    "image_size",
    "mean",
    "std",
    "low_pct",
    "high_pct",
    "store_size",
    "store_dtype",
    "decode_reduce",
)
_DCT_LEVELS = 3  # libjpeg scales by 1/2, 1/4, 1/8
_FULL_SCALE = {"uint8": 255, "uint16": 65535}
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ERRORS = (OSError, ValueError, SyntaxError, KeyError, IndexError, TypeError, EOFError)
_EXIF_ERRORS += (struct.error,)


def transform_config(export_dir: str | Path = ".") -> dict[str, Any]:
    """The keyword arguments of :func:`preprocess` recorded in an export.

    Reads ``image_encoder/config.json`` (section ``cxrkit.transform``) under
    ``export_dir``, ``config.json`` when ``export_dir`` is the encoder folder, or the
    export's ``metadata.json`` (``preprocessing.transform``) when no image encoder
    folder was exported (an open_clip-only export).
    """
    root = Path(export_dir)
    for path in (root / "config.json", root / "image_encoder" / "config.json"):
        if path.is_file():
            transform = json.loads(path.read_text())["cxrkit"]["transform"]
            break
    else:
        meta = json.loads((root / "metadata.json").read_text())
        transform = meta["preprocessing"]["transform"]
    return {k: transform[k] for k in TRANSFORM_KEYS if k in transform}


def draft_jpeg(image: Image.Image, store_size: int) -> tuple[int, int]:
    """Set an opened, not yet loaded JPEG to decode at the DCT scale ingest uses (step 1).

    Takes a Pillow image straight from ``Image.open`` and the stored long side. The
    scale is ``1 / 2**N``, N the largest <= 3 with ``ceil(long side / 2**(N)) >=
    store_size``; other formats and modes than 8-bit grey or RGB are left alone.
    Returns the source's full (H, W), which step 3 sizes the stored image from.
    Raises ValueError when Pillow did not take the scale asked for.
    """
    width, height = image.size
    if image.format not in ("JPEG", "MPO") or image.mode not in ("L", "RGB"):
        return height, width
    n = 0
    while n < _DCT_LEVELS and -(-max(width, height) // (1 << (n + 1))) >= store_size:
        n += 1
    power = 1 << n
    if n == 0 or min(width, height) < power:
        return height, width
    image.draft(image.mode, (width // power, height // power))
    if image.size != (-(-width // power), -(-height // power)):
        raise ValueError(f"JPEG draft gave {image.size} at scale 1/{power}")
    return height, width


def exif_upright(image: Image.Image) -> Image.Image:
    """A loaded file's image turned as its EXIF Orientation says (step 1).

    Orientation 2..8 gives the transposed image (Pillow's ``exif_transpose`` mapping);
    no tag, 1, another value or EXIF that does not parse give ``image`` itself.
    """
    try:
        with warnings.catch_warnings():  # Pillow warns "Corrupt EXIF data" and goes on
            warnings.simplefilter("ignore", UserWarning)
            value = image.getexif().get(0x0112)
    except _EXIF_ERRORS:
        return image
    if isinstance(value, tuple) and len(value) == 1:
        value = value[0]
    method = _EXIF_TRANSPOSE.get(value) if type(value) is int else None
    return image.transpose(method) if method is not None else image


def grey_levels(image: str | Path | Image.Image | np.ndarray) -> np.ndarray:
    """An image as float32 (H, W) in [0, 1] (step 1). Arrays: integers by their dtype's
    maximum, floats as given."""
    if isinstance(image, np.ndarray):
        if image.ndim != 2:
            raise ValueError(f"expected a (H, W) grey image, got shape {image.shape}")
        if image.dtype.kind in "ui":
            return image.astype(np.float32) / np.float32(np.iinfo(image.dtype).max)
        return image.astype(np.float32)
    if not isinstance(image, Image.Image):
        with Image.open(image) as opened:
            opened.load()
            return grey_levels(exif_upright(opened))
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(image).astype(np.float32) / np.float32(65535)
    if image.mode == "I":
        levels = np.asarray(image)
        full = 65535 if levels.max(initial=0) > 255 else 255
        return levels.astype(np.float32) / np.float32(full)
    if image.mode == "F":
        return np.asarray(image, dtype=np.float32)
    if image.mode == "LA":
        image = image.getchannel("L")
    elif image.mode not in ("L", "1"):
        image = image.convert("RGB")
    return np.asarray(image.convert("L")).astype(np.float32) / np.float32(255)


def percentile_window(unit: np.ndarray, low_pct: float, high_pct: float) -> np.ndarray:
    """Step 2: clip to the percentiles and stretch to float32 [0, 1]."""
    low, high = np.percentile(unit.ravel(), [low_pct, high_pct], method="inverted_cdf")
    if high <= low:  # a mostly flat image: min/max instead
        low, high = unit.min(), unit.max()
    if not high > low:
        raise ValueError("constant image: nothing to window")
    out = np.subtract(unit, np.float32(low), dtype=np.float32)
    out *= np.float32(1.0 / (float(high) - float(low)))
    return np.clip(out, 0.0, 1.0, out=out)


def stored_image(
    windowed: np.ndarray,
    store_size: int,
    store_dtype: str,
    full_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Step 3: the image as cxrkit's dataset stores it (long side <= store_size, integers).

    ``full_shape``: the source's (H, W) when ``windowed`` was decoded at a reduced
    scale; the stored size is the one the full image gets.
    """
    height, width = full_shape or windowed.shape
    if max(height, width) > store_size and (
        full_shape is None or windowed.shape != _stored_shape(height, width, store_size)
    ):
        new_h, new_w = _stored_shape(height, width, store_size)
        small = Image.fromarray(np.ascontiguousarray(windowed, np.float32), mode="F").resize(
            (new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=2.0
        )
        windowed = np.asarray(small, dtype=np.float32)
    full = _FULL_SCALE[store_dtype]
    scaled = np.clip(windowed, 0.0, 1.0) * np.float32(full)
    return np.rint(scaled).astype(store_dtype)


def _stored_shape(height: int, width: int, store_size: int) -> tuple[int, int]:
    scale = store_size / max(height, width)
    new_h = store_size if height >= width else max(1, round(height * scale))
    new_w = store_size if width > height else max(1, round(width * scale))
    return new_h, new_w


def model_input(stored: np.ndarray, image_size: int, mean: float, std: float) -> torch.Tensor:
    """Steps 4-5: letterbox to (1, 1, image_size, image_size) and normalise."""
    unit = torch.from_numpy(stored.astype(np.float32) / np.float32(_FULL_SCALE[str(stored.dtype)]))
    height, width = unit.shape
    scale = image_size / max(height, width)
    new_h = min(image_size, max(1, round(height * scale)))
    new_w = min(image_size, max(1, round(width * scale)))
    resized = F.interpolate(
        unit[None, None], size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
    ).clamp_(0.0, 1.0)
    top, left = (image_size - new_h) // 2, (image_size - new_w) // 2
    padded = F.pad(resized, (left, image_size - new_w - left, top, image_size - new_h - top))
    return (padded - mean) / std  # (1, 1, S, S)


def preprocess(
    image: str | Path | Image.Image | np.ndarray,
    *,
    image_size: int,
    mean: float = 0.5,
    std: float = 0.5,
    low_pct: float = 0.5,
    high_pct: float = 99.5,
    store_size: int = 512,
    store_dtype: str = "uint8",
    decode_reduce: str = "lossy",
) -> torch.Tensor:
    """Steps 1-5 (see the module docstring) on one image; returns float32 (1, 1, S, S).

    Takes a PNG/JPEG path, a Pillow image or a (H, W) array (DICOM: after its LUTs,
    bright bone) and the training dataset's settings (``decode_reduce`` "off": JPEGs
    decoded in full). Raises ValueError for a constant image or a colour array.
    """
    full_shape = None
    if isinstance(image, str | Path) and decode_reduce != "off":
        with Image.open(image) as opened:
            full_shape = draft_jpeg(opened, store_size)
            opened.load()
            upright = exif_upright(opened)
            if upright.size != opened.size:  # a quarter turn: the source is W x H upright
                full_shape = (full_shape[1], full_shape[0])
            levels = grey_levels(upright)
    else:
        levels = grey_levels(image)
    windowed = percentile_window(levels, low_pct, high_pct)
    stored = stored_image(windowed, store_size, store_dtype, full_shape)
    return model_input(stored, image_size, mean, std)
