"""Nothing silently wrong: content fingerprints, verification of what stages read, ids that
change with everything that changes an output, and `cxrkit.load` refusing what it cannot check.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
from clock_support import wait_for_a_later_ctime
from trust_support import cli, ingest_args, tiny_mapping

import cxrkit
from cxrkit import hashcache
from cxrkit.artifacts import MANIFEST, ArtifactWriter, open_artifact, verify
from cxrkit.artifacts.manifest import manifest_checksum
from cxrkit.errors import ArtifactError
from cxrkit.io.sources import fingerprint


def _rewrite_manifest(folder, edit) -> None:
    """Edit a manifest the way a careful tamperer would: keep it self-consistent."""
    path = folder / MANIFEST
    manifest = json.loads(path.read_text())
    edit(manifest)
    manifest["checksum"] = manifest_checksum(manifest)
    path.write_text(json.dumps(manifest))


# ---------------------------------------------------------------- content fingerprints
def test_hash_cache_hashes_an_unchanged_file_once(tmp_path, monkeypatch):
    monkeypatch.setattr(hashcache, "RACY_NS", 0)
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 1000)
    calls = []
    real = hashcache.hash_bytes_of
    monkeypatch.setattr(hashcache, "hash_bytes_of", lambda p: calls.append(p) or real(p))
    first = hashcache.sha256_file(path)
    assert hashcache.sha256_file(path) == first
    assert len(calls) == 1  # the second answer came from the cache
    wait_for_a_later_ctime(path)  # RACY_NS is 0 here: a touch in the same tick hides itself
    os.utime(path)  # touch: ctime moves, content does not
    assert hashcache.sha256_file(path) == first and len(calls) == 2


def test_new_content_with_the_same_size_and_mtime_is_rehashed(tmp_path, monkeypatch):
    monkeypatch.setattr(hashcache, "RACY_NS", 0)
    path = tmp_path / "a.bin"
    path.write_bytes(b"A" * 64)
    before = os.stat(path)
    first = hashcache.sha256_file(path)
    wait_for_a_later_ctime(path)  # RACY_NS is 0 here: a rewrite in the same tick hides itself
    path.write_bytes(b"B" * 64)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # hide the write
    assert os.stat(path).st_size == before.st_size
    assert os.stat(path).st_mtime_ns == before.st_mtime_ns
    assert hashcache.sha256_file(path) != first  # ctime moved, so the cache was not trusted


def test_a_racy_file_is_not_remembered(tmp_path):
    path = tmp_path / "fresh.bin"
    path.write_bytes(b"just written")
    hashcache.sha256_file(path)
    assert hashcache.lookup(os.stat(path)) is None  # ctime within RACY_NS of now


def test_fingerprint_ignores_touch_and_sees_hidden_rewrites(tmp_path):
    path = tmp_path / "img.png"
    path.write_bytes(b"\x00" * 100)
    base = fingerprint([path])
    os.utime(path, ns=(1, 1))
    assert fingerprint([path]) == base
    path.write_bytes(b"\x01" * 100)
    os.utime(path, ns=(1, 1))
    assert fingerprint([path]) != base


def test_touching_an_input_keeps_the_ingest_up_to_date(tmp_path, salt_file):
    mapping = tiny_mapping(tmp_path / "in")
    out = tmp_path / "ds"
    assert cli(*ingest_args(mapping, out, salt_file)).exit_code == 0
    built = json.loads((out / MANIFEST).read_text())["created"]
    for image in (tmp_path / "in").glob("*.jpeg"):
        image.touch()
    again = cli(*ingest_args(mapping, out, salt_file))
    assert again.exit_code == 0, again.output
    assert "up to date" in again.output
    assert json.loads((out / MANIFEST).read_text())["created"] == built


def test_changed_input_with_same_size_and_mtime_is_not_up_to_date(tmp_path, salt_file):
    mapping = tiny_mapping(tmp_path / "in")
    out = tmp_path / "ds"
    assert cli(*ingest_args(mapping, out, salt_file)).exit_code == 0
    image = tmp_path / "in" / "img0.jpeg"
    stat = image.stat()
    data = bytearray(image.read_bytes())
    data[-3] ^= 0xFF  # inside the JPEG's last scan bytes: same size
    image.write_bytes(bytes(data))
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = cli(*ingest_args(mapping, out, salt_file))
    assert again.exit_code == ArtifactError.exit_code
    assert "holds a different dataset artifact" in again.output
    assert "up to date" not in again.output


# ---------------------------------------------------------------- verify
def _pairs(tmp_path, files: dict[str, bytes]):
    writer = ArtifactWriter(tmp_path / "art", "pairs", {"a": 1})
    work = writer.begin()
    for name, data in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes(data)
    return writer.publish(stats={"rows": len(files)})


def test_a_file_removed_together_with_its_entry_fails_verify(demo_dataset, tmp_path):
    copy = tmp_path / "ds"
    shutil.copytree(demo_dataset, copy)
    (copy / "rejects.parquet").unlink()
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["files"] = [f for f in manifest["files"] if f["path"] != "rejects.parquet"]
    (copy / MANIFEST).write_text(json.dumps(manifest))
    problems = verify(copy)
    assert any("checksum mismatch" in p for p in problems)
    assert any("needs rejects.parquet" in p for p in problems)


def test_stats_that_disagree_with_the_files_fail_verify_even_with_a_fresh_checksum(
    demo_dataset, tmp_path
):
    copy = tmp_path / "ds"
    shutil.copytree(demo_dataset, copy)
    _rewrite_manifest(copy, lambda m: m["stats"].update(rows=m["stats"]["rows"] + 1))
    problems = verify(copy)
    assert any("stats promise" in p and "rows" in p for p in problems), problems


def test_manifest_paths_outside_the_artifact_are_refused(tmp_path):
    art = _pairs(tmp_path, {"data.bin": b"x"})
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    _rewrite_manifest(
        art.path,
        lambda m: m["files"].append({"path": "../secret.txt", "bytes": 9, "sha256": "0" * 64}),
    )
    problems = verify(art.path)
    assert any("outside the artifact" in p for p in problems)
    (art.path / "link").symlink_to(secret)
    _rewrite_manifest(
        art.path, lambda m: m["files"].append({"path": "link", "bytes": 9, "sha256": "0" * 64})
    )
    assert any("resolves outside" in p for p in verify(art.path))
    with pytest.raises(ArtifactError, match="outside"):
        open_artifact(art.path, verify_files=False).files()


def test_pretrain_refuses_a_shard_rewritten_behind_the_manifest(demo_dataset, tmp_path):
    copy = tmp_path / "ds"
    shutil.copytree(demo_dataset, copy)
    shard = next(copy.glob("shard-*.parquet"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, one bit
    shard.write_bytes(bytes(data))
    result = cli("pretrain", copy, "--out", tmp_path / "ck", "--preset", "demo-mae")
    assert result.exit_code == ArtifactError.exit_code
    assert "sha256 mismatch" in result.output and shard.name in result.output
    assert not (tmp_path / "ck").exists()


# ---------------------------------------------------------------- cxrkit.load
@pytest.fixture(scope="module")
def checkpoint(demo_dataset, tmp_path_factory):
    from cxrkit.config import resolve
    from cxrkit.stages import pretrain

    out = tmp_path_factory.mktemp("trust-ck") / "ck"
    sets = ["model.depth=1", "objective.decoder_depth=1", "objective.decoder_dim=32"]
    sets += ["data.batch_size=4", "train.max_steps=2", "data.num_workers=0"]
    flags = {"data.dataset": str(demo_dataset), "out": str(out)}
    cfg = resolve(pretrain.PretrainConfig, preset="demo-mae", flags=flags, sets=sets)
    return pretrain.run(cfg)


def test_load_refuses_a_checkpoint_with_one_flipped_byte(checkpoint, tmp_path):
    copy = tmp_path / "ck"
    shutil.copytree(checkpoint.path, copy)
    assert cxrkit.load(copy) is not None
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        cxrkit.load(copy)


def test_load_refuses_an_export_without_its_manifest_or_a_bare_encoder_folder(checkpoint, tmp_path):
    from cxrkit.stages.export import ExportConfig, run

    export = run(
        ExportConfig(checkpoint=str(checkpoint.path), out=str(tmp_path / "ex"), formats=["timm"])
    )
    assert cxrkit.load(export.path) is not None
    bare = tmp_path / "bare"
    shutil.copytree(export.path / "image_encoder", bare)
    with pytest.raises(ArtifactError, match="no manifest.json"):
        cxrkit.load(bare)
    (export.path / MANIFEST).unlink()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        cxrkit.load(export.path)
    with pytest.raises(ArtifactError, match="no manifest.json"):
        cxrkit.load(export.path / "image_encoder")
    assert cxrkit.load(bare, verify=False) is not None  # explicitly unverified


# ---------------------------------------------------------------- ids
def test_pretrain_id_changes_with_the_number_of_processes_and_precision():
    from cxrkit.stages.pretrain import PretrainConfig, id_params

    cfg = PretrainConfig()
    one = id_params(cfg, processes=1, precision="no")
    assert one != id_params(cfg, processes=2, precision="no")
    assert one != id_params(cfg, processes=1, precision="bf16")
    assert id_params(cfg, 2, "no")["launch"]["global_batch"] == 2 * cfg.data.batch_size


def test_eval_feature_cache_is_keyed_by_the_weights_content(checkpoint, tmp_path):
    import torch

    from cxrkit.evaluate.encoders import load_checkpoint_model

    key = load_checkpoint_model(checkpoint.path, torch.device("cpu")).key
    digest = {f["path"]: f["sha256"] for f in checkpoint.manifest["files"]}["model.safetensors"]
    assert digest in key and checkpoint.id not in key


def test_every_test_the_readme_guarantees_cite_exists():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    section = readme.split("## Guarantees", 1)[1].split("\n## ", 1)[0]
    cited = set(re.findall(r"`(test_\w+)`", section))
    defined = {
        name
        for path in (root / "tests").glob("test_*.py")
        for name in re.findall(r"^def (test_\w+)", path.read_text(), re.MULTILINE)
    }
    assert cited and cited <= defined, sorted(cited - defined)


def test_cxrkit_verify_reads_every_byte_even_when_the_cache_says_unchanged(tmp_path):
    art = _pairs(tmp_path, {"data.bin": b"good bytes"})
    data = art.path / "data.bin"
    data.write_bytes(b"rotten byt")  # same size
    recorded = art.manifest["files"][0]["sha256"]
    hashcache.remember(os.stat(data), recorded)  # as if the disk flipped bytes under the cache
    assert verify(art.path) == []  # stages trust the (inode, size, mtime, ctime) cache...
    result = cli("verify", art.path)  # ...the explicit check does not
    assert result.exit_code == ArtifactError.exit_code
    assert "sha256 mismatch" in result.output


def test_a_publish_killed_between_its_renames_leaves_nothing_behind(tmp_path):
    stale = tmp_path / "art.old-999999999"  # a killed publish moved the old artifact here
    stale.mkdir()
    (stale / "manifest.json").write_text("{}")
    _pairs(tmp_path, {"data.bin": b"x"})
    assert not stale.exists()


def test_export_onto_a_full_disk_exits_3_and_publishes_nothing(checkpoint, mount_tmpfs):
    disk = mount_tmpfs("16k")
    result = cli("export", checkpoint.path, "--out", disk / "ex", "--format", "timm")
    assert result.exit_code == 3, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "No space left on device" in lines[0]
    assert not (disk / "ex").exists()


def test_pretrain_and_eval_ids_hold_the_views_a_filter_keeps_not_its_spelling():
    """`--views pa` re-runs `--views PA` as a no-op; `frontal` is its codes; a filter
    that keeps other images is another id."""
    from cxrkit.io.layouts import FRONTAL_VIEWS
    from cxrkit.stages.eval import EvalConfig
    from cxrkit.stages.eval import _params as eval_params
    from cxrkit.stages.pretrain import PretrainConfig, id_params

    def pretrain_id(views):
        cfg = PretrainConfig()
        cfg.data.views = views
        return id_params(cfg, 1, "no")

    assert pretrain_id(["pa", " AP"]) == pretrain_id(["AP", "PA"])
    assert pretrain_id(["frontal"]) == pretrain_id(sorted(FRONTAL_VIEWS))
    assert pretrain_id(["PA"]) != pretrain_id(["PA", "AP"]) != pretrain_id([])
    assert eval_params(EvalConfig(views=["frontal"])) == eval_params(
        EvalConfig(views=[v.lower() for v in FRONTAL_VIEWS])
    )
    assert eval_params(EvalConfig(views=["PA"])) != eval_params(EvalConfig(views=[]))
