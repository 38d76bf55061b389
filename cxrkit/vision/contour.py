"""Chest-contour masks by classical image processing (no model weights).

The mask marks the thoracic region of a frontal chest X-ray: both lung fields
plus the mediastinum between them. HD-MAE's context-aware masking masks the
patches inside this "chest line" with a higher ratio than those outside
(HD-MAE, Sec. III-B "Context-Aware Masking").

Pipeline, on a copy downscaled to ``WORK_SIZE`` long side (the mask is resized
back to the stored resolution at the end):

1. robust normalise to [0, 1] and smooth;
2. background = dark regions connected to the image border; body = the rest
   (largest component, holes filled);
3. lung candidates = dark pixels well inside the body and below the shoulders,
   thresholded with Otsu's method on the body's own histogram (a lower and a
   higher threshold are tried next when that finds no lungs);
4. a wide opening cuts lungs from the shoulder and arm soft tissue; the best
   blob per side is picked by size and height; a pair that is not mirror
   symmetric about the spine keeps only its more medial blob;
5. thorax = convex hull of the lungs and their mirror images about the spine
   (this takes in the mediastinum and heart, and survives one lung hidden by
   opacity), grown by a small margin and clipped to the body.

When the result looks implausible (no lung field, lungs barely darker than the
mediastinum, no diaphragm below them, too small, too large or off centre) the
result has ``quality="low"``, a ``reason``, and a centred box mask, so
downstream masking still works on odd images. Input convention: 2-D array,
bright = bone (MONOCHROME2), lungs dark; an inverted (MONOCHROME1) film is not
detected and gives a meaningless mask.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from cxrkit.vision.grey import as_2d, downscale, normalise_percentiles
from cxrkit.vision.masks import mask_bbox, resize_mask
from cxrkit.vision.morphology import (
    border_connected,
    dilate,
    largest_component,
    opening,
    otsu_threshold,
)

log = logging.getLogger(__name__)

WORK_SIZE = 192
"""Long side (pixels) of the internal working copy; the mask is upscaled after."""

FALLBACK_BOX = (0.85, 0.80)
"""(height, width) fractions of the centred box used when the contour is implausible."""

AREA_RANGE = (0.12, 0.90)
"""Plausible fraction of the body's bounding box covered by the thorax mask."""

MIN_BODY_FRACTION = 0.06
"""Least fraction of the frame the body must cover (below it: a blank or a mostly-border image)."""


@dataclass(frozen=True)
class ContourResult:
    """A chest-contour mask at the input image's resolution.

    ``mask`` bool (H, W); ``bbox`` (y0, x0, y1, x1), end-exclusive; ``quality`` is
    "ok" for a plausible contour, "low" for the centred-box fallback; ``reason``
    says why quality is low (None when ok).
    """

    mask: np.ndarray
    bbox: tuple[int, int, int, int]
    quality: str
    area_fraction: float
    reason: str | None = None


# ---------------------------------------------------------------- body and lungs


def _body_mask(smooth: np.ndarray) -> np.ndarray:
    """Body = everything not dark-and-connected-to-the-border, largest part, no holes."""
    low = float(np.percentile(smooth, 1))
    # The body's typical level ignores near-black pixels, so that wide black padding
    # (more than half the frame) does not drag the level down to the background.
    lit = smooth[smooth > low + 0.05]
    level = float(np.median(lit)) if lit.size else low
    dark = smooth < low + 0.25 * (level - low)
    body = ~border_connected(dark)
    body = ndimage.binary_opening(body, iterations=2)
    return ndimage.binary_fill_holes(largest_component(body))


def _below_shoulders(body: np.ndarray, drop: float = 0.15) -> np.ndarray:
    """Pixels at least ``drop`` of the body height below the body's top edge in their column.

    The soft tissue over the shoulders and in the axillae is as dark as lung in
    children, and sits just under the body's upper outline; the lung apices lie
    deeper. Columns where the body is cut by the image's top edge (neck, or an
    adult film cropped at the apices) carry no such information and are kept.
    """
    height = body.shape[0]
    has_body = body.any(axis=0)
    top = np.where(has_body, np.argmax(body, axis=0), height)  # first body row per column
    rows = np.nonzero(body.any(axis=1))[0]
    body_height = rows[-1] - rows[0] + 1 if rows.size else height
    limit = np.where(top == 0, 0, top + drop * body_height)
    return np.arange(height)[:, None] >= limit[None, :]


def _lung_candidates(
    smooth: np.ndarray, body: np.ndarray, threshold_scale: float, body_size: float
) -> np.ndarray:
    """Dark blobs well inside the body: the lung fields and sometimes axillae/shoulders.

    Pixels near the body edge are dropped first (thin soft tissue there is as dark
    as lung), then a small opening removes specks and thin strands.
    """
    depth = ndimage.distance_transform_cdt(np.pad(body, 1), metric="chessboard")[1:-1, 1:-1]
    inner = (depth > 0.04 * body_size) & _below_shoulders(body)
    if inner.sum() < 0.05 * smooth.size:
        return np.zeros_like(body)
    threshold = otsu_threshold(smooth[inner]) * threshold_scale
    dark = inner & (smooth < threshold)
    return opening(dark, max(1.0, 0.02 * body_size))


@dataclass
class _Blob:
    label: int
    area: int
    row: float  # centroid and lowest row, relative to the body's bounding box
    col: float
    bottom: float


def _blobs(candidates: np.ndarray, body: np.ndarray) -> tuple[np.ndarray, list[_Blob]]:
    """Label candidates; centroids relative to the body's bounding box."""
    labels, count = ndimage.label(candidates)
    rows, cols = np.nonzero(body)
    y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    min_area = 0.01 * (y1 - y0) * (x1 - x0)  # a lung field is never under 1 % of the body box
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    centres = ndimage.center_of_mass(candidates, labels, range(1, count + 1))
    boxes = ndimage.find_objects(labels)
    blobs = []
    for label, (cy, cx) in enumerate(centres, start=1):
        if areas[label] >= min_area:
            bottom = (boxes[label - 1][0].stop - y0) / (y1 - y0)
            blobs.append(
                _Blob(
                    label, int(areas[label]), (cy - y0) / (y1 - y0), (cx - x0) / (x1 - x0), bottom
                )
            )
    return labels, blobs


def _lung_score(blob: _Blob) -> float:
    """Area weighted by how close the centroid is to mid-chest height.

    Shoulder and axillary soft tissue sits high (centroid in the top fifth of
    the body); a lung field's centroid sits near the middle.
    """
    return blob.area * float(np.exp(-(((blob.row - 0.5) / 0.25) ** 2)))


def _pick_lungs(blobs: list[_Blob]) -> list[_Blob]:
    """One blob per side that looks like a lung field: [], [one] or [left, right].

    A lung field's centroid lies in the middle band of the body and it reaches
    down past the upper 40 % of the body (shoulder blobs do not). When the two
    sides disagree badly (one far smaller, or at a different height) only the
    better one is kept: an opaque lung is common, a lopsided thorax is not.
    """
    zone = [b for b in blobs if 0.15 <= b.row <= 0.8 and 0.06 <= b.col <= 0.94 and b.bottom >= 0.4]
    sides = [[b for b in zone if b.col < 0.5], [b for b in zone if b.col >= 0.5]]
    picked = [max(side, key=_lung_score) for side in sides if side]
    if len(picked) == 2:
        small, large = sorted(picked, key=_lung_score)
        if small.area < 0.2 * large.area or abs(small.row - large.row) > 0.2:
            picked = [large]
    return picked


def _midline(smooth: np.ndarray, lungs: np.ndarray, start: int, stop: int) -> float:
    """Column of the spine/mediastinum: the brightest column in [start, stop) at lung height."""
    rows = np.nonzero(lungs.any(axis=1))[0]
    start = max(0, min(start, smooth.shape[1] - 1))
    stop = max(start + 1, min(stop, smooth.shape[1]))
    profile = smooth[rows[0] : rows[-1] + 1, start:stop].mean(axis=0)
    return float(start + np.argmax(profile))


def _axis_range(body: np.ndarray, lungs: list[np.ndarray]) -> tuple[int, int]:
    """Columns where the midline may lie: between two lungs, else the body's central band."""
    centres = sorted(float(np.nonzero(lung)[1].mean()) for lung in lungs)
    if len(centres) == 2:
        return int(centres[0]), int(np.ceil(centres[1])) + 1
    cols = np.nonzero(body.any(axis=0))[0]
    centre, width = (cols[0] + cols[-1]) / 2, cols[-1] - cols[0] + 1
    return int(centre - 0.12 * width), int(centre + 0.12 * width) + 1


def _hull_mask(
    points_xy: np.ndarray, shape: tuple[int, int], margin: float = 0.0
) -> np.ndarray | None:
    """Rasterised convex hull of (N, 2) x/y points grown by ``margin`` pixels.

    Returns None if the points are degenerate (collinear, too few).
    """
    try:
        hull = ConvexHull(points_xy)
    except (QhullError, ValueError):
        return None
    (x0, y0), (x1, y1) = points_xy.min(axis=0) - margin, points_xy.max(axis=0) + margin
    y0, x0 = max(0, int(y0)), max(0, int(x0))
    y1, x1 = min(shape[0], int(np.ceil(y1)) + 1), min(shape[1], int(np.ceil(x1)) + 1)
    ys, xs = np.mgrid[y0:y1, x0:x1]
    grid = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], axis=1)  # (h*w, 3)
    # Each hull facet is a half-plane a*x + b*y + c <= 0 with (a, b) a unit normal, so
    # "<= margin" moves every edge outward by `margin` pixels.
    inside = (grid @ hull.equations.T <= margin + 0.5).all(axis=1)
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, x0:x1] = inside.reshape(ys.shape)
    return mask


def _symmetric_pair(
    smooth: np.ndarray, body: np.ndarray, lungs: list[np.ndarray]
) -> list[np.ndarray]:
    """Drop the more lateral of two "lungs" that are not mirror images about the spine.

    An arm or axilla held away from the chest can pass for a lung field on its
    own; the pair then straddles the spine off centre.
    """
    if len(lungs) != 2:
        return lungs
    axis = _midline(smooth, lungs[0] | lungs[1], *_axis_range(body, lungs[:1]))
    centres = [float(np.nonzero(lung)[1].mean()) for lung in lungs]
    cols = np.nonzero(body.any(axis=0))[0]
    if abs((centres[0] + centres[1]) / 2 - axis) <= 0.07 * (cols[-1] - cols[0] + 1):
        return lungs
    return [min(zip(centres, lungs, strict=True), key=lambda item: abs(item[0] - axis))[1]]


def _thorax(
    smooth: np.ndarray, body: np.ndarray, lungs: list[np.ndarray], body_size: float
) -> np.ndarray | None:
    """Convex hull of the lungs and their mirror images about the midline, within the body.

    The hull takes in the mediastinum and heart between the lungs. Mirroring makes
    the mask robust to one lung field hidden by opacity (pneumonia, effusion): the
    rib cage is close to symmetric even when its contents are not.
    """
    union = np.logical_or.reduce(lungs)
    axis = _midline(smooth, union, *_axis_range(body, lungs))
    edge = union & ~ndimage.binary_erosion(union)
    ys, xs = np.nonzero(edge)
    mirrored = 2 * axis - xs
    points = np.column_stack([np.concatenate([xs, mirrored]), np.concatenate([ys, ys])])
    margin = 0.015 * body_size  # ribs and pleura just outside the lung fields
    hull = _hull_mask(points.astype(np.float64), union.shape, margin)
    if hull is None:
        return None
    return ndimage.binary_fill_holes(largest_component(hull & body))


LUNG_CONTRAST_MIN = 0.13
"""Least mean brightness gap (normalised units) between the mediastinum and the lungs."""


def _not_lung_like(
    smooth: np.ndarray, body: np.ndarray, lungs: list[np.ndarray], thorax: np.ndarray
) -> str | None:
    """Why the "lungs" are probably not lungs (noise, CT/MR slices, shapes), or None.

    Real lung fields are clearly darker than the mediastinum between them, end
    above the diaphragm (something of the body lies below them) and fill well
    under two thirds of the thorax hull. The thresholds hold with a margin on the
    bundled adult and pediatric radiographs and reject uniform noise and the
    bundled CT, MR and ultrasound images.
    """
    union = np.logical_or.reduce(lungs)
    between = thorax & ~union
    if not between.any():
        return "no mediastinum between the lung fields"
    contrast = float(smooth[between].mean() - smooth[union].mean())
    if contrast < LUNG_CONTRAST_MIN:
        return f"lung fields barely darker than the mediastinum (gap {contrast:.2f})"
    body_rows = np.flatnonzero(body.any(axis=1))
    lung_bottom = np.flatnonzero(union.any(axis=1))[-1]
    if lung_bottom - body_rows[0] > 0.93 * (body_rows[-1] - body_rows[0] + 1):
        return "dark region reaches the bottom of the body (no diaphragm)"
    if union.sum() > 0.6 * thorax.sum():
        return "dark region fills the thorax outline"
    return None


def _implausible(mask: np.ndarray, body: np.ndarray) -> str | None:
    """Why a thorax mask is implausible for its body (both at working resolution), or None.

    Judged against the body's bounding box rather than the frame, so that a
    chest in a wide black border is still "ok".
    """
    y0, x0, y1, x1 = mask_bbox(body)
    box = mask[y0:y1, x0:x1]
    fraction = float(box.mean())
    if not AREA_RANGE[0] <= fraction <= AREA_RANGE[1]:
        low, high = AREA_RANGE
        return f"contour covers {fraction:.0%} of the body (plausible: {low:.0%}-{high:.0%})"
    height, width = box.shape
    rows, cols = np.nonzero(box)
    if not 0.25 <= cols.mean() / width <= 0.75 or not 0.15 <= rows.mean() / height <= 0.8:
        return "contour is off centre"
    if (cols.max() - cols.min() + 1) < 0.3 * width or (rows.max() - rows.min() + 1) < 0.25 * height:
        return "contour is too narrow or too short"
    return None


THRESHOLD_SCALES = (1.0, 0.9, 1.1)
"""Multiples of the Otsu threshold tried in turn until a plausible lung pair is found."""


def _thorax_small(small: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """Thorax mask at working resolution, or (None, reason)."""
    if min(small.shape) < 16:
        return None, f"image too small or too thin ({small.shape[0]}x{small.shape[1]} at work size)"
    if float(small.max() - small.min()) < 1e-3:
        return None, "image is constant"
    sigma = 0.01 * max(small.shape)  # merges lung field across the rib shadows
    smooth = ndimage.gaussian_filter(small, sigma)
    body = _body_mask(smooth)
    if body.mean() < MIN_BODY_FRACTION:
        return None, "no body found (image mostly background)"
    reason = "no lung fields found"
    y0, x0, y1, x1 = mask_bbox(body)
    body_size = float(max(y1 - y0, x1 - x0))  # sizes below scale with the body, not the frame
    core_radius = max(1.0, 0.035 * body_size)
    for scale in THRESHOLD_SCALES:
        dark = _lung_candidates(smooth, body, scale, body_size)
        # Cores: a wide opening cuts the bridges from a lung to the shoulder or
        # arm; the lung's own outline is restored from `dark` after.
        cores = opening(dark, core_radius)
        labels, blobs = _blobs(cores, body)
        picked = _pick_lungs(blobs)
        if not picked:
            reason = "no lung field found"
            continue
        lungs = [
            largest_component(dark & dilate(labels == b.label, core_radius + 2)) for b in picked
        ]
        lungs = _symmetric_pair(smooth, body, [lung for lung in lungs if lung.any()])
        if not lungs:
            continue
        thorax = _thorax(smooth, body, lungs, body_size)
        if thorax is None:
            reason = "lung outline is degenerate"
            continue
        reason = _not_lung_like(smooth, body, lungs, thorax) or _implausible(thorax, body)
        if reason is None:
            return thorax, None
    return None, reason


def fallback_mask(height: int, width: int) -> np.ndarray:
    """The centred box (FALLBACK_BOX of the height and width) used for low-quality contours."""
    mask = np.zeros((height, width), dtype=bool)
    box_h, box_w = round(height * FALLBACK_BOX[0]), round(width * FALLBACK_BOX[1])
    y0, x0 = (height - box_h) // 2, (width - box_w) // 2
    mask[y0 : y0 + max(box_h, 1), x0 : x0 + max(box_w, 1)] = True
    return mask


def chest_contour(image: np.ndarray, work_size: int = WORK_SIZE) -> ContourResult:
    """Chest-contour mask of a frontal chest X-ray.

    Takes a 2-D uint8/uint16/float array (bright = bone, lungs dark; (H, W, 1) is
    accepted) at any resolution. Returns a ContourResult at the input's (H, W).
    Never fails on odd content (constant, tiny, noise): those give quality "low"
    with a reason and a centred box mask. Raises InputError only when the array
    is not a single-channel image at all.
    """
    array = as_2d(image)
    height, width = array.shape
    values = array.astype(np.float32)
    if array.dtype.kind == "f":  # NaN/inf would spread through the resize
        np.nan_to_num(values, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    small = normalise_percentiles(downscale(values, work_size))
    if min(height, width) < 16:
        thorax, reason = None, f"image too small ({height}x{width}) for a contour"
    else:
        try:
            thorax, reason = _thorax_small(small)
        except (ValueError, IndexError) as exc:  # last line of defence: odd images get the box
            log.warning(
                "chest contour failed (%s: %s); using the centred box", type(exc).__name__, exc
            )
            thorax, reason = None, f"contour failed: {exc}"
    if thorax is None:
        log.debug("chest contour fallback: %s", reason)
        mask, quality = fallback_mask(height, width), "low"
    else:
        mask, quality = resize_mask(thorax, height, width), "ok"
    return ContourResult(
        mask=mask,
        bbox=mask_bbox(mask),
        quality=quality,
        area_fraction=float(mask.mean()),
        reason=reason,
    )
