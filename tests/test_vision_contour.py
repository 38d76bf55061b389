"""Chest-contour masks: real radiographs, odd inputs, packing, patch grids, previews."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PIL import Image

from cxrkit.errors import ArtifactError, InputError
from cxrkit.io import bundled
from cxrkit.io.dicom import read_dicom
from cxrkit.io.images import read_image
from cxrkit.io.intensity import quantise, resize_long_side
from cxrkit.vision.contour import chest_contour, fallback_mask
from cxrkit.vision.masks import mask_bbox, mask_to_grid, pack_mask, preview_grid, unpack_mask
from cxrkit.vision.morphology import otsu_threshold

STORED_SIZE = 512  # long side, as `cxrkit ingest` would store them

# Hand-marked by looking at each image (row, col) as fractions of height and width:
# points well inside each lung field, and points outside the thorax (background
# beside or above the body, the head or neck above the apices, the abdomen or
# padding below the diaphragm).
LANDMARKS: dict[str, tuple[list[tuple[float, float]], list[tuple[float, float]]]] = {
    "RG1_UNCR": ([(0.35, 0.25), (0.35, 0.72)], [(0.02, 0.02), (0.02, 0.98), (0.95, 0.5)]),
    "NORMAL2-IM-1427-0001": ([(0.5, 0.3), (0.5, 0.68)], [(0.03, 0.5), (0.5, 0.02), (0.97, 0.5)]),
    "NORMAL2-IM-1430-0001": ([(0.5, 0.3), (0.5, 0.7)], [(0.03, 0.5), (0.5, 0.02), (0.97, 0.5)]),
    "NORMAL2-IM-1431-0001": ([(0.5, 0.3), (0.5, 0.72)], [(0.03, 0.5), (0.5, 0.01), (0.97, 0.5)]),
    "NORMAL2-IM-1436-0001": ([(0.45, 0.3), (0.45, 0.7)], [(0.03, 0.5), (0.5, 0.01), (0.97, 0.5)]),
    "NORMAL2-IM-1437-0001": ([(0.5, 0.3), (0.5, 0.72)], [(0.03, 0.03), (0.05, 0.5), (0.9, 0.5)]),
    "NORMAL2-IM-1438-0001": ([(0.5, 0.3), (0.5, 0.75)], [(0.03, 0.03), (0.05, 0.5), (0.93, 0.5)]),
    # a tight crop: the film ends at the diaphragm, so only the upper corners are outside
    "NORMAL2-IM-1440-0001": ([(0.5, 0.25), (0.5, 0.78)], [(0.02, 0.02), (0.02, 0.98), (0.1, 0.03)]),
    "NORMAL2-IM-1442-0001": ([(0.5, 0.3), (0.5, 0.75)], [(0.03, 0.03), (0.03, 0.5), (0.95, 0.5)]),
    "person1946_bacteria_4874": (
        [(0.45, 0.3), (0.45, 0.72)],
        [(0.03, 0.03), (0.02, 0.5), (0.97, 0.5)],
    ),
    "person1946_bacteria_4875": (
        [(0.45, 0.3), (0.45, 0.72)],
        [(0.03, 0.03), (0.1, 0.95), (0.97, 0.5)],
    ),
    "person1947_bacteria_4876": (
        [(0.5, 0.25), (0.5, 0.75)],
        [(0.02, 0.02), (0.03, 0.5), (0.97, 0.5)],
    ),
    "person1949_bacteria_4880": (
        [(0.45, 0.3), (0.35, 0.68)],
        [(0.03, 0.03), (0.03, 0.97), (0.97, 0.5)],
    ),
    "person1950_bacteria_4881": (
        [(0.45, 0.25), (0.45, 0.75)],
        [(0.5, 0.01), (0.5, 0.99), (0.97, 0.5)],
    ),
    "person1951_bacteria_4882": (
        [(0.4, 0.3), (0.4, 0.65)],
        [(0.03, 0.03), (0.05, 0.95), (0.97, 0.5)],
    ),
    "person1952_bacteria_4883": (
        [(0.45, 0.25), (0.45, 0.7)],
        [(0.03, 0.03), (0.03, 0.97), (0.97, 0.5)],
    ),
    "person1954_bacteria_4886": (
        [(0.45, 0.3), (0.5, 0.72)],
        [(0.03, 0.5), (0.5, 0.02), (0.97, 0.5)],
    ),
}


def _stored(pixels: np.ndarray, size: int = STORED_SIZE, dtype: str = "uint8") -> np.ndarray:
    """A decoded radiograph as the dataset stores it (long side `size`, integer dtype)."""
    return quantise(resize_long_side(pixels, size), dtype)


@pytest.fixture(scope="module")
def decoded() -> dict[str, np.ndarray]:
    """The 17 real radiographs, decoded by the ingest pipeline: float [0, 1], bright bone."""
    images = {"RG1_UNCR": read_dicom(bundled.rg1_dicoms()["RG1_UNCR"]).pixels}
    for path in bundled.pediatric_jpegs():
        images[path.stem] = read_image(path).pixels
    return images


def _at(mask: np.ndarray, point: tuple[float, float]) -> bool:
    height, width = mask.shape
    return bool(
        mask[min(int(point[0] * height), height - 1), min(int(point[1] * width), width - 1)]
    )


def test_all_landmarked_images_are_bundled(decoded):
    assert sorted(decoded) == sorted(LANDMARKS)


@pytest.mark.parametrize("name", sorted(LANDMARKS))
def test_real_mask_covers_lungs_and_excludes_outside(decoded, name):
    dtype = "uint16" if name.startswith("RG1") else "uint8"
    image = _stored(decoded[name], dtype=dtype)
    result = chest_contour(image)
    inside, outside = LANDMARKS[name]
    assert result.quality == "ok", result.reason
    assert result.reason is None
    assert [p for p in inside if not _at(result.mask, p)] == []
    assert [p for p in outside if _at(result.mask, p)] == []
    assert 0.2 < result.area_fraction < 0.8


def test_mask_matches_input_shape_and_bbox(decoded):
    image = _stored(decoded["NORMAL2-IM-1431-0001"], size=300)
    result = chest_contour(image)
    assert result.mask.shape == image.shape and result.mask.dtype == bool
    assert result.bbox == mask_bbox(result.mask)
    assert result.area_fraction == pytest.approx(result.mask.mean())


def test_mask_is_stable_across_stored_resolutions(decoded):
    small = chest_contour(_stored(decoded["RG1_UNCR"], size=224, dtype="uint16")).mask
    large = chest_contour(_stored(decoded["RG1_UNCR"], size=1024, dtype="uint16")).mask
    large_at_small = np.asarray(
        Image.fromarray(large.astype(np.uint8)).resize(small.shape[::-1], Image.NEAREST)
    ).astype(bool)
    iou = (small & large_at_small).sum() / (small | large_at_small).sum()
    assert iou > 0.85


def test_constant_image_falls_back_to_centred_box():
    result = chest_contour(np.full((100, 100), 77, dtype=np.uint8))
    assert result.quality == "low" and "constant" in result.reason
    # FALLBACK_BOX = 85 % of the height x 80 % of the width, centred
    assert result.bbox == (7, 10, 92, 90)
    assert result.area_fraction == pytest.approx(0.85 * 0.80)


def test_all_black_uint16_image_falls_back():
    result = chest_contour(np.zeros((512, 400), dtype=np.uint16))
    assert result.quality == "low"
    assert result.mask.shape == (512, 400)


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (1, 500), (12, 12)])
def test_tiny_image_falls_back(shape):
    result = chest_contour(np.arange(np.prod(shape), dtype=np.uint8).reshape(shape))
    assert result.quality == "low" and "too small" in result.reason
    assert result.mask.shape == shape and result.mask.any()


@pytest.mark.parametrize("dtype,maximum", [("uint8", 256), ("uint16", 65536)])
def test_uniform_noise_is_low_quality(dtype, maximum):
    noise = np.random.default_rng(0).integers(0, maximum, (400, 380)).astype(dtype)
    result = chest_contour(noise)
    assert result.quality == "low"
    assert result.reason


def test_nan_image_does_not_crash():
    image = np.full((64, 64), np.nan, dtype=np.float32)
    image[10:20, 10:20] = np.inf
    assert chest_contour(image).quality == "low"


def test_ct_slice_is_low_quality():
    slice_ = pydicom.dcmread(bundled.pydicom_test_file("CT_small.dcm")).pixel_array
    assert chest_contour(slice_).quality == "low"


def test_single_channel_3d_array_is_accepted(decoded):
    image = _stored(decoded["NORMAL2-IM-1427-0001"], size=256)
    assert chest_contour(image[..., None]).quality == "ok"


def test_colour_image_raises_input_error():
    with pytest.raises(InputError, match="2-D grey image"):
        chest_contour(np.zeros((32, 32, 3), dtype=np.uint8))


def test_fallback_box_is_centred():
    mask = fallback_mask(20, 10)  # 17 x 8 box
    assert mask_bbox(mask) == (1, 1, 18, 9)


def test_pack_mask_is_row_major_big_bit_order():
    mask = np.array([[1, 0, 0, 0], [0, 0, 0, 1]], dtype=bool)
    assert pack_mask(mask) == b"\x81"


def test_pack_unpack_round_trip_odd_size():
    mask = np.random.default_rng(1).random((7, 5)) > 0.5
    data = pack_mask(mask)
    assert len(data) == 5  # ceil(35 / 8)
    np.testing.assert_array_equal(unpack_mask(data, 7, 5), mask)


def test_unpack_wrong_length_raises_artifact_error():
    with pytest.raises(ArtifactError, match="expected 5"):
        unpack_mask(b"\x00\x01", 7, 5)


def test_mask_to_grid_counts_half_as_inside():
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, 0:2] = True  # top-left patch: 2 of 4 pixels -> inside
    mask[3, 3] = True  # bottom-right patch: 1 of 4 -> outside
    np.testing.assert_array_equal(mask_to_grid(mask, 2, 2), [[True, False], [False, False]])


def test_mask_to_grid_uneven_patches():
    mask = np.zeros((6, 4), dtype=bool)
    mask[0:2, 0] = True  # patch (0, 0) is 2x2: 2 of 4 inside
    mask[4, 2] = True  # patch (2, 1) is 2x2: 1 of 4 inside
    grid = mask_to_grid(mask, 3, 2)
    assert grid.shape == (3, 2)
    np.testing.assert_array_equal(grid, [[True, False], [False, False], [False, False]])


def test_mask_to_grid_upscales_a_mask_smaller_than_the_grid():
    mask = np.array([[True, False], [False, False]])
    expected = np.zeros((4, 4), dtype=bool)
    expected[:2, :2] = True
    np.testing.assert_array_equal(mask_to_grid(mask, 4, 4), expected)


def test_otsu_threshold_splits_two_modes():
    values = np.concatenate([np.full(100, 0.2), np.full(50, 0.8)])
    assert 0.2 < otsu_threshold(values) <= 0.8


def test_preview_grid_writes_overlay_png(tmp_path):
    image = np.full((40, 80), 128, dtype=np.uint8)
    image[0, 0] = 0  # some contrast so the tile is not blank
    image[-1, -1] = 255
    mask = np.zeros((40, 80), dtype=bool)
    mask[10:30, 20:60] = True
    path = preview_grid(
        [image, image, image], [mask, None, mask], tmp_path / "sub" / "p.png", cols=2, tile_size=80
    )
    sheet = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert sheet.shape == (160, 160, 3)  # 2 rows x 2 cols of 80-px cells
    # the 80x40 tile sits centred in its 80x80 cell (rows 20..60)
    inside, outside = sheet[20 + 20, 40], sheet[20 + 2, 5]
    assert inside[0] > inside[1] + 40  # red overlay
    assert abs(outside[0] - outside[1]) < 5  # plain grey
    untouched = sheet[20 + 20, 80 + 40]  # second tile has no mask
    assert abs(untouched[0] - untouched[1]) < 5


def test_preview_grid_refuses_mismatched_lists(tmp_path):
    with pytest.raises(InputError, match="as many masks"):
        preview_grid([np.zeros((8, 8))], [], tmp_path / "p.png")


def test_real_images_at_demo_size_keep_lungs_inside(decoded):
    # the demo ingests at 64 px long side; the masks must still be usable there
    misses = []
    for name, (inside, outside) in LANDMARKS.items():
        result = chest_contour(_stored(decoded[name], size=64))
        hits = [_at(result.mask, p) for p in inside] + [not _at(result.mask, p) for p in outside]
        if result.quality != "ok" or not all(hits):
            misses.append(name)
    assert misses == []


@pytest.mark.parametrize("name", ["RG1_UNCR", "NORMAL2-IM-1431-0001", "person1952_bacteria_4883"])
def test_chest_in_wide_black_border_is_found(decoded, name):
    image = _stored(decoded[name], size=256)
    pad = 120  # the film covers ~30 % of the frame
    result = chest_contour(np.pad(image, pad))
    assert result.quality == "ok", result.reason
    height, width = image.shape
    for row, col in LANDMARKS[name][0]:
        assert result.mask[pad + int(row * height), pad + int(col * width)]
    assert not result.mask[:pad].any() and not result.mask[-pad:].any()
