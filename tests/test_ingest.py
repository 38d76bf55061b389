"""`cxrkit ingest` end to end on real data: accounting, PHI, resume, partitions, CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from cxrkit.artifacts import open_artifact, verify
from cxrkit.artifacts.owners import pid_alive
from cxrkit.errors import CxrkitError
from cxrkit.io.dataset import dataset_shards
from cxrkit.stages.ingest import IngestConfig, merge, run


def _rows(path) -> list[dict]:
    art = open_artifact(path, kind="dataset")
    return [r for f in dataset_shards(art, allow_empty=True) for r in pq.read_table(f).to_pylist()]


def _rejects(path) -> list[dict]:
    return pq.read_table(Path(path) / "rejects.parquet").to_pylist()


def _shard_hashes(path) -> list[str]:
    return [
        hashlib.sha256(p.read_bytes()).hexdigest()
        for p in dataset_shards(open_artifact(path), allow_empty=True)
    ]


# ---------------------------------------------------------------- accounting on real inputs
def test_every_input_is_a_row_or_a_reject(demo_dataset):
    art = open_artifact(demo_dataset, kind="dataset")
    assert art.stats["rows"] + art.stats["rejects"] == art.stats["inputs"] == 21
    assert art.stats["rows"] == 17  # 16 pediatric JPEGs + the adult DICOM once


def test_bad_inputs_are_rejected_with_their_reason(demo_dataset):
    reasons = sorted(r["reason"] for r in _rejects(demo_dataset))
    assert reasons == ["corrupt_pixels", "duplicate", "not_chest_xray", "not_dicom"]


def test_rows_keep_size_view_and_labels(demo_dataset):
    rows = _rows(demo_dataset)
    adult = [r for r in rows if r["source_format"] == "dicom"]
    assert len(adult) == 1
    assert (adult[0]["orig_height"], adult[0]["orig_width"]) == (1955, 1841)
    assert max(adult[0]["height"], adult[0]["width"]) == 64
    pediatric = [r for r in rows if r["source_format"] == "jpeg"]
    assert sorted(json.loads(r["labels"])["Pneumonia"] for r in pediatric) == [0.0] * 8 + [1.0] * 8
    assert {r["split"] for r in pediatric} == {"train", "test"}
    for row in rows:
        pixels = np.frombuffer(row["pixels"], dtype=row["dtype"])
        assert pixels.size == row["height"] * row["width"]
        assert row["report_text"]


def test_pixels_are_stored_bright_bone(demo_dataset):
    adult = next(r for r in _rows(demo_dataset) if r["source_format"] == "dicom")
    image = np.frombuffer(adult["pixels"], np.uint8).reshape(adult["height"], adult["width"])
    h, w = image.shape
    # Mid-thorax: lungs (left/right thirds) are darker than the mediastinum (centre).
    lungs = np.r_[
        image[h // 3 : h // 2, w // 6 : w // 3].ravel(),
        image[h // 3 : h // 2, 2 * w // 3 : 5 * w // 6].ravel(),
    ]
    mediastinum = image[h // 3 : h // 2, 9 * w // 20 : 11 * w // 20]
    assert lungs.mean() < mediastinum.mean()


def test_rerun_is_a_noop_with_the_same_id(demo_dataset, demo_inputs, salt_file):
    before = open_artifact(demo_dataset).manifest
    again = run(
        IngestConfig(
            mapping=str(demo_inputs), out=str(demo_dataset), image_size=64, salt_file=str(salt_file)
        )
    )
    assert again.manifest["created"] == before["created"]
    assert again.id == before["id"]


def test_verify_fails_after_one_shard_byte_changes(demo_dataset, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(demo_dataset, copy)
    assert verify(copy) == []
    shard = dataset_shards(open_artifact(copy), allow_empty=True)[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert any("changed file shard-00000.parquet" in p for p in verify(copy))


# ---------------------------------------------------------------- PHI
PHI = {
    "PatientName": "Zebulon^Quixotic",
    "PatientID": "MRN-PLANTED-48151623",
    "OtherPatientIDs": "OTHERID-PLANTED-777",
    "ReferringPhysicianName": "Dr^Plantedreferrer",
    "InstitutionName": "Planted Memorial Hospital",
    "AccessionNumber": "ACC-PLANTED-991",
    "PatientBirthDate": "19421113",
}
PRIVATE_VALUE = "PRIVATE-PLANTED-SECRET"


def _phi_dicom(tmp_path) -> Path:
    import pydicom

    from cxrkit.io.bundled import rg1_dicoms

    ds = pydicom.dcmread(rg1_dicoms()["RG1_UNCR"])
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    ds.StudyDate = "20200115"
    block = ds.private_block(0x0011, "PLANTED CREATOR", create=True)
    block.add_new(0x01, "LO", PRIVATE_VALUE)
    path = tmp_path / "phi" / "image.dcm"
    path.parent.mkdir()
    ds.save_as(path)
    return path


def _all_strings(path: Path) -> str:
    """Every byte of every file, plus every decoded Parquet value, as one searchable text."""
    chunks = []
    for file in sorted(path.rglob("*")):
        if file.is_file():
            chunks.append(file.read_bytes().decode("latin-1"))
            if file.suffix == ".parquet":
                chunks.append(
                    json.dumps(
                        pq.read_table(file)
                        .drop_columns([c for c in ("pixels",) if c in pq.read_schema(file).names])
                        .to_pylist(),
                        default=str,
                    )
                )
    return "\n".join(chunks)


def test_planted_phi_leaves_no_trace(tmp_path, salt_file):
    dicom = _phi_dicom(tmp_path)
    out = tmp_path / "ds"
    run(
        IngestConfig(
            sources=[str(dicom.parent)], out=str(out), image_size=32, salt_file=str(salt_file)
        )
    )
    text = _all_strings(out).lower()
    for value in [*PHI.values(), PRIVATE_VALUE, str(dicom), "zebulon", "quixotic", "2020-01-15"]:
        assert value.lower() not in text, value
    row = _rows(out)[0]
    assert row["study_date"] is not None and row["study_date"] != "2020-01-15"
    assert row["view"] == "PA"


def _patient_folders(tmp_path) -> Path:
    """A site folder: two PNG-signed files Pillow cannot read, in folders named for
    patients (one with a backslash, one Latin-1 so not UTF-8), and one real JPEG."""
    from cxrkit.io.bundled import pediatric_jpegs

    source = tmp_path / "site"
    for folder in (b"SMITH\\JOHN_MRN456", b"M\xdcLLER_ANNA_MRN789"):
        bad = source / os.fsdecode(folder) / "0002.png"
        bad.parent.mkdir(parents=True)
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))  # a PNG signature, no image
    (source / "ok").mkdir()
    (source / "ok" / "ok.jpeg").write_bytes(pediatric_jpegs()[0].read_bytes())
    return source


def _ingest_patient_folders(tmp_path, salt_file) -> Path:
    out = tmp_path / "ds"
    run(IngestConfig(sources=[str(_patient_folders(tmp_path))], out=str(out),
                     salt_file=str(salt_file), image_size=32))  # fmt: skip
    return out


def test_folders_named_for_patients_stay_out_of_reject_details(tmp_path, salt_file):
    # Pillow quotes a file it cannot identify with %r: a backslash comes out doubled and
    # an undecodable byte as \\udcdc, so a scrubber that only looks for the path as
    # given leaves the folder in rejects.parquet.
    out = _ingest_patient_folders(tmp_path, salt_file)
    rejects = _rejects(out)
    assert [r["reason"] for r in rejects] == ["unsupported_format"] * 2
    for reject in rejects:
        assert reject["detail"] == (
            "not a PNG/JPEG image Pillow can read: cannot identify image file '<file>'"
        )
    text = _all_strings(out)
    for leak in ("MRN456", "MRN789", "LLER_ANNA", "SMITH"):
        assert leak not in text, leak


def test_the_local_rejects_listing_shows_a_non_utf8_path_with_escapes(tmp_path, salt_file):
    _ingest_patient_folders(tmp_path, salt_file)
    listing = (tmp_path / "ds.rejects-local.csv").read_text(encoding="utf-8")
    assert "M\\xdcLLER_ANNA_MRN789/0002.png" in listing
    assert "SMITH\\JOHN_MRN456/0002.png" in listing


def test_salt_is_never_written_into_the_artifact(demo_dataset, salt_file):
    assert salt_file.read_text().strip() not in _all_strings(demo_dataset)


# ---------------------------------------------------------------- resume, workers, partitions
@pytest.fixture(scope="module")
def many_images(tmp_path_factory):
    """24 distinct PNGs cut from the real pediatric JPEGs (distinct bytes, real content)."""
    from cxrkit.io.bundled import pediatric_jpegs

    folder = tmp_path_factory.mktemp("many")
    for i, path in enumerate(pediatric_jpegs()[:12]):
        image = Image.open(path).convert("L")
        image.thumbnail((160, 160))
        for j, crop in enumerate((0, 4)):
            w, h = image.size
            image.crop((crop, crop, w, h)).save(folder / f"img{i:02d}_{j}.png")
    return folder


def _cfg(source, out, salt_file, **kw) -> IngestConfig:
    return IngestConfig(
        sources=[str(source)],
        out=str(out),
        image_size=64,
        salt_file=str(salt_file),
        chunk_files=2,
        **kw,
    )


def test_workers_do_not_change_the_output(many_images, tmp_path, salt_file):
    one = run(_cfg(many_images, tmp_path / "w1", salt_file))
    two = run(_cfg(many_images, tmp_path / "w2", salt_file, workers=2))
    assert one.id == two.id
    assert _shard_hashes(tmp_path / "w1") == _shard_hashes(tmp_path / "w2")


def test_digests_hashed_while_planning_are_cached_before_the_workers_start(
    many_images, tmp_path, salt_file, monkeypatch
):
    """Planning hashes every input (the raw input id) and the decode workers hash each file
    again through the hash cache; digests still buffered in the main process are invisible
    to them, so up to a batch of files would be read and hashed twice."""
    import sqlite3

    from cxrkit import hashcache
    from cxrkit.stages import ingest

    hashcache.flush()
    monkeypatch.setenv("CXRKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hashcache, "RACY_NS", 0)  # the inputs count as old enough
    database = tmp_path / "cache" / "hashes.sqlite3"
    stored: set[int] = set()
    decode = ingest._crash_safe_map

    def workers_start(*args, **kwargs):
        if database.exists():
            with sqlite3.connect(database) as conn:
                stored.update(ino for (ino,) in conn.execute("SELECT ino FROM digests"))
        return decode(*args, **kwargs)

    monkeypatch.setattr(ingest, "_crash_safe_map", workers_start)
    run(_cfg(many_images, tmp_path / "out", salt_file))
    hashcache.flush()
    assert {p.stat().st_ino for p in many_images.glob("*.png")} <= stored


@pytest.fixture(scope="module")
def slow_images(tmp_path_factory):
    """8 PNGs then 4 JPEG 2000 DICOMs (~0.5 s each to decode): a run long enough to kill."""
    import pydicom
    from pydicom.uid import generate_uid

    from cxrkit.io.bundled import pediatric_jpegs, rg1_dicoms

    folder = tmp_path_factory.mktemp("slow")
    for i, path in enumerate(pediatric_jpegs()[:8]):
        image = Image.open(path).convert("L")
        image.thumbnail((160, 160))
        image.save(folder / f"a{i:02d}.png")
    for i in range(4):
        ds = pydicom.dcmread(rg1_dicoms()["RG1_J2KR"])
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[f"slow-{i}"])
        ds.save_as(folder / f"b{i:02d}.dcm")
    return folder


def _children(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_bytes().rpartition(b")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads Linux /proc")
def test_killed_ingest_resumes_to_the_same_artifact(slow_images, tmp_path, salt_file):
    reference = run(_cfg(slow_images, tmp_path / "ref", salt_file))
    out = tmp_path / "killed"
    code = (
        f"from cxrkit.stages.ingest import IngestConfig, run\n"
        f"run(IngestConfig(sources=[{str(slow_images)!r}], out={str(out)!r}, image_size=64,"
        f" salt_file={str(salt_file)!r}, chunk_files=2))\n"
    )
    # The killed run waits before writing chunk 3 (never released): the kill lands
    # mid-run whatever the speed of the machine, not only while decoding is slow.
    hook = tmp_path / "hold-hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import time\n"
        "from cxrkit.stages import ingest\n"
        "_write = ingest.write_chunk\n"
        "def _held(scratch, index, results):\n"
        "    if index == 3:\n"
        "        time.sleep(300)\n"
        "    return _write(scratch, index, results)\n"
        "ingest.write_chunk = _held\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(root)])}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = list(tmp_path.glob("killed.tmp-*/.work/chunk-00002.parquet"))
        if done:
            break
        time.sleep(0.05)
    workers = _children(proc.pid)  # the decode workers (and multiprocessing's tracker)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert done, "the ingest finished no chunk before the deadline"
    assert not out.exists()
    # Its decode workers do not outlive it (they held their memory, waiting forever).
    deadline = time.monotonic() + 60
    while running := [pid for pid in workers if pid_alive(pid)]:
        assert time.monotonic() < deadline, f"workers {running} outlived the killed ingest"
        time.sleep(0.05)
    resumed = run(_cfg(slow_images, out, salt_file))
    assert resumed.id == reference.id
    assert _shard_hashes(out) == _shard_hashes(tmp_path / "ref")


def test_partitions_merge_into_the_full_dataset(many_images, tmp_path, salt_file):
    full = {r["image_id"] for r in _rows(run(_cfg(many_images, tmp_path / "all", salt_file)).path)}
    parts = [
        run(_cfg(many_images, tmp_path / f"p{i}", salt_file, shard_index=i, num_shards=3)).path
        for i in range(3)
    ]
    sizes = [len(_rows(p)) for p in parts]
    assert sum(sizes) == len(full) and sum(1 for size in sizes if size) >= 2
    merged = merge(parts, tmp_path / "merged")
    assert {r["image_id"] for r in _rows(merged.path)} == full
    assert [ref["id"] for ref in merged.manifest["inputs"]] == [open_artifact(p).id for p in parts]


def test_merge_skips_the_listings_a_part_glob_also_matches(many_images, tmp_path, salt_file):
    # `cxrkit ingest-merge part-*` expands to part-0, part-0.rejects-local.csv, part-1, ...
    parts = [
        run(_cfg(many_images, tmp_path / f"part-{i}", salt_file, shard_index=i, num_shards=2)).path
        for i in range(2)
    ]
    listing = tmp_path / "part-0.rejects-local.csv"
    listing.write_text("path,reason\n")
    merged = merge([parts[0], listing, parts[1]], tmp_path / "merged")
    assert [ref["id"] for ref in merged.manifest["inputs"]] == [open_artifact(p).id for p in parts]
    stray = tmp_path / "other.rejects-local.csv"  # not the listing of a listed part: still an error
    stray.write_text("path,reason\n")
    with pytest.raises(CxrkitError):
        merge([*parts, stray], tmp_path / "merged2")


def test_merge_refuses_parts_of_two_ingest_configs_naming_the_setting(
    many_images, tmp_path, salt_file
):
    zero = run(_cfg(many_images, tmp_path / "part-0", salt_file, shard_index=0, num_shards=2))
    other = _cfg(many_images, tmp_path / "part-1", salt_file, shard_index=1, num_shards=2)
    one = run(dataclasses.replace(other, image_size=48))
    with pytest.raises(
        CxrkitError, match=r"part-1 differs from .*part-0 in image_size \(48 vs 64\)"
    ):
        merge([zero.path, one.path], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_slurm_array_variables_select_the_partition(monkeypatch):
    from cxrkit.io.sources import resolve_partition

    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    assert resolve_partition(None, None) == (2, 4)


def test_split_is_by_patient(many_images, tmp_path, salt_file):
    rows = _rows(
        run(_cfg(many_images, tmp_path / "s", salt_file, val_fraction=0.3, test_fraction=0.3)).path
    )
    by_patient = {}
    for row in rows:
        by_patient.setdefault(row["patient_id"], set()).add(row["split"])
    assert all(len(splits) == 1 for splits in by_patient.values())
    assert {s for splits in by_patient.values() for s in splits} == {"train", "val", "test"}


# ---------------------------------------------------------------- CLI
def test_cli_dry_run_prints_the_resolved_config(tmp_path):
    from cxrkit.cli import app

    result = CliRunner().invoke(
        app,
        [
            "ingest",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
            "--image-size",
            "256",
            "--set",
            "val_fraction=0.2",
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, result.output
    cfg = json.loads(result.stdout)
    assert (cfg["image_size"], cfg["val_fraction"], cfg["dtype"]) == (256, 0.2, "uint8")


def test_cli_missing_source_exits_with_the_input_code(tmp_path):
    from cxrkit.cli import app

    # its own salt: the default one is created in ~/.config before the sources are read
    args = ["ingest", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, [*args, "--salt-file", str(tmp_path / "salt.hex")])
    assert result.exit_code == 3
    assert "no such file or directory" in result.output


def test_cli_bad_setting_exits_with_the_usage_code(tmp_path):
    from cxrkit.cli import app

    result = CliRunner().invoke(
        app, ["ingest", str(tmp_path), "--out", str(tmp_path / "o"), "--set", "imag_size=3"]
    )
    assert result.exit_code == 2
    assert "did you mean 'image_size'" in result.output
