"""DICOM chest radiographs: checks, decoding and the display pipeline.

Pipeline (DESIGN.md §3): read only :data:`KEPT_TAGS` -> checks -> decode frame 0
(uncompressed, RLE, JPEG baseline, JPEG 2000 through pydicom's plugins; with
``decode_long_side``, lossy JPEG 2000 at a reduced resolution level and 8-bit grey
JPEG baseline at a reduced DCT scale, through Pillow) -> modality
LUT (rescale slope/intercept or Modality LUT Sequence) -> VOI LUT or window (pydicom's
``apply_voi_lut``; when neither is present the percentile window of
:func:`robust_normalise` alone sets the contrast) -> invert MONOCHROME1 -> robust
normalise -> float32 [0, 1], bright = bone.

Speed: every intensity step is a function of the stored value alone, so for integer
pixel data the steps run once on the distinct stored values (at most 65,536 for
16-bit data) and one gather maps the image; the percentiles come exactly from the
value histogram. That replaces three float64 passes over a 3.6 Mpx image.

Metadata (identifiers, dates, view, spacing...) is read by :mod:`cxrkit.io.dicom_meta`.

Decisions: colour DICOM (RGB, YBR_*, PALETTE COLOR) is rejected as ``not_chest_xray``
- a chest radiograph is MONOCHROME1/2 by definition (PS3.3 C.8.11.7 / C.8.9.1), so a
colour one is a screenshot or secondary capture. Multi-frame CR/DX: frame 0 is used
and ``meta["n_frames"]`` records the count.
"""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
)

from cxrkit.errors import Reject
from cxrkit.io import jpeg_reduce
from cxrkit.io.decoded import DecodedImage
from cxrkit.io.dicom_meta import CHEST_MODALITIES, extract_meta
from cxrkit.io.intensity import normalise_through_table, robust_normalise
from cxrkit.io.j2k_reduce import codestream_header, decode_reduced
from cxrkit.io.path_scrub import scrub_detail
from cxrkit.io.sniff import looks_like_headerless_dicom

# The allow-list: the only elements pydicom parses (``dcmread(specific_tags=...)``);
# everything else, names, addresses, physicians, institution, free-text comments, is
# skipped unread. In the spirit of PS3.15 Annex E (Basic Application Level
# Confidentiality Profile) we keep only what the pipeline needs: identifiers and dates
# that the caller pseudonymises/shifts (Annex E "clean/replace" targets), demographics
# coarse enough to keep (sex, age, capped by the caller), and the image description and
# pixel modules. SeriesDescription/ProtocolName are read only to infer the view and are
# never returned; PatientBirthDate only to compute the age.
KEPT_TAGS: tuple[str, ...] = (
    # identifiers -> pseudonyms
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "AccessionNumber",
    # dates and demographics -> shifted / kept coarse
    "StudyDate",
    "PatientBirthDate",
    "PatientAge",
    "PatientSex",
    # what the image is
    "SOPClassUID",
    "Modality",
    "BodyPartExamined",
    "ViewPosition",
    "ViewCodeSequence",
    "SeriesDescription",
    "ProtocolName",
    "Manufacturer",
    "BurnedInAnnotation",
    "ImagerPixelSpacing",
    "PixelSpacing",
    # image pixel module, LUTs and the pixels
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PlanarConfiguration",
    "NumberOfFrames",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "PixelData",
)

CHEST_BODY_PARTS = ("CHEST", "THORAX", "THORAC", "LUNG", "TORAX", "TORACE", "PECHO", "CXR")
# Body-part values that say nothing; treated like an absent BodyPartExamined.
UNINFORMATIVE_BODY_PARTS = frozenset({"", "UNKNOWN", "OTHER", "NONE", "ANY", "N/A", "NA"})
MIN_BLANK_MODALITY_SIDE = 256  # blank Modality: accept only radiograph-sized 2D images
MAX_BLANK_MODALITY_ASPECT = 3.0
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_LUT_MAX_VALUES = 1 << 20  # wider integer ranges (32-bit data) take the direct path
_DEFER_SIZE = "256 KB"  # pixel bytes are read only once the checks have passed
# Like Pillow's MAX_IMAGE_PIXELS: what a header may make us allocate. 100 Mpx is 2.5x
# the largest detector (43x43 cm at 0.07 mm); ingest's `max_pixels` setting overrides it.
MAX_PIXELS = 100_000_000
_INFLATE_CHUNK = 1 << 20


def _check_deflate_budget(path: Path, max_bytes: int) -> None:
    """Bound a Deflated Explicit VR file's inflated size before pydicom inflates all of it.

    pydicom inflates the whole dataset in memory; a 2 kB file can claim gigabytes.
    Inflate in chunks here, counting, and Reject("too_large") past ``max_bytes``.
    """
    from pydicom.filereader import _read_file_meta_info, read_preamble

    try:
        with path.open("rb") as fh:
            read_preamble(fh, False)
            meta = _read_file_meta_info(fh)
            if meta.get("TransferSyntaxUID") != pydicom.uid.DeflatedExplicitVRLittleEndian:
                return
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            total = 0
            while block := fh.read(_INFLATE_CHUNK):
                data = inflater.decompress(block, max_bytes + 1 - total)
                total += len(data)
                while inflater.unconsumed_tail and total <= max_bytes:
                    data = inflater.decompress(inflater.unconsumed_tail, max_bytes + 1 - total)
                    total += len(data)
                if total > max_bytes:
                    raise Reject(
                        "too_large",
                        f"deflated dataset inflates past {max_bytes:,} bytes (max_pixels limit)",
                    )
    except (InvalidDicomError, OSError, zlib.error, ValueError, KeyError, AttributeError):
        return  # not a deflated file we can pre-read: the normal reader decides


def _check_pixel_budget(ds: Dataset, max_pixels: int) -> None:
    """Check the header's image size against ``max_pixels`` and, for native (uncompressed)
    pixel data, the element's byte count against what the header implies, before decoding.

    Raises Reject("too_large") for a header claiming more pixels than allowed, and
    Reject("pixel_data_mismatch") when BitsAllocated/Rows/Columns/frames describe
    fewer bytes than are present (a lying header decodes to noise), and
    Reject("corrupt_pixels") when fewer bytes are present than described.
    """
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(str(ds.get("NumberOfFrames", 1) or 1).strip() or 1)
    if rows <= 0 or cols <= 0:
        raise Reject("corrupt_pixels", f"Rows {rows} x Columns {cols}: no image size")
    if rows * cols > max_pixels:
        raise Reject(
            "too_large", f"header claims {cols}x{rows} = {rows * cols:,} pixels > max_pixels "
            f"{max_pixels:,}"
        )  # fmt: skip
    file_meta = getattr(ds, "file_meta", None)
    syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if syntax is None or UID(str(syntax)).is_compressed:
        return
    bits = int(ds.get("BitsAllocated", 0) or 0)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if bits not in (1, 8, 16, 32, 64):
        raise Reject("pixel_data_mismatch", f"BitsAllocated {bits} is not 1, 8, 16, 32 or 64")
    expected = (rows * cols * frames * samples * bits + 7) // 8
    element = ds.get_item("PixelData")
    present = getattr(element, "length", None)
    if present is None or present == 0xFFFFFFFF:
        value = getattr(element, "value", None)
        present = len(value) if isinstance(value, bytes | bytearray) else None
    if present is not None and present not in (expected, expected + 1):
        reason = "corrupt_pixels" if present < expected else "pixel_data_mismatch"
        raise Reject(
            reason,
            f"header implies {expected:,} pixel bytes ({cols}x{rows}, {frames} frame(s), "
            f"BitsAllocated {bits}) but Pixel Data holds {present:,}",
        )


def _read_dataset(path: Path) -> tuple[Dataset, list[str]]:
    """Parse `path` reading only KEPT_TAGS; returns the dataset and pydicom's warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path, defer_size=_DEFER_SIZE, specific_tags=list(KEPT_TAGS))
        except InvalidDicomError as exc:
            with path.open("rb") as fh:
                head = fh.read(8)
            if not looks_like_headerless_dicom(head):
                raise Reject("not_dicom", f"no DICOM preamble or header: {exc}") from exc
            ds = _read_forced(path)
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types on junk
            raise Reject("not_dicom", f"unparseable DICOM: {type(exc).__name__}: {exc}") from exc
    messages = [str(w.message) for w in caught]
    if not any(elem.tag != 0x00080005 for elem in ds):  # SpecificCharacterSet is always read
        # Two cases parse to an empty dataset instead of failing: 'DICM' followed by
        # junk, and a file cut inside an undefined-length element (pydicom drops all).
        truncated = _truncation_warning(messages)
        if truncated:
            raise Reject("corrupt_pixels", f"file is truncated: {truncated}")
        raise Reject("not_dicom", "no DICOM element of the kept set could be read")
    return ds, messages


def _truncation_warning(messages: list[str]) -> str | None:
    """pydicom's warning that the file ended early, if it gave one."""
    return next((m for m in messages if "End of file" in m or "truncated" in m.lower()), None)


def _read_forced(path: Path) -> Dataset:
    """Read a header-less DICOM stream and give it the transfer syntax it was read with."""
    try:
        ds = pydicom.dcmread(
            path, defer_size=_DEFER_SIZE, specific_tags=list(KEPT_TAGS), force=True
        )
    except Exception as exc:  # noqa: BLE001 - forced parsing of junk fails arbitrarily
        raise Reject("not_dicom", f"unparseable DICOM: {type(exc).__name__}: {exc}") from exc
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, little = ds.original_encoding
        if not little:
            raise Reject("unsupported_transfer_syntax", "big-endian stream without file meta")
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        )
    return ds


def _check_pixels_present(ds: Dataset, read_warnings: list[str]) -> None:
    if "PixelData" in ds:
        return
    truncated = _truncation_warning(read_warnings)
    if truncated:
        raise Reject("corrupt_pixels", f"file ends inside the pixel data: {truncated}")
    raise Reject("no_pixel_data", "no (7FE0,0010) Pixel Data element")


def _check_is_chest(ds: Dataset, n_frames: int) -> None:
    """Reject what cannot be a chest radiograph (modality, body part, geometry)."""
    modality = str(ds.get("Modality", "") or "").strip().upper()
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if modality and modality not in CHEST_MODALITIES:
        raise Reject("not_chest_xray", f"Modality {modality} (chest radiographs are CR/DX/DR/RG)")
    if not modality:
        short, long = min(rows, cols), max(rows, cols)
        if short < MIN_BLANK_MODALITY_SIDE or long > MAX_BLANK_MODALITY_ASPECT * short:
            raise Reject(
                "not_chest_xray", f"blank Modality and a {rows}x{cols} image: not radiograph-like"
            )
        if n_frames > 1:
            raise Reject("not_chest_xray", f"blank Modality and {n_frames} frames: a volume")
    body_part = str(ds.get("BodyPartExamined", "") or "").strip().upper()
    if body_part not in UNINFORMATIVE_BODY_PARTS and not any(
        key in body_part for key in CHEST_BODY_PARTS
    ):
        raise Reject("not_chest_xray", f"BodyPartExamined {body_part}")


def _check_photometric(ds: Dataset) -> str:
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if photometric not in MONOCHROME or samples != 1:
        raise Reject(
            "not_chest_xray",
            f"PhotometricInterpretation {photometric or 'missing'} with {samples} samples "
            "per pixel; chest radiographs are MONOCHROME1/2 greyscale",
        )
    return photometric


# pydicom tries GDCM first for JPEG-LS and JPEG 2000. pyjpegls returns the same pixels
# 2-5x faster on radiographs (benchmarks/decoders.py); pylibjpeg-openjpeg (OpenJPEG 2.5)
# the same pixels as GDCM's bundled OpenJPEG 2.3, in about 60 % of the CPU time for
# lossy and 85 % for lossless RG1 (benchmarks/decode_bound.py). Other syntaxes keep
# pydicom's order; a preferred plugin that fails is retried with pydicom's order.
# JPEG Baseline goes to Pillow (libjpeg-turbo): the same pixels as GDCM, and a Python
# exception on a bad header where GDCM's codec throws a C++ exception that aborts the
# whole process (8-bit data declaring BitsStored 7, a crafted file seen in testing).
PREFERRED_PLUGIN = {
    JPEGLSLossless: "pyjpegls",
    JPEGLSNearLossless: "pyjpegls",
    JPEG2000Lossless: "pylibjpeg",
    JPEG2000: "pylibjpeg",
    JPEGBaseline8Bit: "pillow",
    JPEGExtended12Bit: "pillow",  # 8-bit Process 2; Pillow declines 12-bit data -> GDCM
}
# DCT JPEG: GDCM may abort on it (below), and Pillow (libjpeg) decodes it at 1/2, 1/4,
# 1/8 scale (8-bit samples only: a 12-bit Extended file fails to open and is decoded in
# full by pydicom).
JPEG_DCT = (JPEGBaseline8Bit, JPEGExtended12Bit)


def _aborts_gdcm(ds: Dataset, uid: UID) -> bool:
    """True for headers on which GDCM's JPEG codec aborts the process instead of raising:
    DCT JPEG with 8 bits allocated but fewer stored."""
    bits = (int(ds.get("BitsAllocated", 0) or 0), int(ds.get("BitsStored", 0) or 0))
    return uid in JPEG_DCT and bits[0] == 8 and bits[1] != 8


def _frame0_bytes(ds: Dataset) -> bytes | None:
    """The encapsulated bytes of frame 0, or None when the encapsulation is unreadable."""
    try:
        frames = int(str(ds.get("NumberOfFrames", 1) or 1).strip() or 1)
        return next(generate_frames(ds.PixelData, number_of_frames=frames))
    except Exception:  # noqa: BLE001 - broken encapsulation: the full decoder reports it
        return None


def _decode_frame0_jpeg_reduced(ds: Dataset, target_long_side: int) -> np.ndarray | None:
    """Frame 0 of an 8-bit greyscale DCT JPEG dataset at 1/2, 1/4 or 1/8 scale, or None.

    None unless the header says what pydicom would return as plain 8-bit stored values
    (one unsigned 8-bit sample per pixel, MONOCHROME1/2), and whenever
    :func:`cxrkit.io.jpeg_reduce.decode_reduced` declines (other size, colour, 12-bit,
    no scale to skip, any decode failure).
    """
    header = (
        int(ds.get("SamplesPerPixel", 1) or 1),
        int(ds.get("BitsAllocated", 0) or 0),
        int(ds.get("BitsStored", 0) or 0),
        int(ds.get("PixelRepresentation", 0) or 0),
        str(ds.get("PhotometricInterpretation", "")).strip().upper(),
    )
    if header[:4] != (1, 8, 8, 0) or header[4] not in ("MONOCHROME1", "MONOCHROME2"):
        return None
    data = _frame0_bytes(ds)
    if data is None:
        return None
    return jpeg_reduce.decode_reduced(data, target_long_side, (int(ds.Columns), int(ds.Rows)))


def _decode_frame0_reduced(
    ds: Dataset, target_long_side: int, reduce_lossless: bool
) -> np.ndarray | None:
    """Frame 0 of a JPEG 2000 or DCT JPEG dataset at a reduced resolution, or None.

    None when the syntax is neither JPEG 2000 (lossless only with `reduce_lossless`)
    nor 8-bit greyscale DCT JPEG (see :func:`_decode_frame0_jpeg_reduced`), the
    samples are signed (the modality LUT reads PixelRepresentation), the codestream's
    size is not the header's Rows x Columns, or :func:`decode_reduced` declines.
    """
    uid = UID(str(ds.file_meta.TransferSyntaxUID))
    if uid in JPEG_DCT:
        return _decode_frame0_jpeg_reduced(ds, target_long_side)
    syntaxes = (JPEG2000, JPEG2000Lossless) if reduce_lossless else (JPEG2000,)
    if uid not in syntaxes or int(ds.get("PixelRepresentation", 0) or 0) != 0:
        return None
    codestream = _frame0_bytes(ds)
    if codestream is None:
        return None
    header = codestream_header(codestream)
    if header is None or header[:2] != (int(ds.Columns), int(ds.Rows)):
        return None  # the full decoder decides what a mismatched codestream is
    return decode_reduced(codestream, target_long_side)


def _decode_frame0(ds: Dataset) -> np.ndarray:
    """Decode the first frame; Reject for a missing decoder or broken pixel data."""
    uid = UID(str(ds.file_meta.TransferSyntaxUID))
    try:
        decoder = get_decoder(uid)
    except NotImplementedError as exc:
        raise Reject(
            "unsupported_transfer_syntax", f"{uid} ({uid.name}): no pixel decoder exists"
        ) from exc
    if not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies) or "a decoding plugin"
        raise Reject(
            "unsupported_transfer_syntax", f"{uid} ({uid.name}): no installed decoder ({needs})"
        )
    # Unsigned data: no copy-and-shift pass to clear the unused high bits (pydicom's
    # default); _clear_unused_bits does it only when a value has such a bit set.
    unsigned = int(ds.get("PixelRepresentation", 0) or 0) == 0
    options: dict = {"correct_unused_bits": False, "view_only": True} if unsigned else {}
    plugin = PREFERRED_PLUGIN.get(uid)
    try:
        if plugin in decoder.available_plugins:
            try:
                arr, props = decoder.as_array(ds, index=0, decoding_plugin=plugin, **options)
            except Exception as exc:  # noqa: BLE001 - the other plugins decide, in pydicom's order
                if _aborts_gdcm(ds, uid):  # pydicom's order would reach GDCM: reject instead
                    raise Reject(
                        "corrupt_pixels",
                        f"{uid.name} with BitsAllocated 8, BitsStored {ds.BitsStored}: "
                        f"{type(exc).__name__}: {exc}",
                    ) from exc
                arr, props = decoder.as_array(ds, index=0, **options)
        else:
            arr, props = decoder.as_array(ds, index=0, **options)
    except Reject:
        raise
    except Exception as exc:  # noqa: BLE001 - decoder plugins raise arbitrary types
        raise Reject("corrupt_pixels", f"{uid.name}: {type(exc).__name__}: {exc}") from exc
    if arr.ndim != 2:
        raise Reject("corrupt_pixels", f"decoded frame has shape {arr.shape}, expected 2D")
    if unsigned:
        arr = _clear_unused_bits(arr, int(props.get("bits_stored") or ds.BitsStored))
    return arr


def _clear_unused_bits(arr: np.ndarray, bits_stored: int) -> np.ndarray:
    """Unsigned stored values with the bits above BitsStored cleared (PS3.5 8.1.1).

    Takes: (H, W) unsigned integers, possibly a read-only view of the file's bytes.
    Returns: `arr` itself when no value reaches ``2**bits_stored`` (the common case:
    one max() pass instead of pydicom's copy and two shift passes), else a masked copy.
    """
    if arr.dtype.kind != "u" or not 0 < bits_stored < 8 * arr.dtype.itemsize:
        return arr
    if int(arr.max(initial=0)) >> bits_stored == 0:
        return arr
    return arr & arr.dtype.type((1 << bits_stored) - 1)


def _display_values(values: np.ndarray, ds: Dataset, photometric: str) -> np.ndarray:
    """Modality LUT -> VOI LUT/window -> MONOCHROME1 inversion, on any array of stored values."""
    out = apply_voi_lut(apply_modality_lut(values, ds), ds, index=0)
    if photometric == "MONOCHROME1":
        out = -np.asarray(out, dtype=np.float64)  # low values display white: flip
    return out


def dicom_to_unit(
    arr: np.ndarray, ds: Dataset, photometric: str, low_pct: float = 0.5, high_pct: float = 99.5
) -> np.ndarray:
    """Run the intensity pipeline on a decoded frame.

    Takes: (H, W) stored values, the dataset (for the LUT/window elements) and its
    photometric interpretation. Returns: float32 (H, W) in [0, 1], bright = bone.
    Raises: Reject("corrupt_pixels") for a constant image.
    """
    if arr.dtype.kind in "ui":
        low_value, high_value = int(arr.min()), int(arr.max())
        if high_value - low_value < _LUT_MAX_VALUES:
            offset = 0 if arr.dtype.kind == "u" else low_value
            index = arr if offset == 0 else arr.astype(np.int32) - offset  # (H, W) >= 0
            ramp = np.arange(offset, high_value + 1, dtype=np.int64)
            lut = np.asarray(_display_values(ramp, ds, photometric), dtype=np.float64)
            return normalise_through_table(index, lut, low_pct, high_pct)
    values = _display_values(arr, ds, photometric)
    return robust_normalise(values, low_pct, high_pct)


def read_dicom(
    path: str | Path,
    *,
    allow_burned_in: bool = False,
    check_chest: bool = True,
    low_pct: float = 0.5,
    high_pct: float = 99.5,
    max_pixels: int = MAX_PIXELS,
    decode_long_side: int | None = None,
    reduce_lossless: bool = False,
) -> DecodedImage:
    """Read a DICOM file and return its first frame as a display-ready radiograph.

    Takes: a path; `allow_burned_in` keeps images flagged BurnedInAnnotation=YES;
    `check_chest=False` skips the modality/body-part/volume checks (not the
    greyscale check: the pipeline needs one sample per pixel); `low_pct`/`high_pct`
    are the robust-normalisation percentiles; `decode_long_side`, the long side the
    caller will downscale to, lets lossy JPEG 2000 (and lossless too with
    `reduce_lossless`) decode at the coarsest resolution level, and 8-bit greyscale
    DCT JPEG at the smallest 1/2, 1/4 or 1/8 scale, still at least that large (None:
    always full resolution). A lossless file decoded in full gives exactly
    the stored image of its uncompressed twin; a reduced decode does not.
    Returns: :class:`DecodedImage` with `source_format` "dicom" and `meta` holding
    the keys of ``cxrkit.io.decoded.META_KEYS`` (raw PHI: pseudonymise before storing);
    after a reduced decode `pixels` is smaller and `full_shape` is the source's (H, W).
    Raises: Reject with reason not_dicom, no_pixel_data, not_chest_xray,
    burned_in_annotation, unsupported_transfer_syntax, corrupt_pixels, too_large
    (more than `max_pixels` pixels claimed, or a deflated dataset inflating past
    what that allows) or pixel_data_mismatch (the header does not describe the bytes).
    """
    path = Path(path)
    try:
        _check_deflate_budget(path, max_pixels * 8)  # 8 bytes a pixel: 64-bit data plus header
        return _read_dicom(
            path,
            allow_burned_in,
            check_chest,
            (low_pct, high_pct),
            max_pixels,
            decode_long_side,
            reduce_lossless,
        )
    except Reject as exc:  # messages from pydicom and plugins quote the file path
        raise Reject(exc.reason, scrub_detail(exc.detail, path)) from exc.__cause__


def _read_dicom(
    path: Path,
    allow_burned_in: bool,
    check_chest: bool,
    window_pct: tuple[float, float],
    max_pixels: int = MAX_PIXELS,
    decode_long_side: int | None = None,
    reduce_lossless: bool = False,
) -> DecodedImage:
    ds, read_warnings = _read_dataset(path)
    _check_pixels_present(ds, read_warnings)
    meta = extract_meta(ds)
    photometric = _check_photometric(ds)
    if check_chest:
        _check_is_chest(ds, meta["n_frames"])
    if meta["burned_in"] and not allow_burned_in:
        raise Reject("burned_in_annotation", "BurnedInAnnotation is YES (allow with the option)")
    _check_pixel_budget(ds, max_pixels)
    full_shape = (int(ds.Rows), int(ds.Columns))
    arr = None
    if decode_long_side:
        arr = _decode_frame0_reduced(ds, decode_long_side, reduce_lossless)
    if arr is None:
        arr = _decode_frame0(ds)  # (H, W): frame 0 of a multi-frame file, see meta["n_frames"]
        full_shape = arr.shape
    pixels = dicom_to_unit(arr, ds, photometric, *window_pct)
    return DecodedImage(
        pixels=pixels,
        source_format="dicom",
        photometric=photometric,
        meta=meta,
        full_shape=(int(full_shape[0]), int(full_shape[1])),
    )
