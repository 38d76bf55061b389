"""Which reader a file needs, decided by its magic bytes (the extension is ignored)."""

from __future__ import annotations

from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8\xff"
DICOM_MAGIC_OFFSET = 128


def looks_like_headerless_dicom(head: bytes) -> bool:
    """Cheap test for a DICOM stream without the 128-byte preamble and 'DICM'.

    Such files (old ACR-NEMA style exports) start directly with an element of group
    0x0002 or 0x0008, in little- or big-endian order, followed either by a valid
    two-letter VR (explicit VR) or a 4-byte length (implicit VR). Random bytes pass
    this with probability ~1e-9, and the caller then still asks pydicom to parse.
    """
    if len(head) < 8:
        return False
    group_le = int.from_bytes(head[0:2], "little")
    group_be = int.from_bytes(head[0:2], "big")
    if group_le not in (0x0002, 0x0008) and group_be not in (0x0002, 0x0008):
        return False
    vr = head[4:6]
    if vr.isalpha() and vr.isupper():
        return True
    big = group_le not in (0x0002, 0x0008)
    length = int.from_bytes(head[4:8], "big" if big else "little")
    return length < (1 << 16)  # first header elements are short strings or group lengths


def _parses_as_dicom(path: Path) -> bool:
    """Whether pydicom, forced, reads at least one recognised element from `path`."""
    import pydicom
    from pydicom.datadict import dictionary_has_tag

    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        return any(dictionary_has_tag(elem.tag) for elem in ds)
    except Exception:  # noqa: BLE001 - any parse failure simply means "not DICOM"
        return False


def sniff_format(path: str | Path) -> str | None:
    """Identify a file by its magic bytes (the extension is ignored).

    Takes: a file path. Returns: "dicom" (preamble + 'DICM', or a header-less DICOM
    stream that pydicom parses), "png", "jpeg", or None for anything else.
    Raises nothing: an unreadable file returns None.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            head = fh.read(DICOM_MAGIC_OFFSET + 4)
    except OSError:
        return None
    if head[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM":
        return "dicom"
    if head.startswith(PNG_SIGNATURE):
        return "png"
    if head.startswith(JPEG_SOI):
        return "jpeg"
    if looks_like_headerless_dicom(head) and _parses_as_dicom(path):
        return "dicom"
    return None
