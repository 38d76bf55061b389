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
3. stored image: downscale the long side to ``store_size`` (Pillow bilinear on
   float, ``reducing_gap=2``; never upscaled) and round to ``store_dtype``
   (uint8: 0..255).
4. model input: resize the long side to ``image_size`` (torch bilinear,
   antialiased), clamp to [0, 1], centre-pad to a square with black (0). The
   image is letterboxed, never cropped: timm's ``create_transform`` with
   ``crop_mode="center"`` would cut the costophrenic angles off a portrait film.
5. normalise: ``(x - mean) / std``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

TRANSFORM_VERSION = 1
TRANSFORM_KEYS = ("image_size", "mean", "std", "low_pct", "high_pct", "store_size", "store_dtype")
_FULL_SCALE = {"uint8": 255, "uint16": 65535}


def transform_config(export_dir: str | Path = ".") -> dict[str, Any]:
    """The keyword arguments of :func:`preprocess` recorded in an export.

    Reads ``image_encoder/config.json`` (section ``cxrkit.transform``) under
    ``export_dir``, or ``config.json`` when ``export_dir`` is the encoder folder.
    """
    root = Path(export_dir)
    path = (
        root / "config.json"
        if (root / "config.json").is_file()
        else root / "image_encoder" / "config.json"
    )
    transform = json.loads(path.read_text())["cxrkit"]["transform"]
    return {k: transform[k] for k in TRANSFORM_KEYS if k in transform}


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
            return grey_levels(opened)
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


def stored_image(windowed: np.ndarray, store_size: int, store_dtype: str) -> np.ndarray:
    """Step 3: the image as cxrkit's dataset stores it (long side <= store_size, integers)."""
    height, width = windowed.shape
    if max(height, width) > store_size:
        scale = store_size / max(height, width)
        new_h = store_size if height >= width else max(1, round(height * scale))
        new_w = store_size if width > height else max(1, round(width * scale))
        small = Image.fromarray(np.ascontiguousarray(windowed, np.float32), mode="F").resize(
            (new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=2.0
        )
        windowed = np.asarray(small, dtype=np.float32)
    full = _FULL_SCALE[store_dtype]
    scaled = np.clip(windowed, 0.0, 1.0) * np.float32(full)
    return np.rint(scaled).astype(store_dtype)


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
) -> torch.Tensor:
    """Steps 1-5 (see the module docstring) on one image; returns float32 (1, 1, S, S).

    Takes a PNG/JPEG path, a Pillow image or a (H, W) array (DICOM: after its LUTs,
    bright bone). Raises ValueError for a constant image or a colour array.
    """
    windowed = percentile_window(grey_levels(image), low_pct, high_pct)
    return model_input(stored_image(windowed, store_size, store_dtype), image_size, mean, std)
