"""JPEG 2000 decoded at a reduced resolution level: what the stored image loses.

Ingest stores the long side at `image_size`; a J2K source at least twice that is
decoded at the coarsest wavelet level still >= it. These tests pin how far the stored
uint8 image moves from the full-resolution decode, on the real pydicom-data files.
"""

from __future__ import annotations

import numpy as np
import pytest

from cxrkit.io import bundled
from cxrkit.io.dicom import read_dicom
from cxrkit.io.intensity import quantise, resize_long_side
from cxrkit.io.j2k_reduce import codestream_header, reduce_levels


def _stored(decoded, size: int) -> np.ndarray:
    return quantise(resize_long_side(decoded.pixels, size), "uint8").astype(np.int16)


def test_reduce_levels_keeps_the_long_side_at_least_the_target():
    # 1955 -> 978 -> 489 -> 245 -> 123 -> 62 (ceil at each level)
    assert reduce_levels(1955, 512, levels=5) == 1  # 978 >= 512, 489 < 512
    assert reduce_levels(1955, 224, levels=5) == 3  # 245
    assert reduce_levels(1955, 64, levels=5) == 4  # 123; 62 < 64
    assert reduce_levels(1955, 16, levels=5) == 5  # capped by the codestream's levels
    assert reduce_levels(1955, 979, levels=5) == 0  # > half the source: no gain


def test_codestream_header_reads_size_precision_and_levels():
    import pydicom
    from pydicom.encaps import generate_frames

    ds = pydicom.dcmread(bundled.rg1_dicoms()["RG1_J2KR"])
    codestream = next(generate_frames(ds.PixelData, number_of_frames=1))
    assert codestream_header(codestream) == (1841, 1955, 15, False, 5)
    assert codestream_header(b"\x00\x01junk") is None


# (file, stored long side, max |diff|, mean |diff|) in uint8 levels. Measured here:
# J2KR 64: 45 / 4.85, 224: 54 / 2.54, 512: 14 / 0.385; J2KI 64: 37 / 3.47,
# 224: 49 / 2.14, 512: 12 / 0.383. The bounds are those plus ~10 % for decoder builds.
# The difference is the wavelet low-pass (a 5/3 or 9/7 filter, sharper than Pillow's
# antialiasing) and the percentile window computed on the smaller image: the reduced
# image is darker on average (signed mean -3.1 levels at 64, -1.1 at 224, -0.14 at 512);
# with the full decode's window instead, J2KR's signed mean is +0.24 / +0.08 / +0.01 and
# mean |diff| 2.9 / 2.0 / 0.34: the rest is the wavelet low-pass vs Pillow's filter;
# at the default image_size 512 it is under half a level.
BOUNDS = [
    ("RG1_J2KR", 64, 50, 5.4),
    ("RG1_J2KR", 224, 60, 2.8),
    ("RG1_J2KR", 512, 16, 0.45),
    ("RG1_J2KI", 64, 41, 3.8),
    ("RG1_J2KI", 224, 54, 2.4),
    ("RG1_J2KI", 512, 14, 0.45),
]


@pytest.mark.parametrize(("name", "size", "max_diff", "mean_diff"), BOUNDS)
def test_reduced_decode_stays_within_the_measured_bound(name, size, max_diff, mean_diff):
    path = bundled.rg1_dicoms()[name]
    full = read_dicom(path)
    reduced = read_dicom(path, decode_long_side=size, reduce_lossless=True)
    assert full.pixels.shape == (1955, 1841) and full.full_shape == (1955, 1841)
    assert max(reduced.pixels.shape) < 1955, "the reduced path was not taken"
    assert max(reduced.pixels.shape) >= size, "the final resize must still downsample"
    assert reduced.full_shape == (1955, 1841)
    a, b = _stored(full, size), _stored(reduced, size)
    assert a.shape == b.shape
    diff = np.abs(a - b)
    assert diff.max() <= max_diff
    assert diff.mean() <= mean_diff


@pytest.mark.parametrize("name", ["RG1_J2KR", "RG1_J2KI"])
def test_target_over_half_the_source_decodes_in_full(name):
    path = bundled.rg1_dicoms()[name]
    full = read_dicom(path)
    same = read_dicom(path, decode_long_side=979, reduce_lossless=True)  # ceil(1955/2) < 979
    assert same.pixels.shape == (1955, 1841)
    np.testing.assert_array_equal(same.pixels, full.pixels)


def test_lossless_j2k_is_decoded_in_full_unless_asked():
    # Ingest's default ("lossy"): a lossless file keeps the exact full-decode pixels,
    # so it stores what its uncompressed twin stores (and is deduplicated against it).
    rg1 = bundled.rg1_dicoms()
    kept = read_dicom(rg1["RG1_J2KR"], decode_long_side=64)
    np.testing.assert_array_equal(kept.pixels, read_dicom(rg1["RG1_UNCR"]).pixels)
    assert read_dicom(rg1["RG1_J2KI"], decode_long_side=64).pixels.shape == (123, 116)


def test_uncompressed_input_ignores_the_target():
    path = bundled.rg1_dicoms()["RG1_UNCR"]
    np.testing.assert_array_equal(
        read_dicom(path, decode_long_side=64).pixels, read_dicom(path).pixels
    )


def test_ingest_row_keeps_the_source_size_after_a_reduced_decode():
    from cxrkit.io.rows import RowBuilder

    path = bundled.rg1_dicoms()["RG1_J2KI"]
    rows = {
        mode: RowBuilder(salt=b"s" * 32, image_size=64, decode_reduce=mode).prepare().build(path)
        for mode in ("off", "lossy")
    }
    for row in rows.values():
        assert (row["height"], row["width"]) == (64, 60)
        assert (row["orig_height"], row["orig_width"]) == (1955, 1841)
    assert rows["off"]["pixels"] != rows["lossy"]["pixels"]


@pytest.mark.parametrize("name", ["RG1_J2KR", "RG1_J2KI"])
def test_truncated_codestream_is_left_to_the_full_decoder(name):
    import pydicom
    from pydicom.encaps import generate_frames

    from cxrkit.io.j2k_reduce import decode_reduced

    ds = pydicom.dcmread(bundled.rg1_dicoms()[name])
    codestream = next(generate_frames(ds.PixelData, number_of_frames=1))
    assert decode_reduced(codestream, 512) is not None
    # None sends the file to pydicom's decoder, which rejects it as corrupt_pixels
    assert decode_reduced(codestream[: len(codestream) * 7 // 10], 512) is None


def test_header_size_unlike_the_codestream_skips_the_reduced_path(tmp_path):
    import pydicom

    from cxrkit.errors import Reject

    ds = pydicom.dcmread(bundled.rg1_dicoms()["RG1_J2KI"])
    ds.Rows = 1900  # the codestream says 1955
    path = tmp_path / "lying.dcm"
    ds.save_as(path)
    outcomes = []
    for target in (None, 512):
        try:
            outcomes.append(read_dicom(path, decode_long_side=target).pixels.shape)
        except Reject as exc:
            outcomes.append(exc.reason)
    assert outcomes[0] == outcomes[1]
    assert outcomes[1] != (978, 921)
