"""`cxrkit export` when things go wrong: kills, odd --out targets, paths that must not travel.

Each test builds on one real checkpoint (3 pediatric JPEGs, 2 MAE steps of a tiny ViT).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from test_export_helpers import ingest_real_dataset, pretrain_real_checkpoint

from cxrkit.artifacts import verify
from cxrkit.artifacts.manifest import PARTIAL_MARKER
from cxrkit.artifacts.owners import owner
from cxrkit.export import native
from cxrkit.models.checkpoint import load_image_encoder
from cxrkit.stages.export import ExportConfig, run


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust-export")
    dataset = ingest_real_dataset(root / "dataset", root)
    return pretrain_real_checkpoint(root / "ckpt", dataset)


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@torch.no_grad()
def _same_features(export_dir: Path, checkpoint) -> bool:
    images = native.normalise(native.probe_images(64), {"mean": 0.5, "std": 0.5})
    exported, _ = native.load_exported_encoder(export_dir)
    reference, _ = load_image_encoder(checkpoint.path)
    return native.max_abs_diff(exported(images), reference(images)) == 0.0


def test_an_export_killed_between_weights_and_config_is_rebuilt_not_adopted(checkpoint, tmp_path):
    """A kill after image_encoder/model.safetensors (half written) and before its config.json
    leaves a temp dir; the next run must build a whole export, not adopt the pieces."""
    first = run(
        ExportConfig(checkpoint=str(checkpoint.path), out=str(tmp_path / "a"), formats=["timm"])
    )
    out = tmp_path / "b"
    leftover = tmp_path / "b.tmp-99"
    (leftover / "image_encoder").mkdir(parents=True)
    weights = (first.path / "image_encoder" / "model.safetensors").read_bytes()
    (leftover / "image_encoder" / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    marker = {"id": first.id, "kind": "export", **owner(), "pid": _dead_pid()}
    (leftover / PARTIAL_MARKER).write_text(json.dumps(marker))

    export = run(ExportConfig(checkpoint=str(checkpoint.path), out=str(out), formats=["timm"]))

    assert export.id == first.id
    assert verify(out) == []
    assert _same_features(out, checkpoint)
    assert not list(tmp_path.glob("b.tmp-*"))


def test_force_onto_the_checkpoint_being_exported_is_refused_and_keeps_it(checkpoint, tmp_path):
    """`cxrkit export ckpt --out ckpt --force` replaced the trained checkpoint by its export."""
    import shutil

    from cxrkit.errors import OutputError

    copy = tmp_path / "runs" / "ckpt"
    shutil.copytree(checkpoint.path, copy)
    for out in (copy, copy.parent, copy / "export"):
        with pytest.raises(OutputError):
            run(ExportConfig(checkpoint=str(copy), out=str(out), formats=["timm"]), force=True)
    assert verify(copy) == []
    assert json.loads((copy / "manifest.json").read_text())["kind"] == "checkpoint"


def test_no_run_path_reaches_the_card_or_metadata_when_typed_relative_or_with_spaces(
    checkpoint, tmp_path, monkeypatch
):
    """Run folders named after a patient (spaces, quotes, brackets), typed as relative paths:
    eval's metrics name the checkpoint and prompts by those paths; none may travel."""
    import shutil

    from cxrkit.artifacts import ArtifactWriter

    monkeypatch.chdir(tmp_path)
    runs = Path("runs") / "DOE JOHN MRN1234567's [x]"
    ckpt = runs / "ckpt"
    shutil.copytree(checkpoint.path, ckpt)
    (runs / "ann").mkdir()
    params = {"checkpoint": str(ckpt), "annotations": str(runs / "ann"), "tasks": ["probe"]}
    writer = ArtifactWriter(
        runs / "eval",
        "eval",
        params,
        inputs=[checkpoint.__class__(path=ckpt, manifest=checkpoint.manifest)],
    )
    work = writer.begin()
    metrics = {  # the strings `cxrkit eval` writes, for a checkpoint given as a relative path
        "model": f"checkpoint {ckpt} (objective mae)",
        "prompts_source": f"annotations {runs / 'ann' / 'prompts.json'}",
        "tasks": {},
        "warnings": [f"labels read from {(tmp_path / runs / 'ann').resolve()}/labels.csv"],
    }
    (work / "metrics.json").write_text(json.dumps(metrics))
    writer.publish()

    run(
        ExportConfig(
            checkpoint=str(ckpt),
            out=str(runs / "export"),
            eval=str(runs / "eval"),
            formats=["safetensors"],
        )
    )
    for path in (runs / "export").rglob("*"):
        if path.is_file() and path.name != "manifest.json":  # the manifest keeps its inputs
            assert "MRN1234567" not in path.read_text(errors="replace"), path
    meta = json.loads((runs / "export" / "metadata.json").read_text())
    assert meta["eval"]["metrics"]["model"] == "checkpoint ckpt (objective mae)"
    assert meta["eval"]["metrics"]["prompts_source"] == "annotations ann/prompts.json"


@pytest.mark.parametrize("which", ["out", "checkpoint"])
def test_a_path_that_is_not_utf8_is_a_clear_input_error(checkpoint, tmp_path, which):
    """safetensors, timm and open_clip open files by UTF-8 paths only: an --out or checkpoint
    named in another locale (byte 0xff) ended in a traceback or a 'corrupt file' message."""
    import os
    import shutil

    from cxrkit.errors import InputError

    odd = os.fsdecode(os.fsencode(str(tmp_path)) + b"/run\xff")
    source = str(checkpoint.path)
    if which == "checkpoint":
        shutil.copytree(checkpoint.path, odd)
        source = odd
    out = odd + "-export" if which == "checkpoint" else odd
    with pytest.raises(InputError, match="UTF-8"):
        run(ExportConfig(checkpoint=source, out=out, formats=["timm"]))
    assert not Path(out).exists()
    assert not list(tmp_path.glob("*.tmp-*"))


def test_an_export_where_no_requested_format_applies_exits_2_and_publishes_nothing(
    checkpoint, tmp_path
):
    """`--format open_clip` of an image-only MAE published an "export" without any weights
    and exit 0; like eval with no task that can run, it is a usage error with the reason."""
    from cxrkit.errors import ConfigError

    out = tmp_path / "oc-only"
    with pytest.raises(ConfigError, match="image-only"):
        run(ExportConfig(checkpoint=str(checkpoint.path), out=str(out), formats=["open_clip"]))
    assert not out.exists()
    assert not list(tmp_path.glob("oc-only.tmp-*"))


@pytest.mark.parametrize("opset", [13, 99])
def test_an_onnx_opset_the_exporter_cannot_use_is_a_usage_error(checkpoint, tmp_path, opset):
    """`--set onnx_opset=13` (older runtimes) ended in a torch traceback and a temp dir left
    behind: the ViT's attention needs opset >= 14, and 99 does not exist."""
    from cxrkit.errors import ConfigError

    out = tmp_path / "onnx-export"
    with pytest.raises(ConfigError, match="onnx_opset"):
        run(
            ExportConfig(
                checkpoint=str(checkpoint.path), out=str(out), formats=["onnx"], onnx_opset=opset
            )
        )
    assert not out.exists()
    assert not list(tmp_path.glob("onnx-export.tmp-*"))
