"""PNG/JPEG decoding, format sniffing and the shared intensity/size helpers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cxrkit.errors import Reject
from cxrkit.io import bundled
from cxrkit.io.decode import read_any
from cxrkit.io.images import read_image
from cxrkit.io.intensity import (
    histogram_window,
    percentile_window,
    quantise,
    resize_long_side,
    robust_normalise,
)
from cxrkit.io.sniff import sniff_format


@pytest.fixture(scope="module")
def pediatric_jpeg():
    return bundled.pediatric_jpegs()[0]


@pytest.fixture(scope="module")
def radiograph_256():
    """The real RG1 chest radiograph through the DICOM pipeline, 256 px long side."""
    from cxrkit.io.dicom import read_dicom

    return resize_long_side(read_dicom(bundled.rg1_dicoms()["RG1_UNCR"]).pixels, 256)


# --- robust_normalise -------------------------------------------------------------


def test_robust_normalise_maps_percentiles_to_0_and_1():
    arr = np.arange(10, dtype=np.float32).reshape(2, 5)
    # 10th percentile (inverted cdf) of 0..9 = 0, 90th = 8: out = x / 8, clipped.
    out = robust_normalise(arr, low_pct=10, high_pct=90)
    expected = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 8], dtype=np.float32).reshape(2, 5) / 8
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert out.dtype == np.float32


def test_robust_normalise_clips_outliers():
    arr = np.concatenate([np.linspace(100, 200, 998), [-1e6, 1e6]]).reshape(20, 50)
    out = robust_normalise(arr)  # 0.5 % / 99.5 % drop the two outliers
    assert out.min() == 0.0 and out.max() == 1.0
    middle = out.ravel()[499]  # linspace value 150.05 sits mid-window
    assert abs(middle - 0.5) < 0.02


def test_constant_image_is_rejected_as_corrupt():
    with pytest.raises(Reject) as info:
        robust_normalise(np.full((4, 4), 7.0))
    assert info.value.reason == "corrupt_pixels"
    assert "constant" in info.value.detail


def test_mostly_flat_image_falls_back_to_min_max():
    arr = np.zeros((40, 50), dtype=np.float32)
    arr[0, 0] = 3.0  # percentiles are both 0: the min/max window keeps the one bright pixel
    out = robust_normalise(arr)
    assert out[0, 0] == 1.0 and out.sum() == 1.0


def test_histogram_window_takes_numpys_order_statistic():
    # 99.9 % of 1000 pixels: numpy computes 1000 * (99.9 / 100) = 999.0000000000001 and
    # takes the 1000th smallest value; 1000 * 99.9 / 100 would round to 999 and miss it.
    values = np.arange(1000, dtype=np.float64)
    window = histogram_window(values, np.ones(1000, dtype=np.int64), 0.1, 99.9)
    assert window == percentile_window(values, 0.1, 99.9) == (0.0, 999.0)


def test_histogram_window_reads_a_decreasing_table():
    table = np.array([9.0, 7.0, 5.0, 3.0])  # a MONOCHROME1-style table: level 0 is brightest
    counts = np.array([1, 0, 98, 1])  # sorted pixels: 3, 5 x 98, 9
    image = np.repeat(table, counts)
    # 0.5 % and 99.5 % of 100 pixels: the 1st and the 100th smallest
    window = histogram_window(table, counts, 0.5, 99.5)
    assert window == percentile_window(image, 0.5, 99.5) == (3.0, 9.0)
    # 1 % and 99 %: the 1st and the 99th smallest
    assert histogram_window(table, counts, 1, 99) == percentile_window(image, 1, 99) == (3.0, 5.0)


def test_value_table_works_row_block_by_row_block(monkeypatch):
    # Blocks of one row (2 pixels per block on a width-3 image -> 1 row): the histogram
    # and the gather must equal the whole-image ones, counted here by hand.
    from cxrkit.io import intensity

    monkeypatch.setattr(intensity, "_BLOCK_PIXELS", 2)
    levels = np.array([[0, 2, 2], [1, 2, 3], [3, 3, 3]], dtype=np.uint16)
    flat = levels.reshape(-1)
    np.testing.assert_array_equal(intensity._blockwise_bincount(flat, 5), [1, 1, 3, 4, 0])
    table = np.array([10.0, 20.0, 30.0, 40.0, 50.0], dtype=np.float32)
    expected = [10.0, 30.0, 30.0, 20.0, 30.0, 40.0, 40.0, 40.0, 40.0]
    np.testing.assert_array_equal(intensity._blockwise_take(table, flat), expected)
    # 9 pixels sorted: 0, 1, 2, 2, 2, 3, 3, 3, 3; the 10 % / 90 % order statistics are
    # the 1st (level 0 -> 0.0) and the 9th (level 3 -> 0.75) of the table 0, .25, .5, .75, 1
    unit = intensity.normalise_through_table(levels, np.linspace(0.0, 1.0, 5), 10, 90)
    np.testing.assert_allclose(unit, [[0, 2 / 3, 2 / 3], [1 / 3, 2 / 3, 1], [1, 1, 1]], rtol=1e-6)
    # 8-bit levels go through the pair table, odd pixel count and short table included
    unit8 = intensity.normalise_through_table(levels.astype(np.uint8), np.linspace(0, 1, 5), 10, 90)
    np.testing.assert_array_equal(unit8, unit)


def test_value_table_refuses_a_level_outside_the_table():
    # The gather skips numpy's range check: the histogram must catch such a level first.
    from cxrkit.io.intensity import normalise_through_table

    for dtype in (np.uint16, np.uint8):  # the direct and the pair-table paths
        levels = np.array([[0, 1, 2], [2, 5, 1]], dtype=dtype)
        with pytest.raises(ValueError):
            normalise_through_table(levels, np.linspace(0.0, 1.0, 4))


# --- quantise ---------------------------------------------------------------------


def test_quantise_rounds_and_clips():
    arr = np.array([-0.5, 0.0, 0.25, 0.6, 1.0, 2.0], dtype=np.float32)
    assert quantise(arr, "uint8").tolist() == [0, 0, 64, 153, 255, 255]  # 63.75 -> 64
    assert quantise(arr, "uint16").tolist() == [0, 0, 16384, 39321, 65535, 65535]
    assert quantise(arr, "uint16").dtype == np.uint16


def test_quantise_rejects_other_dtypes():
    with pytest.raises(ValueError, match="uint8"):
        quantise(np.zeros(3, dtype=np.float32), "float16")


# --- resize_long_side -------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "expected"), [((300, 200), (150, 100)), ((200, 300), (100, 150))]
)
def test_resize_makes_long_side_equal_size_keeping_aspect(shape, expected):
    out = resize_long_side(np.zeros(shape, dtype=np.float32), 150)
    assert out.shape == expected and out.dtype == np.float32


def test_resize_never_upscales():
    arr = np.zeros((100, 80), dtype=np.float32)
    assert resize_long_side(arr, 256) is arr


def test_resize_is_antialiased():
    checker = (np.indices((256, 256)).sum(axis=0) % 2).astype(np.float32)  # 1-px checkerboard
    out = resize_long_side(checker, 64)
    # Without a low-pass filter the pattern aliases to a black/white image.
    np.testing.assert_allclose(out, 0.5, atol=0.02)


def test_resize_preserves_a_constant_level():
    out = resize_long_side(np.full((517, 311), 0.3, dtype=np.float32), 100)
    np.testing.assert_allclose(out, 0.3, atol=1e-6)


# --- read_image -------------------------------------------------------------------


def test_pediatric_jpegs_decode_to_unit_range():
    for path in bundled.pediatric_jpegs()[:4]:
        image = read_image(path)
        with Image.open(path) as img:
            width, height = img.size
        assert image.pixels.shape == (height, width)
        assert image.pixels.dtype == np.float32
        assert image.pixels.min() == 0.0 and image.pixels.max() == 1.0
        assert image.source_format == "jpeg" and image.photometric == "L"
        assert image.meta["orig_height"] == height and image.meta["patient_id"] is None


def test_png_16bit_keeps_16bit_precision(tmp_path, radiograph_256):
    stored = quantise(radiograph_256, "uint16")
    path = tmp_path / "cxr16.png"
    Image.fromarray(stored).save(path)
    image = read_image(path)
    expected = robust_normalise(stored.astype(np.float32) / 65535)
    np.testing.assert_allclose(image.pixels, expected, atol=1e-6)
    assert len(np.unique(image.pixels)) > 1000  # not squeezed through 8 bits
    assert image.source_format == "png"


@pytest.mark.parametrize("window", [(0.5, 99.5), (2.0, 98.0), (0.1, 99.9)])
def test_8bit_jpegs_read_bit_identical_to_the_float_path(window):
    # read_image windows integer levels through a histogram and a table; the result
    # must equal robust_normalise of the float image, bit for bit.
    for path in bundled.pediatric_jpegs():
        with Image.open(path) as img:
            grey = np.asarray(img.convert("L"), dtype=np.float32) / np.float32(255)
        expected = robust_normalise(grey, *window)
        np.testing.assert_array_equal(
            read_image(path, low_pct=window[0], high_pct=window[1]).pixels, expected
        )


@pytest.fixture(scope="module")
def radiograph_full():
    """The real RG1 chest radiograph through the DICOM pipeline, full size (1955 x 1841)."""
    from cxrkit.io.dicom import read_dicom

    return read_dicom(bundled.rg1_dicoms()["RG1_UNCR"]).pixels


def test_8bit_levels_with_a_short_nonlinear_table_equal_the_float_path(radiograph_full):
    # RG1 is 1955 x 1841: an odd pixel count, so the pair table leaves out the last pixel
    # and maps it on its own; the table stops at the brightest level present (< 255).
    from cxrkit.io.intensity import normalise_through_table

    levels = quantise(radiograph_full * np.float32(0.9), "uint8")
    assert levels.size % 2 == 1 and levels.max() < 255
    table = np.arange(int(levels.max()) + 1, dtype=np.float64) ** 1.5
    expected = robust_normalise(table[levels])
    np.testing.assert_array_equal(normalise_through_table(levels, table), expected)


# 1955 x 1841 pixels is an odd count, 1955 x 1840 even (8-bit levels are then read in pairs)
@pytest.mark.parametrize("width", [1841, 1840])
def test_16bit_and_8bit_pngs_read_bit_identical_to_the_float_path(tmp_path, radiograph_full, width):
    stored = radiograph_full[:, :width]
    for dtype, full_scale in (("uint16", 65535), ("uint8", 255)):
        levels = quantise(stored, dtype)
        path = _save(Image.fromarray(levels), tmp_path / f"cxr_{dtype}.png")
        expected = robust_normalise(levels.astype(np.float32) / np.float32(full_scale))
        np.testing.assert_array_equal(read_image(path).pixels, expected)


def test_png_8bit_reads(tmp_path, radiograph_256):
    stored = quantise(radiograph_256, "uint8")
    path = tmp_path / "cxr8.png"
    Image.fromarray(stored).save(path)
    image = read_image(path)
    np.testing.assert_allclose(image.pixels, robust_normalise(stored / 255.0), atol=1e-6)
    assert image.photometric == "L"


def test_grey_rgb_and_palette_pngs_read_like_greyscale(tmp_path, radiograph_256):
    grey = Image.fromarray(quantise(radiograph_256, "uint8"))
    reference = read_image(_save(grey, tmp_path / "grey.png")).pixels
    for mode in ("RGB", "RGBA", "P"):
        image = read_image(_save(grey.convert(mode), tmp_path / f"{mode}.png"))
        np.testing.assert_allclose(image.pixels, reference, atol=1e-6)
        assert image.photometric == mode


def test_colour_image_is_rejected(tmp_path):
    rng = np.random.default_rng(0)
    colour = Image.fromarray(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8))
    with pytest.raises(Reject) as info:
        read_image(_save(colour, tmp_path / "photo.png"))
    assert info.value.reason == "not_chest_xray"


def test_small_coloured_annotation_is_accepted(tmp_path, radiograph_256):
    rgb = np.repeat(quantise(radiograph_256, "uint8")[..., None], 3, axis=2)
    rgb[10:30, 10:30] = (255, 0, 0)  # a red marker, ~0.7 % of the pixels
    image = read_image(_save(Image.fromarray(rgb), tmp_path / "marked.png"))
    assert image.pixels.shape == radiograph_256.shape


def test_truncated_jpeg_is_corrupt(tmp_path, pediatric_jpeg):
    data = pediatric_jpeg.read_bytes()
    path = tmp_path / "cut.jpeg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(Reject) as info:
        read_image(path)
    assert info.value.reason == "corrupt_pixels"
    assert "cut.jpeg" not in info.value.detail  # file names can carry PHI


def test_sniff_format_uses_magic_bytes_not_extensions(tmp_path, pediatric_jpeg):
    jpeg_named_png = tmp_path / "image.png"
    jpeg_named_png.write_bytes(pediatric_jpeg.read_bytes())
    png_no_ext = _save(Image.new("L", (8, 8)), tmp_path / "x.png").rename(tmp_path / "noext")
    noise = tmp_path / "noise.jpeg"
    noise.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert sniff_format(jpeg_named_png) == "jpeg"
    assert sniff_format(png_no_ext) == "png"
    assert sniff_format(noise) is None
    assert sniff_format(tmp_path / "missing") is None


def test_read_any_dispatches_and_rejects_unknown_formats(tmp_path, pediatric_jpeg):
    assert read_any(pediatric_jpeg).source_format == "jpeg"
    text = tmp_path / "notes.txt"
    text.write_text("findings: none")
    with pytest.raises(Reject) as info:
        read_any(text)
    assert info.value.reason == "unsupported_format"


def test_read_any_calls_a_non_image_named_like_dicom_not_dicom(tmp_path):
    for name in ("noise.dcm", "noise"):
        fake = tmp_path / name
        fake.write_bytes(bytes(range(256)) * 16)
        with pytest.raises(Reject) as info:
            read_any(fake)
        assert info.value.reason == "not_dicom"


def _save(img: Image.Image, path):
    img.save(path)
    return path
