"""Reject details are path-free: the one scrubber every stored reader error goes through."""

from __future__ import annotations

import os
from pathlib import Path

from cxrkit.io.path_scrub import MAX_DETAIL_CHARS, exception_detail, scrub_detail


def _patient_file(root: Path) -> Path:
    path = root / "SMITH_JOHN_MRN123" / "study1" / "0001.dcm"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a dicom")
    return path


def test_the_file_its_folder_and_every_ancestor_folder_are_removed(tmp_path):
    path = _patient_file(tmp_path)
    detail = scrub_detail(
        f"cannot read {path}; scanned {path.parent} inside {path.parent.parent}/", path
    )
    assert detail == "cannot read <file>; scanned <dir> inside <dir>/"


def test_the_name_stem_and_folder_name_go_where_they_stand_as_words(tmp_path):
    path = _patient_file(tmp_path)
    detail = scrub_detail("0001.dcm: header 0001.hea of study1 missing; 10001 and study10", path)
    assert detail == "<file>: header <file>.hea of <dir> missing; 10001 and study10"


def test_a_symlinks_target_path_folder_and_name_are_removed(tmp_path):
    target = _patient_file(tmp_path)
    link = tmp_path / "inbox" / "image.dcm"
    link.parent.mkdir()
    link.symlink_to(target)
    detail = scrub_detail(
        f"decoder opened {target} (from {link}); see {target.parent} and 0001.dcm", link
    )
    assert "SMITH" not in detail and "0001" not in detail and "study1" not in detail
    assert str(tmp_path) not in detail and "image.dcm" not in detail
    assert detail == "decoder opened <file> (from <file>); see <dir> and <file>"


def test_a_path_quoted_by_repr_is_removed(tmp_path):
    # Pillow quotes the file with %r: a backslash is doubled, an undecodable byte of a
    # Latin-1 folder name (MÜLLER) becomes \udcdc, and a printable copy shows \xdc.
    for folder in (b"SMITH\\JOHN_MRN456", b"M\xdcLLER_ANNA_MRN789"):
        path = tmp_path / os.fsdecode(folder) / "0002.png"
        path.parent.mkdir()
        path.write_bytes(b"junk")
        printable = str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        for message in (f"cannot identify image file {str(path)!r}", f"bad {printable}"):
            detail = scrub_detail(message, path)
            assert "MRN" not in detail, detail
    assert scrub_detail(f"cannot identify image file {str(path)!r}", path) == (
        "cannot identify image file '<file>'"
    )


def test_undecodable_bytes_are_written_as_escapes_so_parquet_can_store_them():
    detail = scrub_detail("bad marker \udcff in stream", "/data/x.png")
    assert detail == "bad marker \\xff in stream"
    detail.encode("utf-8")  # a lone surrogate would raise here


def test_a_long_detail_is_cut_after_the_path_is_removed(tmp_path):
    path = _patient_file(tmp_path)
    # the path straddles the cut: cutting first would leave "/tmp/.../SMITH_JO" behind
    message = "x" * (MAX_DETAIL_CHARS - 10) + f" {path} " + "y" * 1000
    detail = scrub_detail(message, path)
    assert len(detail) == MAX_DETAIL_CHARS
    assert detail == ("x" * (MAX_DETAIL_CHARS - 10) + " <file> " + "y" * 1000)[:MAX_DETAIL_CHARS]


def test_whitespace_runs_and_newlines_collapse_to_one_space():
    assert scrub_detail("line one\n\n  line\ttwo  ", "/data/a.png") == "line one line two"


def test_short_names_are_not_scrubbed_as_words_so_numbers_survive():
    detail = scrub_detail("expected 1 frame, got 12 in /data/scans/1.png", "/data/scans/1.png")
    assert detail == "expected 1 frame, got 12 in <file>"


def test_a_message_about_another_file_keeps_that_file():
    detail = scrub_detail("codec table /usr/lib/libjpeg.so.8 too old", "/data/P1/0001.jpg")
    assert detail == "codec table /usr/lib/libjpeg.so.8 too old"


def test_an_exception_detail_names_its_type_and_is_scrubbed(tmp_path):
    path = _patient_file(tmp_path)
    detail = exception_detail(OSError(f"[Errno 5] Input/output error: '{path.resolve()}'"), path)
    assert detail == "OSError: [Errno 5] Input/output error: '<file>'"
