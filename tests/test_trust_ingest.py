"""Hostile inputs to `cxrkit ingest`: every input ends as a row or a reject with its reason,
headers cannot make ingest allocate what they claim, workers that die are reported, and no
raw input path reaches an artifact file unless asked for.
"""

from __future__ import annotations

import csv
import glob
import io
import os
import resource
import shutil
import struct
import tarfile
import zlib
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, RLELossless
from trust_support import ROOT, cli, cli_process, ingest_args, tiny_mapping

from cxrkit.errors import InputError, WorkerDied
from cxrkit.io import bundled
from cxrkit.io.deid import Pseudonymizer
from cxrkit.io.rows import RowBuilder
from cxrkit.io.scrub import scrub_text

SALT = b"\x00" * 32


def _rejects(out: Path) -> dict[str, str]:
    table = pq.read_table(out / "rejects.parquet").to_pylist()
    return {row["path"]: row["reason"] for row in table}


def _rows(out: Path) -> list[dict]:
    return [
        r for shard in sorted(out.glob("shard-*.parquet")) for r in pq.read_table(shard).to_pylist()
    ]


def _token(path: Path) -> str:
    return Pseudonymizer(SALT).path_token(str(path))


def _reject_of(path: Path, **settings) -> str:
    result = RowBuilder(salt=SALT, min_size=16, **settings).prepare()((str(path), None))
    assert "reject" in result, "expected a reject"
    return result["reject"]["reason"]


# ---------------------------------------------------------------- lying and hostile headers
def test_a_dicom_whose_header_lies_is_rejected_and_the_genuine_image_kept(tmp_path, salt_file):
    genuine = tmp_path / "in" / "genuine.dcm"
    genuine.parent.mkdir()
    shutil.copy(bundled.rg1_dicoms()["RG1_UNCR"], genuine)
    ds = pydicom.dcmread(genuine)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7  # 8 bits claimed over 16-bit data
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(tmp_path / "in" / "liar.dcm")
    out = tmp_path / "ds"
    result = cli("ingest", tmp_path / "in", "--out", out, "--salt-file", salt_file,
                 "--image-size", 64)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _rejects(out) == {_token(tmp_path / "in" / "liar.dcm"): "pixel_data_mismatch"}
    assert [r["source_path"] for r in _rows(out)] == [_token(genuine)]


def _rle_bomb(path: Path, side: int = 60000) -> None:
    """A ~2 kB RLE DICOM whose header claims side x side 16-bit pixels."""
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.BodyPartExamined = "DX", "CHEST"
    ds.Rows = ds.Columns = side
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    header = struct.pack("<16I", 2, 64, 64 + 900, *([0] * 13))
    segment = bytes([129, 0]) * 450  # runs of 128 zeros: a tiny file claiming much more
    ds.PixelData = pydicom.encaps.encapsulate([header + segment + segment])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)


def test_a_60000_square_rle_header_is_rejected_before_any_allocation(tmp_path):
    bomb = tmp_path / "bomb.dcm"
    _rle_bomb(bomb)
    assert bomb.stat().st_size < 4096
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert _reject_of(bomb) == "too_large"
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200  # the header claims 7.2 GB


def test_a_deflated_dicom_that_inflates_past_the_budget_is_rejected(tmp_path):
    ds = pydicom.dcmread(bundled.rg1_dicoms()["RG1_UNCR"])
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    bomb = tmp_path / "deflated.dcm"
    ds.save_as(bomb, enforce_file_format=True)
    assert bomb.stat().st_size < ds.Rows * ds.Columns * 2
    assert _reject_of(bomb, max_pixels=100_000) == "too_large"  # 800 kB budget, 7 MB inside
    row = RowBuilder(salt=SALT, min_size=16, image_size=32).prepare()((str(bomb), None))
    assert "row" in row  # within the default budget the same file is fine


def test_a_png_header_claiming_60000_square_is_rejected(tmp_path):
    from PIL import Image

    small = io.BytesIO()
    Image.new("L", (1, 1)).save(small, format="PNG")
    data = bytearray(small.getvalue())
    data[16:24] = struct.pack(">II", 60000, 60000)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bytes(data))
    assert _reject_of(bomb) == "too_large"


def test_a_400_mb_report_archive_member_is_an_input_error_not_an_allocation(tmp_path):
    from cxrkit.io.reports import iter_iu_reports

    archive = tmp_path / "reports.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("ecgen-radiology/1.xml")
        info.size = 400 << 20
        tar.fileobj.write(info.tobuf())  # a header claiming 400 MB, followed by no data
    with pytest.raises(InputError, match="419,430,400-byte member"):
        list(iter_iu_reports(archive))


# ---------------------------------------------------------------- every input row accounted for
def test_duplicate_mapping_rows_each_end_as_a_row_or_a_reject(tmp_path, salt_file):
    folder = tmp_path / "in"
    tiny_mapping(folder, count=3)
    mapping = folder / "dup.csv"
    (folder / "sub").mkdir()
    names = ["./img0.jpeg", "img0.jpeg", "img1.jpeg", "img2.jpeg", "sub/../img1.jpeg"]
    with open(mapping, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_path", "report_text"])
        writer.writerows([[name, "No acute disease."] for name in names])
    out = tmp_path / "ds"
    assert cli(*ingest_args(mapping, out, salt_file)).exit_code == 0
    rejects = list(_rejects(out).values())
    assert len(_rows(out)) == 3
    assert sorted(rejects) == ["duplicate_mapping_row", "duplicate_mapping_row"]


def test_report_file_problems_get_their_own_reason(tmp_path, salt_file):
    folder = tmp_path / "in"
    tiny_mapping(folder, count=4)
    (folder / "ok.txt").write_text("FINDINGS: Clear lungs.")
    os.mkfifo(folder / "fifo.txt")  # reading it would block the run
    (folder / "dir.txt").mkdir()
    mapping = folder / "reports.csv"
    rows = [("img0.jpeg", "ok.txt"), ("img1.jpeg", "gone.txt"), ("img2.jpeg", "fifo.txt"),
            ("img3.jpeg", "dir.txt")]  # fmt: skip
    with open(mapping, "w", newline="") as handle:
        csv.writer(handle).writerows([("image_path", "report_path"), *rows])
    out = tmp_path / "ds"
    result = cli(*ingest_args(mapping, out, salt_file))
    assert result.exit_code == 0, result.output
    assert sorted(_rejects(out).values()) == ["report_unreadable"] * 3
    assert [r["report_findings"] for r in _rows(out)] == ["Clear lungs."]


def test_links_loops_fifos_missing_and_non_utf8_names_are_rejects_not_tracebacks(
    tmp_path, salt_file
):
    folder = tmp_path / "in"
    tiny_mapping(folder, count=2)
    (folder / "mapping.csv").unlink()
    (folder / "loop-a.png").symlink_to(folder / "loop-b.png")
    (folder / "loop-b.png").symlink_to(folder / "loop-a.png")
    (folder / "broken.png").symlink_to(folder / "nowhere.png")
    os.mkfifo(folder / "pipe.png")
    odd = os.fsencode(folder) + b"/caf\xe9-latin1.jpeg"  # not valid UTF-8
    shutil.copyfile(folder / "img1.jpeg", odd)
    out = tmp_path / "ds"
    args = ["ingest", folder, "--out", out, "--salt-file", salt_file, "--image-size", 32]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    reasons = sorted(_rejects(out).values())
    assert reasons == ["duplicate", "missing_file", "not_a_file", "symlink_loop", "symlink_loop"]
    assert len(_rows(out)) == 2  # img0, img1 (the latin-1 copy is img1's duplicate)
    kept = cli(*args[:3], tmp_path / "kept", *args[4:], "--keep-paths")
    assert kept.exit_code == 0, kept.output
    stored = [*_rejects(tmp_path / "kept"), *(r["source_path"] for r in _rows(tmp_path / "kept"))]
    assert any("caf\\xe9-latin1.jpeg" in path for path in stored)


def test_missing_mapping_paths_are_missing_file_rejects(tmp_path, salt_file):
    mapping = tiny_mapping(tmp_path / "in", count=2)
    with open(mapping, "a", newline="") as handle:
        csv.writer(handle).writerow([str(tmp_path / "in" / "gone.jpeg"), "Clear."])
    out = tmp_path / "ds"
    assert cli(*ingest_args(mapping, out, salt_file)).exit_code == 0
    assert list(_rejects(out).values()) == ["missing_file"] and len(_rows(out)) == 2


# ---------------------------------------------------------------- worker pools
def test_a_bad_reports_source_with_two_workers_is_an_input_error(tmp_path, salt_file):
    mapping = tiny_mapping(tmp_path / "in", count=2)
    bad = tmp_path / "reports.tgz"
    bad.write_bytes(b"not a tar archive at all")
    result = cli(*ingest_args(mapping, tmp_path / "ds", salt_file), "--reports", bad,
                 "--workers", 2)  # fmt: skip
    assert result.exit_code == InputError.exit_code
    assert "Traceback" not in result.output and "BrokenProcessPool" not in result.output


@pytest.mark.parametrize("workers", [1, 2])
def test_a_killed_worker_is_reported_with_its_signal_and_finished_chunks_are_kept(
    tmp_path, salt_file, workers
):
    mapping = tiny_mapping(tmp_path / "in", count=4)
    victim = tmp_path / "in" / "img3.jpeg"
    hook = tmp_path / "hook"
    hook.mkdir()
    # Every Python process started with this on its path (the spawned workers too) kills
    # itself with SIGKILL, as the OOM killer would, when asked to decode the victim file,
    # once the first chunk is on disk: with 2 workers the other one may still be decoding
    # img0 when this one reaches img3, and then no chunk would be finished to keep.
    (hook / "sitecustomize.py").write_text(
        "import glob, os, signal, time\n"
        "from cxrkit.io import rows\n"
        "_call = rows.RowBuilder.__call__\n"
        "def _die(self, item):\n"
        "    first_chunk = os.environ.get('CXRKIT_TEST_KILL_AFTER')\n"
        "    if item[0].endswith('img3.jpeg') and first_chunk:\n"
        "        deadline = time.monotonic() + 120\n"
        "        while not glob.glob(first_chunk) and time.monotonic() < deadline:\n"
        "            time.sleep(0.01)\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return _call(self, item)\n"
        "rows.RowBuilder.__call__ = _die\n"
    )
    out = tmp_path / "ds"
    args = [*ingest_args(mapping, out, salt_file), "--workers", workers,
            "--set", "chunk_files=1"]  # fmt: skip
    first_chunk = f"{glob.escape(str(tmp_path))}/ds.tmp-*/.work/chunk-00000.parquet"
    env = {"PYTHONPATH": f"{hook}{os.pathsep}{ROOT}", "CXRKIT_TEST_KILL_AFTER": first_chunk}
    proc = cli_process(*args, env=env)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == WorkerDied.exit_code, stderr[-2000:]
    # Not a crash to pin on the file (SIGKILL is the OOM killer's): no isolation, no reject.
    assert "killed by SIGKILL" in stderr and "fewer --workers" in stderr
    assert "Traceback" not in stderr and "decoder_crashed" not in stderr
    kept = list(out.parent.glob("ds.tmp-*/.work/chunk-?????.parquet"))
    assert 1 <= len(kept) <= 3 and not out.exists()
    assert victim.is_file()
    proc = cli_process(*args)  # the same command without the killer resumes
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]
    assert f"resuming: {len(kept)} of 4 chunks already done" in stderr
    assert len(_rows(out)) == 4


def _crash_hook(folder: Path) -> Path:
    """A folder whose ``sitecustomize`` makes every Python process started with it on its
    path (the spawned workers too) die as a crashing native decoder does, when asked to
    decode a file named ``abort*`` (SIGABRT: a C++ exception that reached terminate) or
    ``segv*`` (SIGSEGV)."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(
        "import os, signal\n"
        "from cxrkit.io import rows\n"
        "_call = rows.RowBuilder.__call__\n"
        "def _crash(self, item):\n"
        "    name = os.path.basename(item[0])\n"
        "    if name.startswith('abort'):\n"
        "        os.abort()\n"
        "    if name.startswith('segv'):\n"
        "        os.kill(os.getpid(), signal.SIGSEGV)\n"
        "    return _call(self, item)\n"
        "rows.RowBuilder.__call__ = _crash\n"
    )
    return folder


@pytest.mark.parametrize(("workers", "crashers"), [
    (1, {"segv.jpeg": "SIGSEGV"}), (2, {"abort.jpeg": "SIGABRT", "segv.jpeg": "SIGSEGV"}),
])  # fmt: skip
def test_a_file_that_crashes_its_decoder_is_a_decoder_crashed_reject_and_the_run_goes_on(
    tmp_path, salt_file, workers, crashers
):
    mapping = tiny_mapping(tmp_path / "in", count=4)
    clean = tmp_path / "clean"  # the same four images, without the crashing files
    assert cli(*ingest_args(mapping, clean, salt_file)).exit_code == 0
    for crasher in crashers:
        shutil.copyfile(tmp_path / "in" / "img1.jpeg", tmp_path / "in" / crasher)
        with open(mapping, "a", newline="") as handle:
            csv.writer(handle).writerow([str(tmp_path / "in" / crasher), "Crash."])
    out = tmp_path / "ds"
    args = [*ingest_args(mapping, out, salt_file), "--workers", workers,
            "--set", "chunk_files=2"]  # fmt: skip
    env = {"PYTHONPATH": f"{_crash_hook(tmp_path / 'hook')}{os.pathsep}{ROOT}"}
    proc = cli_process(*args, env=env)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr
    rejects = {r["path"]: r for r in pq.read_table(out / "rejects.parquet").to_pylist()}
    assert {path: r["reason"] for path, r in rejects.items()} == {
        _token(tmp_path / "in" / crasher): "decoder_crashed" for crasher in crashers
    }
    for crasher, signal_name in crashers.items():
        detail = rejects[_token(tmp_path / "in" / crasher)]["detail"]
        assert signal_name in detail and str(tmp_path) not in detail
    # The files decoded again in isolation keep the rows a run without the crash gives.
    assert sorted(_rows(out), key=lambda r: r["source_sha256"]) == sorted(
        _rows(clean), key=lambda r: r["source_sha256"]
    )
    assert not list(tmp_path.glob("ds.tmp-*"))
    manifest = (out / "manifest.json").read_bytes()
    proc = cli_process(*args, env=env)  # a re-run is up to date: nothing decoded again
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]
    assert (out / "manifest.json").read_bytes() == manifest


def test_a_worker_that_crashes_before_it_is_given_a_file_rejects_no_file(tmp_path, salt_file):
    mapping = tiny_mapping(tmp_path / "in", count=2)
    hook = tmp_path / "hook"
    hook.mkdir()
    # Every worker aborts while it starts (in the pool initializer): no file is to blame.
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        "from cxrkit.stages import ingest\n"
        "def _abort_on_start(builder):\n"
        "    os.abort()\n"
        "ingest._install = _abort_on_start\n"
    )
    out = tmp_path / "ds"
    env = {"PYTHONPATH": f"{hook}{os.pathsep}{ROOT}"}
    proc = cli_process(*ingest_args(mapping, out, salt_file), "--workers", 2, env=env)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == WorkerDied.exit_code, stderr[-2000:]
    assert "killed by SIGABRT" in stderr, stderr[-2000:]
    assert "Traceback" not in stderr
    assert not out.exists()


def test_exit_codes_are_read_when_the_pool_reaps_the_worker_first():
    """The pool's manager thread and ``dead_exit_codes`` both wait for a dead worker;
    when the manager thread reaps it first, our join returns with no exit code yet
    (CI once read "cause unknown" for a worker killed by SIGABRT this way)."""
    import signal
    from types import SimpleNamespace

    from cxrkit.workers import dead_exit_codes, death_causes

    class ReapedElsewhere:
        """join() returns before the exit code is known, as after a lost waitpid race;
        the other thread sets it a few joins later."""

        def __init__(self, code):
            self.code, self.joins = code, 0

        def join(self, timeout=None):
            self.joins += 1

        @property
        def exitcode(self):
            return self.code if self.joins >= 3 else None

    pool = SimpleNamespace(_processes={1: ReapedElsewhere(-signal.SIGABRT)})
    codes = dead_exit_codes(pool)
    assert codes == [-signal.SIGABRT]
    assert death_causes(pool, codes) == "killed by SIGABRT"


# ---------------------------------------------------------------- PHI
def test_no_raw_input_path_in_any_artifact_file_unless_keep_paths(tmp_path, salt_file):
    phi = tmp_path / "SMITH_JOHN_MRN12345678"
    mapping = tiny_mapping(phi, count=2)
    out = tmp_path / "ds"
    assert cli(*ingest_args(mapping, out, salt_file)).exit_code == 0
    for file in out.rglob("*"):
        if file.is_file():
            assert b"SMITH_JOHN" not in file.read_bytes(), file.name
    kept = tmp_path / "kept"
    assert cli(*ingest_args(mapping, kept, salt_file), "--keep-paths").exit_code == 0
    assert b"SMITH_JOHN" in (kept / "manifest.json").read_bytes()


# ---------------------------------------------------------------- report scrubbing
def test_scrubber_replaces_names_phones_ids_and_dates_and_keeps_clinical_text():
    text = (
        "Findings discussed with Dr. Jane Smith at 3 pm on 03/14/2019, phone 617-555-0123. "
        "MRN: 12345678. Accession # 987654. Signed by John A. Doe. "
        "3 cm nodule, follow-up in 2 weeks. Compared to ___ and XXXX."
    )
    scrubbed = scrub_text(text)
    for leaked in ("Jane", "Smith", "617-555-0123", "12345678", "987654", "John", "03/14/2019"):
        assert leaked not in scrubbed
    for kept in ("3 cm nodule", "in 2 weeks", "Dr. [NAME]", "___", "XXXX", "[PHONE]", "[ID]"):
        assert kept in scrubbed


def test_ingest_scrubs_reports_only_when_asked(tmp_path, salt_file):
    folder = tmp_path / "in"
    mapping = tiny_mapping(folder, count=1)
    text = mapping.read_text().replace(
        "No acute disease.", "Called to Dr. Mary Jones 617-555-0199."
    )
    mapping.write_text(text)
    plain, scrubbed = tmp_path / "plain", tmp_path / "scrubbed"
    assert cli(*ingest_args(mapping, plain, salt_file)).exit_code == 0
    assert (
        cli(*ingest_args(mapping, scrubbed, salt_file), "--set", "scrub_reports=true").exit_code
        == 0
    )
    assert "Mary Jones" in _rows(plain)[0]["report_text"]
    stored = _rows(scrubbed)[0]["report_text"]
    assert "Mary" not in stored and "617-555-0199" not in stored and "[NAME]" in stored
