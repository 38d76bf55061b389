"""Grey images as the chest-contour code sees them: 2-D, downscaled, percentile-normalised.

Shared by :mod:`cxrkit.vision.contour` (its working copy) and :mod:`cxrkit.vision.masks`
(preview tiles show the image as the contour saw it).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from cxrkit.errors import InputError


def as_2d(image: np.ndarray) -> np.ndarray:
    """Accept (H, W) or (H, W, 1)/(1, H, W) arrays; raise InputError otherwise."""
    array = np.asarray(image)
    if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
        array = array.reshape(array.shape[1:] if array.shape[0] == 1 else array.shape[:2])
    if array.ndim != 2 or array.size == 0:
        raise InputError(
            f"chest_contour: expected a 2-D grey image, got shape {array.shape}; "
            "convert colour images to one channel first"
        )
    return array


def normalise_percentiles(array: np.ndarray) -> np.ndarray:
    """float32 in [0, 1] by the 0.5/99.5 percentiles (robust to burnt-in text)."""
    values = array.astype(np.float32)
    if not np.isfinite(values).all():
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = np.percentile(values, [0.5, 99.5])
    if high - low < 1e-6:
        return np.zeros_like(values)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def downscale(array: np.ndarray, long_side: int) -> np.ndarray:
    """Antialiased bilinear resize of a float image so its long side is <= long_side."""
    height, width = array.shape
    scale = long_side / max(height, width)
    if scale >= 1.0:
        return array.astype(np.float32, copy=False)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = Image.fromarray(array.astype(np.float32, copy=False), mode="F")
    return np.asarray(image.resize(size, Image.BILINEAR, reducing_gap=2.0))
