"""EXIF orientation: a PNG/JPEG radiograph is stored upright, as a viewer shows it.

Files are a real pediatric chest JPEG (pneumonia-model-package) re-saved by Pillow with
an EXIF Orientation tag; the same pixels re-saved without the tag ("plain") have the
same compressed data, and the image rotated by hand before saving is what a viewer
shows. Both decode paths (full, reduced DCT scale) must agree with the hand rotation.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cxrkit.io import bundled
from cxrkit.io.images import read_image
from cxrkit.io.intensity import quantise, resize_long_side
from cxrkit.io.orientation import ORIENTATION_TAG, apply_orientation, exif_orientation
from cxrkit.io.rows import RowBuilder

# What a viewer does with the stored (H, W) pixels, written out by hand.
BY_HAND = {
    3: lambda a: a[::-1, ::-1],  # upside down
    6: lambda a: np.rot90(a, k=-1),  # a quarter turn clockwise
    8: lambda a: np.rot90(a, k=1),  # a quarter turn counter-clockwise
}
PILLOW = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    return exif.tobytes()


def _save(path, pixels: np.ndarray, fmt: str = "JPEG", exif: bytes | None = None):
    options = {"quality": 95} if fmt == "JPEG" else {}
    if exif is not None:
        options["exif"] = exif
    Image.fromarray(np.ascontiguousarray(pixels)).save(path, fmt, **options)
    return path


def _stored(decoded, size: int) -> np.ndarray:
    pixels = resize_long_side(decoded.pixels, size, decoded.full_shape)
    return quantise(pixels, "uint8").astype(np.int16)


@pytest.fixture(scope="module")
def chest() -> np.ndarray:
    """The first pediatric JPEG's grey levels, (1416, 1776) uint8, as stored upright."""
    with Image.open(bundled.pediatric_jpegs()[0]) as img:
        return np.asarray(img.convert("L"))


@pytest.fixture(scope="module")
def files(chest, tmp_path_factory) -> dict:
    """plain.jpg (no EXIF), o{3,6,8}.jpg (same pixels, tagged), hand{3,6,8}.jpg (what
    the tag asks for, applied before saving: the upright image a viewer shows)."""
    root = tmp_path_factory.mktemp("exif")
    out = {"plain": _save(root / "plain.jpg", chest)}
    for value, turn in BY_HAND.items():
        out[value] = _save(root / f"o{value}.jpg", chest, exif=_exif(value))
        out[f"hand{value}"] = _save(root / f"hand{value}.jpg", turn(chest))
    return out


def test_the_transposes_are_pillows_exif_transpose_ones():
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)  # not square, no symmetry
    for value, method in PILLOW.items():
        expected = np.asarray(Image.fromarray(arr).transpose(method))
        np.testing.assert_array_equal(apply_orientation(arr, value), expected, str(value))
    assert apply_orientation(arr, 6).tolist() == [[8, 4, 0], [9, 5, 1], [10, 6, 2], [11, 7, 3]]
    assert apply_orientation(arr, None) is arr and apply_orientation(arr, 1) is arr
    with pytest.raises(ValueError, match="1..8"):
        apply_orientation(arr, 9)


@pytest.mark.parametrize("value", [3, 6, 8])
def test_full_decode_is_the_plain_file_turned_exactly(files, value):
    # Same compressed data, only the tag differs: the decode is the plain one turned,
    # bit for bit (the percentile window does not depend on pixel order).
    plain, tagged = read_image(files["plain"]), read_image(files[value])
    np.testing.assert_array_equal(tagged.pixels, BY_HAND[value](plain.pixels))
    assert tagged.meta["exif_orientation"] == value and plain.meta["exif_orientation"] is None
    h, w = tagged.pixels.shape
    assert (tagged.meta["orig_height"], tagged.meta["orig_width"]) == (h, w)
    assert (h, w) == ((1776, 1416) if value in (6, 8) else (1416, 1776))


@pytest.mark.parametrize("value", [3, 6, 8])
@pytest.mark.parametrize("size", [512, 224])
def test_both_decode_paths_match_the_hand_rotated_image(files, value, size):
    hand = _stored(read_image(files[f"hand{value}"]), size)
    full = read_image(files[value])
    reduced = read_image(files[value], decode_long_side=size)
    assert reduced.full_shape == full.pixels.shape, "the reduced path was not taken"
    assert reduced.meta["exif_orientation"] == value
    # The reduced decode turns the same way as the full one, exactly.
    plain_reduced = read_image(files["plain"], decode_long_side=size)
    np.testing.assert_array_equal(reduced.pixels, BY_HAND[value](plain_reduced.pixels))
    a, b = _stored(full, size), _stored(reduced, size)
    assert a.shape == b.shape == hand.shape
    # Full vs hand-rotated: two JPEG encodings of the same pixels, turned. Measured:
    # max 1, mean <= 0.05 at both sizes; bound 3 / 0.15.
    diff = np.abs(a - hand)
    assert diff.max() <= 3 and diff.mean() <= 0.15
    # Reduced vs hand-rotated (measured max 21-22, mean 0.21 at 512, 0.80 at 224):
    # within test_jpeg_reduce's PEDIATRIC_BOUNDS for this size.
    max_diff, worst_mean = {512: (86, 0.99), 224: (85, 2.0)}[size]
    diff = np.abs(b - hand)
    assert diff.max() <= max_diff and diff.mean() <= worst_mean


def test_png_exif_chunk_is_applied_too(chest, tmp_path):
    small = np.asarray(Image.fromarray(chest).resize((444, 354)))
    tagged = _save(tmp_path / "o8.png", small, "PNG", _exif(8))
    hand = _save(tmp_path / "hand8.png", BY_HAND[8](small), "PNG")
    decoded = read_image(tagged)
    np.testing.assert_array_equal(decoded.pixels, read_image(hand).pixels)  # lossless
    assert decoded.meta["exif_orientation"] == 8 and decoded.pixels.shape == (444, 354)


def _truncated() -> list[bytes]:
    raw = _exif(6)  # b"Exif\0\0" + TIFF header + one IFD entry
    return [raw[:8], raw[:14], raw[:20], b"Exif\x00\x00" + b"\xff" * 20]


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's, when it opens the file
@pytest.mark.parametrize(
    "exif",
    [_exif(1), _exif(0), _exif(9), _exif(65535), *_truncated()],
    ids=["1-upright", "0", "9", "65535", "cut8", "cut14", "cut20", "garbage"],
)
def test_upright_or_hostile_exif_keeps_the_pixels_as_stored(files, chest, tmp_path, exif):
    path = _save(tmp_path / "hostile.jpg", chest, exif=exif)
    with Image.open(path) as img:
        img.load()
        assert exif_orientation(img) is None
    for size in (None, 224):
        decoded = read_image(path, decode_long_side=size)
        expected = read_image(files["plain"], decode_long_side=size)
        np.testing.assert_array_equal(decoded.pixels, expected.pixels)
        assert decoded.meta["exif_orientation"] is None


def test_non_integer_orientation_is_ignored(chest, tmp_path):
    # One little-endian IFD entry: tag 0x0112, type 2 (ASCII), count 2, value "6\0".
    entry = (0x0112).to_bytes(2, "little") + (2).to_bytes(2, "little") + b"\x02\0\0\0"
    exif = b"Exif\0\0II*\0\x08\0\0\0\x01\0" + entry + b"6\0\0\0" + b"\0" * 4
    path = _save(tmp_path / "ascii.jpg", chest[:64, :64], exif=exif)
    with Image.open(path) as img:
        assert img.getexif().get(ORIENTATION_TAG) == "6"  # Pillow reads it as text
    assert read_image(path).meta["exif_orientation"] is None


def test_ingest_stores_the_upright_image_and_its_upright_size(files):
    builder = RowBuilder(salt=b"s" * 32, image_size=64).prepare()
    tagged, hand = builder.build(files[6]), builder.build(files["hand6"])
    assert (tagged["height"], tagged["width"]) == (hand["height"], hand["width"]) == (64, 51)
    assert (tagged["orig_height"], tagged["orig_width"]) == (1776, 1416)
    diff = np.abs(
        np.frombuffer(tagged["pixels"], np.uint8).astype(np.int16)
        - np.frombuffer(hand["pixels"], np.uint8)
    )
    assert diff.max() <= 85 and diff.mean() <= 2.0  # the reduced-decode bound at 224


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@pytest.mark.parametrize("reduce", ["lossy", "off"])
def test_shipped_preprocess_turns_the_file_as_ingest_stored_it(files, chest, tmp_path, reduce):
    from cxrkit.export.preprocess import preprocess
    from cxrkit.vision.transforms import EvalTransform

    builder = RowBuilder(salt=b"s" * 32, image_size=64, decode_reduce=reduce).prepare()
    broken = _save(tmp_path / "broken.jpg", chest, exif=_truncated()[2])
    for path in (files[6], files[3], files[8], broken):
        row = builder.build(path)
        stored = np.frombuffer(row["pixels"], np.uint8).reshape(row["height"], row["width"])
        expected = EvalTransform(32)(stored.copy())[0][None]  # (1, 1, 32, 32)
        got = preprocess(path, image_size=32, store_size=64, decode_reduce=reduce)
        assert got.shape == expected.shape
        assert float((got - expected).abs().max()) <= 1e-6, path.name
