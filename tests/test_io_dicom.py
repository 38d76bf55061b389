"""DICOM reading on real files: the RG1 chest radiograph in four encodings and
pydicom's own test files as negative cases."""

from __future__ import annotations

import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from cxrkit.errors import Reject
from cxrkit.io import bundled
from cxrkit.io.dicom import KEPT_TAGS, _display_values, _read_dataset, dicom_to_unit, read_dicom
from cxrkit.io.dicom_meta import extract_meta, infer_view, parse_age
from cxrkit.io.intensity import quantise, resize_long_side, robust_normalise
from cxrkit.io.sniff import sniff_format

RG1 = ("RG1_UNCR", "RG1_UNCI", "RG1_J2KR", "RG1_J2KI")
# Lossy JPEG 2000 (RG1_J2KI) vs the original (RG1_UNCR) after the pipeline, resize to
# 256 px and uint8: measured mean |diff| 0.063 levels, max 1 level. Limits leave room.
LOSSY_MEAN_ABS_LIMIT = 0.25
LOSSY_MAX_ABS_LIMIT = 2


@cache
def decoded(name: str):
    """Decode each RG1 file once per session (JPEG 2000 takes ~0.5-1 s)."""
    return read_dicom(bundled.rg1_dicoms()[name])


@cache
def stored_256(name: str) -> np.ndarray:
    return quantise(resize_long_side(decoded(name).pixels, 256), "uint8")


def reject_of(path, **kwargs) -> Reject:
    with pytest.raises(Reject) as info:
        read_dicom(path, **kwargs)
    return info.value


# --- the real chest radiograph ----------------------------------------------------


@pytest.mark.parametrize("name", RG1)
def test_rg1_encodings_decode_to_unit_float(name):
    image = decoded(name)
    assert image.pixels.shape == (1955, 1841) and image.pixels.dtype == np.float32
    assert image.pixels.min() == 0.0 and image.pixels.max() == 1.0
    assert image.source_format == "dicom" and image.photometric == "MONOCHROME1"


@pytest.mark.parametrize(
    ("lossless", "reference"), [("RG1_J2KR", "RG1_UNCR"), ("RG1_J2KI", "RG1_UNCI")]
)
def test_jpeg2000_matches_its_uncompressed_twin_exactly(lossless, reference):
    # RG1_UNCI is the decompressed lossy image, so J2KI must reproduce it bit for bit.
    np.testing.assert_array_equal(stored_256(lossless), stored_256(reference))


def test_lossy_jpeg2000_is_close_to_the_original():
    diff = np.abs(stored_256("RG1_J2KI").astype(int) - stored_256("RG1_UNCR").astype(int))
    assert diff.mean() <= LOSSY_MEAN_ABS_LIMIT
    assert diff.max() <= LOSSY_MAX_ABS_LIMIT
    assert diff.any()  # it is lossy: identical output would mean the wrong file was read


def test_monochrome1_is_inverted_so_lungs_are_dark():
    pixels = decoded("RG1_UNCR").pixels
    height, width = pixels.shape

    def region(r0, r1, c0, c1):  # fractions of the image, found by viewing it
        return float(
            pixels[int(r0 * height) : int(r1 * height), int(c0 * width) : int(c1 * width)].mean()
        )

    right_lung = region(0.12, 0.30, 0.15, 0.30)  # upper zones, clear of the nodules
    left_lung = region(0.12, 0.30, 0.60, 0.75)
    spine = region(0.20, 0.60, 0.44, 0.50)  # spine / mediastinum column
    assert spine > right_lung + 0.2 and spine > left_lung + 0.2


def test_value_table_pipeline_equals_the_direct_pipeline():
    path = bundled.rg1_dicoms()["RG1_UNCR"]
    ds = pydicom.dcmread(path)
    direct = robust_normalise(_display_values(ds.pixel_array, ds, "MONOCHROME1"))
    np.testing.assert_array_equal(decoded("RG1_UNCR").pixels, direct)


@pytest.mark.parametrize(
    ("name", "sequence"),
    [("vlut_04.dcm", "VOILUTSequence"), ("mlut_18.dcm", "ModalityLUTSequence")],
)
def test_lut_sequences_are_applied(tmp_path, name, sequence):
    # Real files (Modality OT) whose LUTs are near-linear ramps; bend the ramp into a
    # square law so that applying it, or not, shows in the normalised image.
    ds = pydicom.dcmread(bundled.pydicom_test_file(name))
    item = ds[sequence][0]
    ramp = np.asarray(item.LUTData, dtype=np.float64)
    bent = np.rint(ramp**2 / ramp.max()).astype(np.uint16)
    item["LUTData"].value = bent.tobytes() if item["LUTData"].VR == "OW" else bent.tolist()
    path = tmp_path / name
    ds.save_as(path)
    ds = pydicom.dcmread(path)
    image = read_dicom(path, check_chest=False)
    direct = robust_normalise(_display_values(ds.pixel_array, ds, "MONOCHROME2"))
    np.testing.assert_allclose(image.pixels, direct, atol=1e-6)
    plain = robust_normalise(ds.pixel_array.astype(np.float64))
    assert np.abs(image.pixels - plain).mean() > 0.02


def test_percentile_window_is_configurable():
    path = bundled.rg1_dicoms()["RG1_UNCR"]
    wide = decoded("RG1_UNCR").pixels
    narrow = read_dicom(path, low_pct=5, high_pct=95).pixels
    assert np.mean(wide == 0.0) < 0.01 and np.mean(narrow == 0.0) >= 0.05
    assert np.mean(narrow == 1.0) >= 0.05


def test_rg1_metadata():
    meta = decoded("RG1_UNCR").meta
    assert meta["patient_id"] == "9RG1" and meta["study_date"] == "20040826"
    assert meta["view"] == "PA" and meta["sex"] == "F" and meta["modality"] == "CR"
    assert meta["age"] == pytest.approx(64.48, abs=0.01)  # born 1940-03-05, no PatientAge
    assert meta["pixel_spacing"] is None  # the file says 0.000 x 0.000: unusable
    assert (meta["orig_height"], meta["orig_width"], meta["bits_stored"]) == (1955, 1841, 15)
    assert meta["body_part"] == "CHEST" and meta["burned_in"] is None and meta["n_frames"] == 1
    assert meta["transfer_syntax"] == "1.2.840.10008.1.2.1"


def test_only_the_allow_listed_tags_are_read():
    ds, _ = _read_dataset(bundled.rg1_dicoms()["RG1_UNCR"])
    keywords = {elem.keyword for elem in ds}
    assert keywords <= set(KEPT_TAGS) | {"SpecificCharacterSet"}
    assert "PatientName" not in ds and "InstitutionName" not in ds


# --- rejects ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_other_modalities_are_not_chest_xrays(name):
    reject = reject_of(bundled.pydicom_test_file(name))
    assert reject.reason == "not_chest_xray" and "Modality" in reject.detail


def test_check_chest_false_decodes_other_modalities():
    image = read_dicom(bundled.pydicom_test_file("CT_small.dcm"), check_chest=False)
    assert image.pixels.shape == (128, 128) and image.meta["modality"] == "CT"


def test_radiograph_of_another_body_part_is_rejected():
    reject = reject_of(bundled.pydicom_test_file("RG3_J2KI.dcm"))  # real CR of an extremity
    assert reject.reason == "not_chest_xray" and "EXTREMITY" in reject.detail


def test_rgb_dicom_is_rejected():
    reject = reject_of(bundled.pydicom_test_file("SC_rgb.dcm"), check_chest=False)
    assert reject.reason == "not_chest_xray" and "RGB" in reject.detail


def test_truncated_pixel_data_is_corrupt(tmp_path):
    path = tmp_path / "cut.dcm"
    path.write_bytes(bundled.rg1_dicoms()["RG1_UNCR"].read_bytes()[:100_000])
    reject = reject_of(path)
    assert reject.reason == "corrupt_pixels"
    assert str(tmp_path) not in reject.detail and "cut.dcm" not in reject.detail


def test_truncated_jpeg2000_is_corrupt(tmp_path):
    path = tmp_path / "cut_j2k.dcm"
    path.write_bytes(bundled.rg1_dicoms()["RG1_J2KI"].read_bytes()[:300_000])
    assert reject_of(path).reason == "corrupt_pixels"


def test_file_cut_before_the_pixel_data_has_no_pixel_data(tmp_path):
    data = bundled.rg1_dicoms()["RG1_UNCR"].read_bytes()
    path = tmp_path / "header_only.dcm"
    path.write_bytes(data[: data.index(b"\xe0\x7f\x10\x00")])  # up to (7FE0,0010)
    assert reject_of(path).reason == "no_pixel_data"


@pytest.mark.parametrize("name", ["reportsi.dcm", "waveform_ecg.dcm"])
def test_dicom_without_an_image_has_no_pixel_data(name):
    assert reject_of(bundled.pydicom_test_file(name)).reason == "no_pixel_data"


def test_random_bytes_are_not_dicom(tmp_path):
    rng = np.random.default_rng(0)
    noise = tmp_path / "noise.dcm"
    noise.write_bytes(rng.integers(0, 256, 8192, dtype=np.uint8).tobytes())
    fake = tmp_path / "fake_magic.dcm"  # preamble + 'DICM' + junk
    fake.write_bytes(
        rng.integers(0, 256, 128, dtype=np.uint8).tobytes() + b"DICM" + noise.read_bytes()
    )
    assert sniff_format(noise) is None
    assert reject_of(noise).reason == "not_dicom"
    assert reject_of(fake).reason == "not_dicom"


def test_burned_in_annotation_is_rejected_unless_allowed(tmp_path):
    ds = pydicom.dcmread(bundled.rg1_dicoms()["RG1_UNCR"])
    ds.BurnedInAnnotation = "YES"
    path = tmp_path / "burned.dcm"
    ds.save_as(path)
    assert reject_of(path).reason == "burned_in_annotation"
    image = read_dicom(path, allow_burned_in=True)
    assert image.meta["burned_in"] is True
    np.testing.assert_array_equal(image.pixels, decoded("RG1_UNCR").pixels)


def test_jpeg_lossless_decodes():
    # Real JPEG Lossless (process 14, SV1) file; common in hospital CR/DX archives.
    image = read_dicom(bundled.pydicom_test_file("JPEG-LL.dcm"), check_chest=False)
    assert image.pixels.shape == (1024, 256)
    assert image.meta["transfer_syntax"] == "1.2.840.10008.1.2.4.70"
    assert 0.0 <= image.pixels.min() < image.pixels.max() <= 1.0


def test_missing_decoder_names_the_transfer_syntax(tmp_path):
    ds = pydicom.dcmread(bundled.rg1_dicoms()["RG1_J2KR"])
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG-2: no decoder exists
    path = tmp_path / "mpeg2.dcm"
    ds.save_as(path, enforce_file_format=True)
    reject = reject_of(path)
    assert reject.reason == "unsupported_transfer_syntax"
    assert "1.2.840.10008.1.2.4.100" in reject.detail and "MPEG2" in reject.detail


def test_multiframe_uses_the_first_frame():
    path = bundled.pydicom_test_file("emri_small_RLE.dcm")  # real 10-frame MR, RLE
    image = read_dicom(path, check_chest=False)
    ds = pydicom.dcmread(path)
    frame0 = ds.pixel_array[0]  # (10, 64, 64) -> (64, 64)
    assert image.meta["n_frames"] == 10
    np.testing.assert_array_equal(image.pixels, dicom_to_unit(frame0, ds, "MONOCHROME2"))


# --- sniffing ---------------------------------------------------------------------


def test_extensionless_and_headerless_dicom_are_recognised(tmp_path):
    no_ext = tmp_path / "IM000001"
    shutil.copyfile(bundled.pydicom_test_file("CT_small.dcm"), no_ext)
    assert sniff_format(no_ext) == "dicom"
    assert sniff_format(bundled.pydicom_test_file("ExplVR_LitEndNoMeta.dcm")) == "dicom"
    assert sniff_format(bundled.pydicom_test_file("rtstruct.dcm")) == "dicom"  # implicit VR
    for not_dicom in ("README.txt", "crayons.icc", "test1.json"):
        assert sniff_format(bundled.pydicom_test_file(not_dicom)) is None


# --- metadata parsing -------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "birth", "study", "expected"),
    [
        ("045Y", None, None, 45.0),
        ("006M", None, None, 0.5),
        ("002W", None, None, 14 / 365.25),
        ("010D", None, None, 10 / 365.25),
        (None, "19400305", "20040826", 23550 / 365.25),  # 23,550 days between the dates
        ("abc", "20000101", "20000101", 0.0),
        (None, "20100101", "20000101", None),  # born after the study
        ("", None, None, None),
    ],
)
def test_parse_age(age, birth, study, expected):
    got = parse_age(age, birth, study)
    assert got == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(
    ("position", "codes", "descriptions", "expected"),
    [
        ("PA", [], [], "PA"),
        ("RL", [], [], "LATERAL"),
        ("AP AXIAL", [], [], "AP"),
        ("", ["postero-anterior"], ["CHEST AP"], "PA"),
        (None, ["left lateral"], [], "LL"),
        (None, [], ["CHEST PA AND LATERAL", "THORAX_LAT"], "LATERAL"),  # 1st names two views
        (None, [], ["CHEST (PORTABLE AP)"], "AP"),
        (None, [], ["ABDOMEN"], "UNKNOWN"),
        (None, [], [], "UNKNOWN"),
    ],
)
def test_infer_view_fallbacks(position, codes, descriptions, expected):
    assert infer_view(position, codes, descriptions) == expected


def test_extract_meta_reads_view_code_sequence_and_detector_spacing():
    code = Dataset()
    code.CodeMeaning = "antero-posterior"
    ds = Dataset()
    ds.file_meta = Dataset()
    ds.Modality, ds.PatientSex, ds.PatientAge, ds.BurnedInAnnotation = "DX", "X", "089Y", "NO"
    ds.ViewCodeSequence = [code]
    ds.ImagerPixelSpacing, ds.PixelSpacing = [0.139, 0.14], [0.1, 0.1]
    meta = extract_meta(ds)
    assert meta["view"] == "AP" and meta["sex"] is None and meta["age"] == 89.0
    assert meta["pixel_spacing"] == [0.139, 0.14] and meta["burned_in"] is False
    del ds.ImagerPixelSpacing
    assert extract_meta(ds)["pixel_spacing"] == [0.1, 0.1]


# --- decoders and unused bits ---------------------------------------------------------


def test_clear_unused_bits_masks_only_when_a_high_bit_is_set():
    from cxrkit.io.dicom import _clear_unused_bits

    clean = np.array([[0x0FFF, 0x0001]], dtype=np.uint16)
    assert _clear_unused_bits(clean, 12) is clean  # nothing to clear: no copy
    dirty = np.array([[0x1FFF, 0xF234]], dtype=np.uint16)  # overlay bits above bit 11
    np.testing.assert_array_equal(_clear_unused_bits(dirty, 12), [[0x0FFF, 0x0234]])
    assert dirty[0, 0] == 0x1FFF  # the input (possibly the file's bytes) is not written
    signed = np.array([[-1]], dtype=np.int16)
    assert _clear_unused_bits(signed, 12) is signed  # signed data: pydicom sign-extends


def test_junk_in_the_unused_high_bits_is_ignored(tmp_path):
    # RG1 stores 15 bits in 16; set the 16th bit on a band of rows, as an overlay would.
    from cxrkit.io.dicom import _decode_frame0

    ds = pydicom.dcmread(bundled.rg1_dicoms()["RG1_UNCR"])
    assert ds.BitsStored == 15 and ds.PixelRepresentation == 0
    original = ds.pixel_array.copy()
    dirty = original.copy()
    dirty[100:300] |= 0x8000
    ds.PixelData = dirty.tobytes()
    ds.save_as(tmp_path / "dirty.dcm")
    reread = pydicom.dcmread(tmp_path / "dirty.dcm")
    np.testing.assert_array_equal(_decode_frame0(reread), original)
    np.testing.assert_array_equal(reread.pixel_array, original)  # pydicom agrees
    np.testing.assert_array_equal(
        read_dicom(tmp_path / "dirty.dcm").pixels, decoded("RG1_UNCR").pixels
    )


def _spy_plugins(monkeypatch, fail: str | None = None) -> list:
    """Record the decoding_plugin of every JPEG 2000 as_array call; `fail` raises."""
    from cxrkit.io import dicom

    used: list = []
    decoder_cls = type(dicom.get_decoder(dicom.JPEG2000))
    original = decoder_cls.as_array

    def spy(self, src, **kwargs):
        used.append(kwargs.get("decoding_plugin"))
        if fail is not None and kwargs.get("decoding_plugin") == fail:
            raise RuntimeError(f"{fail} broke")
        return original(self, src, **kwargs)

    monkeypatch.setattr(decoder_cls, "as_array", spy)
    return used


@pytest.mark.parametrize("name", ["RG1_J2KR", "RG1_J2KI"])
def test_jpeg2000_decodes_with_pylibjpeg_and_matches_gdcm(monkeypatch, name):
    # pydicom would try GDCM first; pylibjpeg-openjpeg gives the same pixels in less time.
    from pydicom.pixels import pixel_array

    from cxrkit.io.dicom import _decode_frame0

    path = bundled.rg1_dicoms()[name]
    used = _spy_plugins(monkeypatch)
    arr = _decode_frame0(pydicom.dcmread(path))
    assert used == ["pylibjpeg"]
    np.testing.assert_array_equal(arr, pixel_array(path, decoding_plugin="gdcm"))


def test_a_failing_preferred_plugin_falls_back_to_pydicoms_order(monkeypatch):
    from cxrkit.io.dicom import _decode_frame0

    used = _spy_plugins(monkeypatch, fail="pylibjpeg")
    arr = _decode_frame0(pydicom.dcmread(bundled.rg1_dicoms()["RG1_J2KI"]))
    assert used == ["pylibjpeg", None]
    np.testing.assert_array_equal(
        arr, pydicom.dcmread(bundled.rg1_dicoms()["RG1_UNCI"]).pixel_array
    )


# ----------------------------------------------- DCT JPEG: Pillow first, GDCM never aborts us
def _bits7_jpeg(tmp_path) -> Path:
    """RG1 as 8-bit JPEG Baseline whose header claims BitsStored 7: GDCM's codec throws a
    C++ exception on it that aborts the process (seen: `cxrkit ingest` exit 134)."""
    return bundled.rg1_as_jpeg_baseline(tmp_path / "bits7.dcm", step=4, bits_stored=7)


def test_a_header_that_aborts_gdcm_is_decoded_without_killing_the_process(tmp_path):
    path = _bits7_jpeg(tmp_path)
    code = (
        "import sys, pydicom; from cxrkit.io.dicom import _decode_frame0; "
        "a = _decode_frame0(pydicom.dcmread(sys.argv[1])); print(a.shape, int(a.max()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-400:]
    assert (
        int(done.stdout.rsplit(")", 1)[1]) < 128
    )  # the unused top bit is cleared, as pydicom would


def test_when_pillow_fails_on_such_a_header_it_is_rejected_not_passed_to_gdcm(
    tmp_path, monkeypatch
):
    from pydicom.uid import JPEGBaseline8Bit

    from cxrkit.io import dicom

    path = _bits7_jpeg(tmp_path)
    used: list = []
    decoder_cls = type(dicom.get_decoder(JPEGBaseline8Bit))

    def spy(self, src, **kwargs):
        used.append(kwargs.get("decoding_plugin"))
        raise RuntimeError("pillow broke")

    monkeypatch.setattr(decoder_cls, "as_array", spy)
    with pytest.raises(Reject) as info:
        dicom._decode_frame0(pydicom.dcmread(path))
    assert used == ["pillow"]  # pydicom's order (GDCM first) never tried
    assert info.value.reason == "corrupt_pixels" and "BitsStored 7" in str(info.value)


def test_12_bit_jpeg_extended_is_still_tried_in_pydicoms_order_after_pillow(monkeypatch):
    # Pillow declines 12-bit DCT; the file then goes to pydicom's order as before (in the
    # default install nothing decodes it: the GPL libjpeg plugin is the `gpl-jpeg` extra).
    from pydicom.data import get_testdata_file
    from pydicom.uid import JPEGExtended12Bit

    from cxrkit.io import dicom

    used: list = []
    decoder_cls = type(dicom.get_decoder(JPEGExtended12Bit))
    original = decoder_cls.as_array

    def spy(self, src, **kwargs):
        used.append(kwargs.get("decoding_plugin"))
        return original(self, src, **kwargs)

    monkeypatch.setattr(decoder_cls, "as_array", spy)
    ds = pydicom.dcmread(get_testdata_file("JPEG-lossy.dcm", download=False))
    try:
        dicom._decode_frame0(ds)
    except Reject as exc:
        assert exc.reason == "corrupt_pixels" and "12-bit" in str(exc)
    assert used == ["pillow", None]
