"""Nothing lost: --force never deletes a user's folder, a kill while publishing loses no work,
concurrent runs into one --out end with one intact artifact, and unwritable outputs end in one
line and exit 3 with nothing published.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from trust_support import cli, cli_process, ingest_args, tiny_mapping

from cxrkit.artifacts import MANIFEST, ArtifactWriter, verify
from cxrkit.errors import OutputError


class Killed(BaseException):
    """Stands for SIGKILL at one point of a run: nothing after it runs, no handler sees it."""


def _kill_at(monkeypatch, owner, name: str) -> None:
    def die(*args, **kwargs):
        raise Killed(name)

    monkeypatch.setattr(owner, name, die)


# ---------------------------------------------------------------- --force
def test_force_onto_a_folder_that_is_not_an_artifact_is_refused_and_keeps_its_files(
    tmp_path, salt_file
):
    mapping = tiny_mapping(tmp_path / "in")
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("years of work")
    result = cli(*ingest_args(mapping, precious, salt_file), "--force")
    assert result.exit_code == OutputError.exit_code
    assert "not a cxrkit artifact" in result.output
    assert (precious / "chapter1.tex").read_text() == "years of work"
    assert not list(tmp_path.glob("thesis.tmp-*"))


# ---------------------------------------------------------------- kill while publishing
@pytest.fixture
def tiny_pretrain(demo_dataset, tmp_path):
    from cxrkit.config import resolve
    from cxrkit.stages import pretrain

    sets = ["model.depth=1", "objective.decoder_depth=1", "objective.decoder_dim=32"]
    sets += ["data.batch_size=4", "train.max_steps=3", "data.num_workers=0"]
    flags = {"data.dataset": str(demo_dataset), "out": str(tmp_path / "ck")}
    return resolve(pretrain.PretrainConfig, preset="demo-mae", flags=flags, sets=sets)


def test_kill_after_the_manifest_is_written_publishes_without_retraining(
    tiny_pretrain, monkeypatch
):
    from cxrkit.stages import pretrain
    from cxrkit.train.loop import Trainer

    with monkeypatch.context() as patch:
        _kill_at(patch, ArtifactWriter, "_rename_into_place")
        with pytest.raises(Killed):
            pretrain.run(tiny_pretrain)
    out = Path(tiny_pretrain.out)
    assert not out.exists() and len(list(out.parent.glob("ck.tmp-*"))) == 1
    _kill_at(monkeypatch, Trainer, "fit")  # a re-run must not train at all
    again = pretrain.run(tiny_pretrain)
    assert again.stats["steps"] == 3 and verify(again.path) == []
    assert not list(out.parent.glob("ck.tmp-*"))


def test_kill_before_the_manifest_resumes_from_the_last_step_not_step_0(tiny_pretrain, monkeypatch):
    from cxrkit.artifacts import writer
    from cxrkit.stages import pretrain

    with monkeypatch.context() as patch:
        _kill_at(patch, writer, "describe_file")  # while hashing files for the manifest
        with pytest.raises(Killed):
            pretrain.run(tiny_pretrain)
    again = pretrain.run(tiny_pretrain)
    assert again.stats["resumed_from_step"] == 3 and again.stats["steps"] == 3
    assert verify(again.path) == []


def test_kill_while_annotate_publishes_does_not_annotate_again(demo_dataset, tmp_path, monkeypatch):
    from cxrkit.stages import annotate

    cfg = annotate.AnnotateConfig(dataset=str(demo_dataset), out=str(tmp_path / "ann"), preview=0)
    with monkeypatch.context() as patch:
        _kill_at(patch, ArtifactWriter, "_rename_into_place")
        with pytest.raises(Killed):
            annotate.run(cfg)
    _kill_at(monkeypatch, annotate, "_run_chunks")
    again = annotate.run(cfg)
    assert again.stats["rows"] == json.loads((demo_dataset / MANIFEST).read_text())["stats"]["rows"]
    assert verify(again.path) == []


# ---------------------------------------------------------------- races
def test_four_concurrent_ingests_into_one_out_all_succeed_with_one_artifact(tmp_path, salt_file):
    mapping = tiny_mapping(tmp_path / "in", count=4)
    out = tmp_path / "ds"
    procs = [cli_process(*ingest_args(mapping, out, salt_file)) for _ in range(4)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert [code for code, _, _ in results] == [0, 0, 0, 0], [e[-600:] for _, _, e in results]
    assert all(stdout.strip() == str(out) for _, stdout, _ in results)
    said = [err for _, _, err in results]
    assert sum("published" in e and "another run" in e or "up to date" in e for e in said) == 3
    assert verify(out) == []
    assert not list(tmp_path.glob("ds.tmp-*")) and not list(tmp_path.glob("ds.old-*"))


# ---------------------------------------------------------------- unwritable outputs
def _one_line_error(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_ingest_onto_a_full_disk_exits_3_and_publishes_nothing(tmp_path, salt_file, mount_tmpfs):
    mapping = tiny_mapping(tmp_path / "in", count=4)
    disk = mount_tmpfs("96k")
    args = ["ingest", "--mapping", mapping, "--out", disk / "ds", "--salt-file", salt_file]
    result = cli(*args, "--image-size", 512, "--workers", 1)
    assert result.exit_code == OutputError.exit_code
    assert "No space left on device" in _one_line_error(result)
    assert not (disk / "ds").exists()


def test_ingest_into_a_read_only_folder_exits_3(tmp_path, salt_file, mount_tmpfs):
    mapping = tiny_mapping(tmp_path / "in")
    read_only = mount_tmpfs("64k", read_only=True)
    result = cli(*ingest_args(mapping, read_only / "ds", salt_file))
    assert result.exit_code == OutputError.exit_code
    assert "not writable" in _one_line_error(result) or "Read-only" in result.output


@pytest.mark.parametrize("stage", ["ingest", "annotate", "export"])
def test_out_under_a_file_or_onto_a_file_exits_3(stage, tmp_path, salt_file, demo_dataset):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    for out in (a_file / "sub", a_file):
        if stage == "ingest":
            args = ingest_args(tiny_mapping(tmp_path / "in"), out, salt_file)
        elif stage == "annotate":
            args = ["annotate", demo_dataset, "--out", out]
        else:
            args = ["export", demo_dataset, "--out", out]
        result = cli(*args)
        if stage == "export" and result.exit_code == 4:  # a dataset is not a checkpoint: fine
            continue
        assert result.exit_code == OutputError.exit_code, result.output
        _one_line_error(result)
        assert a_file.read_text() == "mine"


def test_label_out_onto_a_folder_exits_3_and_into_a_missing_folder_works(tmp_path):
    reports = tmp_path / "reports.csv"
    reports.write_text("Report\nNo pneumothorax.\nLarge left pleural effusion.\n")
    folder = tmp_path / "existing"
    folder.mkdir()
    result = cli("label", reports, "--out", folder)
    assert result.exit_code == OutputError.exit_code
    assert "is a folder" in _one_line_error(result)
    nested = tmp_path / "new" / "deeper" / "labels.csv"
    result = cli("label", reports, "--out", nested)
    assert result.exit_code == 0, result.output
    assert nested.read_text().startswith("Reports,")
    blocked = cli("label", reports, "--out", reports / "labels.csv")
    assert blocked.exit_code == OutputError.exit_code
    assert "is a file" in _one_line_error(blocked)


def test_a_killed_build_is_adopted_by_the_next_run_after_the_lock(tmp_path):
    out = tmp_path / "p"
    first = ArtifactWriter(out, "pairs", {"a": 1})
    work = first.begin()
    (work / "x.bin").write_bytes(b"1")
    dead = out.parent / "p.tmp-999999999"
    shutil.move(work, dead)
    (dead / ".cxrkit-partial.json").write_text(json.dumps({"id": first.id, "pid": 999999999}))
    first.release()
    second = ArtifactWriter(out, "pairs", {"a": 1})
    assert second.up_to_date() is None
    assert (second.begin() / "x.bin").read_bytes() == b"1"


def test_a_killed_annotate_worker_is_reported_with_its_signal(tmp_path):
    from pretrain_support import write_dataset
    from trust_support import ROOT

    from cxrkit.errors import WorkerDied

    dataset = write_dataset(tmp_path / "ds", row_group_rows=4).path  # 4 chunks: a real pool

    hook = tmp_path / "hook"
    hook.mkdir()
    # Spawned workers import this too: each kills itself (SIGKILL, as the OOM killer does)
    # when it is handed a chunk.
    (hook / "sitecustomize.py").write_text(
        "import os, signal\n"
        "if os.environ.get('CXRKIT_TEST_KILL'):\n"
        "    from cxrkit.stages import annotate\n"
        "    def _die(args):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    annotate._process_chunk = _die\n"
    )
    env = {"PYTHONPATH": f"{hook}{os.pathsep}{ROOT}", "CXRKIT_TEST_KILL": "1"}
    out = tmp_path / "ann"
    proc = cli_process("annotate", dataset, "--out", out, "--workers", 2, env=env)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == WorkerDied.exit_code, stderr[-2000:]
    assert "killed by SIGKILL" in stderr and "Traceback" not in stderr
    assert not out.exists()


def test_annotate_and_label_onto_a_full_disk_exit_3_and_leave_nothing_published(
    demo_dataset, tmp_path, mount_tmpfs
):
    disk = mount_tmpfs("16k")
    result = cli("annotate", demo_dataset, "--out", disk / "ann")
    assert result.exit_code == OutputError.exit_code, result.output
    assert "No space left on device" in _one_line_error(result)
    assert not (disk / "ann").exists()
    reports = tmp_path / "reports.csv"
    rows = "\n".join(f"Small left pleural effusion, case {i}." for i in range(400))
    reports.write_text("Report\n" + rows + "\n")
    full = mount_tmpfs("8k")
    result = cli("label", reports, "--out", full / "labels.csv")
    assert result.exit_code == OutputError.exit_code, result.output
    assert "No space left on device" in _one_line_error(result)
    assert not list(full.iterdir())  # the temp file is removed, no half-written CSV
