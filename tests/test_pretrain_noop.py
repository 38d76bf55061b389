"""A no-op re-run of `cxrkit pretrain` is decided without torch, and only when certain.

The run records the request that made OUT (``.OUT.requests.json``); the same
command finds it, checks its input artifacts and OUT, and stops before importing
torch, timm or accelerate. Anything else (another setting, another input, --force,
a damaged OUT, another code version, a launch whose precision only torch can tell)
goes down the full path, which decides as it always did.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cxrkit.artifacts import ArtifactWriter, open_artifact
from cxrkit.artifacts import requests as records
from cxrkit.artifacts.requests import Request, code_files, recall, record_path, remember
from cxrkit.stages.noop import pretrain_up_to_date
from cxrkit.train import config as train_config
from cxrkit.train.config import precision_without_torch

HEAVY = ("torch", "timm", "open_clip", "accelerate", "transformers")
PROBE = """
import json, sys
from typer.testing import CliRunner
from cxrkit.cli import app
result = CliRunner().invoke(app, json.loads(sys.argv[1]))
heavy = [m for m in json.loads(sys.argv[2]) if m in sys.modules]
print(json.dumps({"exit_code": result.exit_code, "heavy": heavy, "output": result.output}))
"""
SETS = ["model.depth=2", "objective.decoder_depth=1", "objective.decoder_dim=64",
        "data.batch_size=4", "data.num_workers=0", "train.max_steps=2",
        "train.checkpoint_every=2"]  # fmt: skip


def _args(dataset: Path, out: Path, *extra: str) -> list[str]:
    # fp32 rather than auto: the test means the same on a machine with a GPU
    sets = [a for s in SETS for a in ("--set", s)]
    return ["pretrain", str(dataset), "--out", str(out), "--preset", "demo-mae",
            "--precision", "fp32", *sets, *extra]  # fmt: skip


def _probe(args: list[str]) -> dict:
    """``cxrkit ARGS`` in a fresh interpreter: exit code, heavy modules imported, output."""
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(demo_dataset, tmp_path_factory):
    """A 2-step demo-mae checkpoint trained by the CLI in this process (torch loaded here)."""
    from cxrkit.cli import app

    out = tmp_path_factory.mktemp("noop") / "checkpoint"
    result = CliRunner().invoke(app, _args(demo_dataset, out))
    assert result.exit_code == 0, result.output
    return out


def test_a_finished_run_records_its_request_beside_out(trained, demo_dataset):
    record = json.loads(record_path(trained).read_text())
    (entry,) = record["entries"]
    assert entry["id"] == open_artifact(trained).id
    assert entry["inputs"] == [{"path": str(demo_dataset), "id": open_artifact(demo_dataset).id}]


def test_noop_rerun_imports_no_torch_timm_or_accelerate(trained, demo_dataset):
    before = (trained / "manifest.json").read_bytes()
    result = _probe(_args(demo_dataset, trained))
    assert result["exit_code"] == 0, result["output"]
    assert result["heavy"] == [], f"a no-op pretrain imported {result['heavy']}"
    assert "is up to date" in result["output"]
    assert (trained / "manifest.json").read_bytes() == before


def test_another_setting_takes_the_full_path_and_is_refused_as_before(trained, demo_dataset):
    result = _probe(_args(demo_dataset, trained, "--set", "train.seed=1"))
    assert result["exit_code"] == 4, result["output"]
    assert "holds a different checkpoint artifact" in result["output"]
    assert "torch" in result["heavy"]  # the check that makes the no-op test mean something


def test_force_takes_the_full_path(trained, demo_dataset, tmp_path):
    out = tmp_path / "checkpoint"
    shutil.copytree(trained, out)
    shutil.copy2(record_path(trained), record_path(out))
    result = _probe(_args(demo_dataset, out, "--force"))
    assert result["exit_code"] == 0, result["output"]
    assert "torch" in result["heavy"] and "is up to date" not in result["output"]
    assert open_artifact(out).id == open_artifact(trained).id  # rebuilt, the same run


def test_noop_rerun_of_a_text_objective_hashes_its_text_weights_without_torch(
    demo_dataset, tmp_path
):
    """The MiniLM folder a text tower reads counts by content in the id (and the record)."""
    from cxrkit.cli import app

    args = ["pretrain", str(demo_dataset), "--out", str(tmp_path / "m3ae"), "--preset",
            "demo-m3ae", "--max-steps", "1", "--precision", "fp32"]  # fmt: skip
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    (entry,) = json.loads(record_path(tmp_path / "m3ae").read_text())["entries"]
    assert [i.get("content") for i in entry["inputs"]] == [None, "objective.text.path"]
    again = _probe(args)
    assert again["exit_code"] == 0 and again["heavy"] == [], again


# ---------------------------------------------------------------- the record itself


@pytest.fixture
def published(tmp_path):
    """A tiny published artifact OUT made from one input artifact, and its request."""

    def make(name: str, value: int, inputs: list) -> ArtifactWriter:
        writer = ArtifactWriter(tmp_path / name, "pairs", {"n": value}, inputs)
        (writer.begin() / "data.txt").write_text(str(value))
        writer.publish()
        return writer

    source = open_artifact(make("source", 1, []).out)
    writer = make("out", 2, [source])
    request = Request.of("pretrain", {"out": str(writer.out), "train": {"seed": 0}})
    digest = request.digest(processes=1, precision="no")
    remember(writer.out, digest, writer.id, records.named_inputs([source]))
    return {"out": writer.out, "source": source.path, "digest": digest, "make": make}


def test_recall_finds_the_recorded_request(published):
    found = recall(published["out"], "pairs", published["digest"])
    assert found is not None and found.path == published["out"]
    assert recall(published["out"], "checkpoint", published["digest"]) is None  # another kind


def test_recall_refuses_another_digest(published):
    assert recall(published["out"], "pairs", "0" * 64) is None


def test_recall_refuses_an_input_replaced_at_the_same_path(published):
    shutil.rmtree(published["source"])
    published["make"]("source", 3, [])  # another artifact where the input was
    assert recall(published["out"], "pairs", published["digest"]) is None


def test_a_relative_input_is_checked_where_the_request_names_it(published, tmp_path, monkeypatch):
    """The same command (relative DATASET, absolute --out) from another working directory
    names another input: the record holds the path as named, so it is checked there."""
    make, elsewhere = published["make"], tmp_path / "elsewhere"
    source = open_artifact(published["source"])
    monkeypatch.chdir(tmp_path)
    named = records.named_inputs([open_artifact("source")])  # as pretrain opens DATASET
    assert named == [{"path": "source", "id": source.id}]
    remember(published["out"], published["digest"], open_artifact(published["out"]).id, named)
    assert recall(published["out"], "pairs", published["digest"]) is not None
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    shutil.copytree(source.path, elsewhere / "source")  # the same artifact here: current
    assert recall(published["out"], "pairs", published["digest"]) is not None
    shutil.rmtree(elsewhere / "source")
    make("elsewhere/source", 3, [])  # another artifact under the same relative name
    assert recall(published["out"], "pairs", published["digest"]) is None


def test_recall_refuses_a_damaged_out(published):
    (published["out"] / "data.txt").write_text("9")
    assert recall(published["out"], "pairs", published["digest"]) is None


def test_recall_ignores_a_record_that_is_not_one(published):
    record_path(published["out"]).write_text("{not json")
    assert recall(published["out"], "pairs", published["digest"]) is None


def test_an_input_the_record_cannot_name_leaves_no_record(tmp_path):
    raw = {"kind": "raw", "id": "a" * 64, "path": "/w.bin", "setting": "objective.image_init"}
    assert records.named_inputs([raw]) is None  # weights without the path the config names
    assert records.named_inputs([{"kind": "raw", "id": "b" * 64}]) is None
    remember(tmp_path / "out", "d" * 64, "e" * 64, None)
    assert not record_path(tmp_path / "out").exists()


def test_weights_are_recorded_by_content_at_the_path_the_config_names(published, tmp_path):
    from cxrkit.artifacts.contents import content_digest

    weights = tmp_path / "init.bin"
    weights.write_bytes(b"starting weights")
    ref = {"kind": "raw", "id": content_digest(weights).sha256, "path": "/resolved/elsewhere",
           "setting": "objective.image_init"}  # fmt: skip
    named = records.named_inputs([ref], {"objective.image_init": str(weights)})
    assert named == [{"path": str(weights), "id": ref["id"], "content": "objective.image_init"}]
    remember(published["out"], published["digest"], open_artifact(published["out"]).id, named)
    assert recall(published["out"], "pairs", published["digest"]) is not None
    weights.write_bytes(b"other weights, same path")
    assert recall(published["out"], "pairs", published["digest"]) is None
    weights.unlink()
    assert recall(published["out"], "pairs", published["digest"]) is None


def test_digest_depends_on_settings_launch_and_code(monkeypatch):
    request = Request.of("pretrain", {"out": "a", "train": {"seed": 0}})
    moved = Request.of("pretrain", {"out": "b", "train": {"seed": 0}})
    other = Request.of("pretrain", {"out": "a", "train": {"seed": 1}})
    base = request.digest(processes=1, precision="no")
    assert moved.digest(processes=1, precision="no") == base  # OUT's own path does not count
    assert other.digest(processes=1, precision="no") != base
    assert request.digest(processes=1, precision="bf16") != base  # a GPU run's auto
    assert request.digest(processes=2, precision="no") != base
    monkeypatch.setattr(records, "code_digest", lambda: "another version")
    assert request.digest(processes=1, precision="no") != base


def test_code_digest_covers_the_code_and_the_shipped_presets():
    names = {p.as_posix() for p in code_files()}
    assert {"stages/pretrain.py", "objectives/mae.py", "presets/demo-mae.toml"} <= names
    assert not any("__pycache__" in n for n in names)


def test_a_package_file_that_cannot_be_read_does_not_stop_the_command(monkeypatch):
    """An editor's lock file in a checkout (Emacs' ``.#pretrain.py`` is a link to nowhere)
    or a file without read permission is no code Python runs: the digest still comes out
    (it differs, so the run takes the full path once)."""
    real = code_files()
    records.code_digest.cache_clear()
    try:
        base = records.code_digest()
        records.code_digest.cache_clear()
        monkeypatch.setattr(records, "code_files", lambda: [*real, Path("stages/.#pretrain.py")])
        assert records.code_digest() != base
    finally:
        records.code_digest.cache_clear()


def test_code_files_leave_out_links_to_nowhere_and_pipes(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "pkg" / ".#a.py").symlink_to(tmp_path / "nowhere")
    os.mkfifo(tmp_path / "pkg" / "pipe")  # reading it would wait for a writer
    assert [p.as_posix() for p in code_files(tmp_path / "pkg")] == ["a.py"]


# ---------------------------------------------------------------- when only torch can tell


@pytest.mark.parametrize(
    ("setting", "gpu_node", "visible", "expected"),
    [("fp32", True, None, "no"), ("bf16", False, None, "bf16"), ("auto", False, None, "no"),
     ("auto", True, None, None), ("auto", True, "", "no"), ("auto", True, "-1", "no"),
     ("auto", True, "0", None), ("fp16", False, None, None)],
)  # fmt: skip
def test_precision_is_resolved_without_torch_only_where_certain(
    setting, gpu_node, visible, expected, tmp_path, monkeypatch
):
    node = tmp_path / "nvidiactl"
    if gpu_node:
        node.write_text("")
    monkeypatch.setattr(train_config, "_GPU_DEVICE_NODES", (str(node),))
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert precision_without_torch(setting) == expected


@pytest.mark.parametrize("node", ["/dev/nvmap", "/dev/nvhost-ctrl-gpu", "/dev/nvgpu"])
def test_an_integrated_nvidia_gpu_is_a_gpu_in_sight(node, monkeypatch):
    """A Jetson's GPU (CUDA, bf16 on Orin) has none of a discrete card's nodes
    (/dev/nvidia*, /proc/driver/nvidia), only Tegra's: ``auto`` is left to torch there,
    or a run recorded with the GPU hidden would pass for a bf16 run's no-op."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with monkeypatch.context() as only:
        only.setattr(train_config.os.path, "exists", lambda path: str(path) == node)
        assert precision_without_torch("auto") is None


def test_precision_without_torch_agrees_with_the_trainer_here():
    from cxrkit.train.config import resolve_precision

    for setting in ("auto", "bf16", "fp32"):
        quick = precision_without_torch(setting)
        assert quick is None or quick == resolve_precision(setting)


def test_no_quick_decision_under_a_multi_process_launch_or_with_a_gpu_in_sight(
    tmp_path, monkeypatch
):
    request = Request.of("pretrain", {"out": str(tmp_path / "o"), "train": {"precision": "auto"}})
    import cxrkit.stages.noop as noop

    monkeypatch.setattr(noop, "recall", lambda *a: pytest.fail("recall was asked"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert pretrain_up_to_date(request) is None
    monkeypatch.delenv("WORLD_SIZE")
    node = tmp_path / "nvidia0"
    node.write_text("")
    monkeypatch.setattr(train_config, "_GPU_DEVICE_NODES", (str(node),))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert pretrain_up_to_date(request) is None


# ---------------------------------------------------------------- a record that is not ours


@pytest.mark.parametrize(
    "text",
    ['{"format": "cxrkit-requests/1", "entries": 5}',  # not a list
     '{"format": "cxrkit-requests/1", "entries": [{"digest": "D", "id": "I", "inputs": ["x"]}]}',
     '{"format": "cxrkit-requests/1", "entries": [{"digest": "D", "id": "I", "inputs": {"a": 1}}]}',
     "[" * 100_000],  # nested past the JSON reader's recursion limit
    ids=["entries-not-a-list", "input-not-a-table", "inputs-not-a-list", "deeply-nested"],
)  # fmt: skip
def test_a_malformed_record_is_ignored_by_recall_and_replaced_by_remember(published, text):
    """A record damaged or written by hand sends the run down its full path; it never
    stops the command (the record is an optimisation only)."""
    digest, out_id = published["digest"], open_artifact(published["out"]).id
    text = text.replace('"D"', f'"{digest}"').replace('"I"', f'"{out_id}"')
    record_path(published["out"]).write_text(text)
    assert recall(published["out"], "pairs", digest) is None
    inputs = records.named_inputs([open_artifact(published["source"])])
    remember(published["out"], digest, out_id, inputs)
    assert recall(published["out"], "pairs", digest) is not None


def test_an_oversized_record_is_not_read(published):
    """A record holds at most 16 short entries; a file of megabytes is not one of ours."""
    record = json.loads(record_path(published["out"]).read_text())
    record["padding"] = "x" * (2 << 20)
    record_path(published["out"]).write_text(json.dumps(record))
    assert recall(published["out"], "pairs", published["digest"]) is None
