"""The artifact contract: ids, atomic publish, skip/force, verify, lineage, format checks."""

from __future__ import annotations

import json
import os

import pytest

from cxrkit.artifacts import MANIFEST, ArtifactWriter, lineage, open_artifact, verify
from cxrkit.artifacts.manifest import FORMAT, compute_id
from cxrkit.errors import ArtifactError


def _build(out, params=None, inputs=None, force=False, payload=b"hello"):
    # "pairs": a kind without required files, so the payload can be any file
    writer = ArtifactWriter(out, "pairs", params or {"a": 1}, inputs=inputs or [], force=force)
    if (done := writer.up_to_date()) is not None:
        return done, False
    work = writer.begin()
    (work / "data.bin").write_bytes(payload)
    return writer.publish(stats={"rows": 1}), True


def test_id_depends_on_kind_params_and_inputs_only():
    base = compute_id("dataset", 1, {"a": 1, "b": [1, 2]}, ["x"])
    assert base == compute_id("dataset", 1, {"b": [1, 2], "a": 1}, ["x"])  # key order irrelevant
    assert base != compute_id("annotations", 1, {"a": 1, "b": [1, 2]}, ["x"])
    assert base != compute_id("dataset", 2, {"a": 1, "b": [1, 2]}, ["x"])
    assert base != compute_id("dataset", 1, {"a": 2, "b": [1, 2]}, ["x"])
    assert base != compute_id("dataset", 1, {"a": 1, "b": [1, 2]}, ["y"])


def test_publish_writes_manifest_with_file_hashes(tmp_path):
    art, built = _build(tmp_path / "ds")
    assert built
    manifest = json.loads((tmp_path / "ds" / MANIFEST).read_text())
    assert manifest["format"] == FORMAT
    assert manifest["files"] == [
        {
            "path": "data.bin",
            "bytes": 5,
            "sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        }
    ]
    assert art.stats == {"rows": 1}
    assert not list(tmp_path.glob("ds.tmp-*"))


def test_same_id_and_intact_output_is_a_noop(tmp_path):
    _build(tmp_path / "ds")
    _, built = _build(tmp_path / "ds")
    assert not built


def test_force_rebuilds(tmp_path):
    _build(tmp_path / "ds")
    _, built = _build(tmp_path / "ds", force=True, payload=b"other")
    assert built
    assert (tmp_path / "ds" / "data.bin").read_bytes() == b"other"


def test_different_artifact_in_out_is_refused_without_force(tmp_path):
    _build(tmp_path / "ds", params={"a": 1})
    with pytest.raises(ArtifactError, match="use --force"):
        _build(tmp_path / "ds", params={"a": 2})


def test_crash_before_publish_leaves_no_complete_looking_dir(tmp_path):
    writer = ArtifactWriter(tmp_path / "ds", "dataset", {"a": 1})
    work = writer.begin()
    (work / "data.bin").write_bytes(b"partial")
    assert not (tmp_path / "ds").exists()
    with pytest.raises(ArtifactError, match="unfinished build"):
        open_artifact(tmp_path / "ds")


def test_temp_dir_of_a_dead_run_is_adopted(tmp_path):
    writer = ArtifactWriter(tmp_path / "ds", "dataset", {"a": 1})
    work = writer.begin()
    (work / "part-0").write_bytes(b"done")
    dead = tmp_path / "ds.tmp-999999999"  # a pid that cannot be alive
    work.rename(dead)
    marker = dead / ".cxrkit-partial.json"
    marker.write_text(json.dumps({"id": writer.id, "pid": 999999999}))
    again = ArtifactWriter(tmp_path / "ds", "dataset", {"a": 1}).begin()
    assert (again / "part-0").read_bytes() == b"done"
    assert again.name == f"ds.tmp-{os.getpid()}"


def test_verify_detects_changed_missing_and_extra_files(tmp_path):
    _build(tmp_path / "ds")
    assert verify(tmp_path / "ds") == []
    data = tmp_path / "ds" / "data.bin"
    data.write_bytes(b"hellO")
    assert any("changed file data.bin" in p for p in verify(tmp_path / "ds"))
    data.unlink()
    assert any("missing file data.bin" in p for p in verify(tmp_path / "ds"))
    (tmp_path / "ds" / "stray.txt").write_text("x")
    assert any("extra file stray.txt" in p for p in verify(tmp_path / "ds"))


def test_verify_detects_an_edited_manifest(tmp_path):
    _build(tmp_path / "ds")
    path = tmp_path / "ds" / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["params"]["a"] = 99
    path.write_text(json.dumps(manifest))
    assert any("manifest id" in p for p in verify(tmp_path / "ds"))


def test_unknown_major_format_is_refused(tmp_path):
    _build(tmp_path / "ds")
    path = tmp_path / "ds" / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["format"] = "cxrkit-artifact/2"
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="not readable"):
        open_artifact(tmp_path / "ds")


def test_wrong_kind_is_refused(tmp_path):
    _build(tmp_path / "ds")
    with pytest.raises(ArtifactError, match="expected a checkpoint"):
        open_artifact(tmp_path / "ds", kind="checkpoint")


def test_lineage_walks_back_to_raw_inputs(tmp_path):
    raw = {"kind": "raw", "id": "f" * 64, "path": "/data/images"}
    ds, _ = _build(tmp_path / "ds", inputs=[raw])
    writer = ArtifactWriter(tmp_path / "ann", "annotations", {"b": 1}, inputs=[ds])
    writer.begin()
    writer.publish()
    rows = lineage(tmp_path / "ann")
    assert [(r["depth"], r["kind"]) for r in rows] == [
        (0, "annotations"),
        (1, "pairs"),
        (2, "raw"),
    ]
    assert rows[2]["id"] == "f" * 64


def test_lineage_follows_inputs_moved_together_with_the_artifact(tmp_path):
    """A runs folder copied to another node: recorded absolute paths point nowhere, the
    path relative to the artifact still finds each input (and only one with its id)."""
    import shutil

    first, _ = _build(tmp_path / "node1" / "runs" / "pairs")
    second, _ = _build(tmp_path / "node1" / "runs" / "derived", params={"b": 2}, inputs=[first])
    assert second.manifest["inputs"][0]["relative"] == "pairs"
    shutil.move(tmp_path / "node1" / "runs", tmp_path / "node2")
    rows = lineage(tmp_path / "node2" / "derived")
    assert [(r["kind"], r["path"], r["found"]) for r in rows] == [
        ("pairs", str(tmp_path / "node2" / "derived"), True),
        ("pairs", str(tmp_path / "node2" / "pairs"), True),
    ]
    shutil.rmtree(tmp_path / "node2" / "pairs")
    _build(tmp_path / "node2" / "pairs", params={"other": 1})  # another artifact there
    assert lineage(tmp_path / "node2" / "derived")[1]["found"] is False
