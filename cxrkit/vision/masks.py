"""Chest-contour masks as data: storage, patch grids, bounding boxes and previews.

:mod:`cxrkit.vision.contour` computes a mask; this module is everything done with
one afterwards. Annotations store masks bit-packed (:func:`pack_mask`), training
turns them into patch-level masks (:func:`mask_to_grid`, the rule HD-MAE's
context-aware masking needs), and ``cxrkit annotate --preview`` draws them
(:func:`preview_grid`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cxrkit.errors import ArtifactError, InputError
from cxrkit.vision.grey import as_2d, downscale, normalise_percentiles


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a bool mask to (height, width)."""
    if mask.shape == (height, width):
        return mask.copy()
    image = Image.fromarray(mask.astype(np.uint8)).resize((width, height), Image.NEAREST)
    return np.asarray(image).astype(bool)


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1), end-exclusive, of the True pixels; (0, 0, 0, 0) when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (0, 0, 0, 0)
    return (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)


def pack_mask(mask: np.ndarray) -> bytes:
    """Pack a bool (H, W) mask row-major, 8 pixels a byte (``np.packbits``, big bit order)."""
    return np.packbits(np.asarray(mask, dtype=bool).ravel()).tobytes()


def unpack_mask(data: bytes, height: int, width: int) -> np.ndarray:
    """Inverse of :func:`pack_mask`: bool (height, width).

    Raises ArtifactError when ``data`` has the wrong length for the size, which
    means the annotations row and the dataset row disagree.
    """
    expected = (height * width + 7) // 8
    if height <= 0 or width <= 0 or len(data) != expected:
        raise ArtifactError(
            f"contour mask has {len(data)} bytes, expected {expected} for {height}x{width}; "
            "the annotations artifact does not match this dataset (re-run `cxrkit annotate`)"
        )
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=height * width)
    return bits.reshape(height, width).astype(bool)


def mask_to_grid(mask: np.ndarray, grid_h: int, grid_w: int) -> np.ndarray:
    """Patch-level mask: bool (grid_h, grid_w), a patch is inside when >= half its pixels are.

    Patch borders are the rounded multiples of H / grid_h and W / grid_w, so sizes
    that do not divide evenly still give every pixel to exactly one patch. A mask
    smaller than the grid is first upscaled (nearest neighbour).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2 or grid_h <= 0 or grid_w <= 0:
        raise InputError(
            f"mask_to_grid: need a 2-D mask and a positive grid, got {mask.shape} -> {grid_h}x{grid_w}"
        )
    height, width = mask.shape
    if height < grid_h or width < grid_w:
        height, width = max(height, grid_h), max(width, grid_w)
        mask = resize_mask(mask, height, width)
    rows = np.linspace(0, height, grid_h + 1).round().astype(np.intp)
    cols = np.linspace(0, width, grid_w + 1).round().astype(np.intp)
    counts = np.add.reduceat(mask.astype(np.int32), rows[:-1], axis=0)
    counts = np.add.reduceat(counts, cols[:-1], axis=1)  # (grid_h, grid_w)
    areas = np.diff(rows)[:, None] * np.diff(cols)[None, :]
    return 2 * counts >= areas


def _tile(image: np.ndarray, mask: np.ndarray | None, size: int, title: str | None) -> Image.Image:
    """One preview tile: grey image, red translucent mask, yellow bbox, optional title."""
    # The tile shows the image as the contour saw it.
    grey = normalise_percentiles(downscale(as_2d(image).astype(np.float32), size))
    grey = (grey * 255).astype(np.uint8)
    tile = Image.fromarray(grey).convert("RGB")
    if mask is not None:
        small = resize_mask(np.asarray(mask, dtype=bool), *grey.shape)
        red = Image.new("RGB", tile.size, (255, 40, 40))
        alpha = Image.fromarray((small * 90).astype(np.uint8))  # 35 % opacity inside the mask
        tile = Image.composite(red, tile, alpha)
        y0, x0, y1, x1 = mask_bbox(small)
        if y1 > y0:
            ImageDraw.Draw(tile).rectangle((x0, y0, x1 - 1, y1 - 1), outline=(255, 220, 0), width=2)
    if title:
        ImageDraw.Draw(tile).text((4, 4), title, fill=(0, 255, 0))
    return tile


def preview_grid(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None],
    path: str | Path,
    cols: int = 4,
    titles: Sequence[str] | None = None,
    tile_size: int = 256,
) -> Path:
    """Write a PNG contact sheet: each image with its mask as a red overlay and its bbox.

    Takes equal-length sequences of 2-D images and bool masks (a mask may be None
    or of another resolution than its image), optional per-tile titles. Returns
    the PNG path (parent folders are created). Raises InputError on mismatched
    lengths or an empty list.
    """
    if (
        not images
        or len(images) != len(masks)
        or (titles is not None and len(titles) != len(images))
    ):
        raise InputError(
            f"preview_grid: need as many masks (and titles) as images, got "
            f"{len(images)} images, {len(masks)} masks"
        )
    tiles = [
        _tile(image, mask, tile_size, titles[index] if titles else None)
        for index, (image, mask) in enumerate(zip(images, masks, strict=True))
    ]
    cols = max(1, min(cols, len(tiles)))
    rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * tile_size, rows * tile_size))
    for index, tile in enumerate(tiles):
        row, col = divmod(index, cols)
        # centre each tile in its cell: images keep their aspect ratio
        offset = ((tile_size - tile.width) // 2, (tile_size - tile.height) // 2)
        sheet.paste(tile, (col * tile_size + offset[0], row * tile_size + offset[1]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG")
    return path
