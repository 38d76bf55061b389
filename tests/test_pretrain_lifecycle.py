"""The life of a long run on the real demo dataset: extending a finished or killed run is a
first-class operation, a run owned by another host is never silently restarted, and
`cxrkit show` reports a run in progress."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cxrkit.artifacts import ArtifactWriter
from cxrkit.artifacts.manifest import PARTIAL_MARKER
from cxrkit.artifacts.owners import owner_state
from cxrkit.config import resolve
from cxrkit.errors import ArtifactError
from cxrkit.stages import pretrain
from cxrkit.train import runs

TINY = [
    "model.depth=2",
    "objective.decoder_depth=1",
    "objective.decoder_dim=64",
    "data.batch_size=4",
    "data.num_workers=0",
    "train.log_every=1",
    "train.checkpoint_every=2",
]


def _cfg(dataset: Path, out: Path, steps: int) -> pretrain.PretrainConfig:
    return resolve(
        pretrain.PretrainConfig,
        preset="demo-mae",
        flags={"data.dataset": str(dataset), "out": str(out)},
        sets=[*TINY, f"train.max_steps={steps}"],
        stage="pretrain",
    )


def _losses(path: Path) -> list[float]:
    return [json.loads(r)["loss"] for r in (path / "metrics.jsonl").read_text().splitlines()]


def test_extending_a_published_run_continues_it_and_says_so(demo_dataset, tmp_path):
    out = tmp_path / "mae"
    first = pretrain.run(_cfg(demo_dataset, out, 6))
    _losses_of_first = _losses(out)
    extended = pretrain.run(_cfg(demo_dataset, out, 10))
    stats = extended.stats
    assert stats["extended_from"] == {"source": "published", "id": first.id, "steps": 6}
    assert stats["resumed_from_step"] == 6 and stats["steps"] == 10
    assert extended.id != first.id and extended.params["train"]["max_steps"] == 10
    assert [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()] == [
        *range(1, 11)
    ]
    assert _losses(out)[:6] == _losses_of_first  # the history continues, unchanged
    # Only the artifact, and the documented lock file beside it (flock: never deleted, see
    # ArtifactWriter): no second run directory, no leftover temp dir.
    left = sorted(tmp_path.iterdir())
    assert left == sorted([out, tmp_path / f".{out.name}.lock"]), "a second directory or a leftover"


def test_extending_a_run_killed_before_publishing_adopts_its_directory(
    demo_dataset, tmp_path, monkeypatch
):
    out = tmp_path / "mae"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # what a kill between training and publish leaves

    monkeypatch.setattr(ArtifactWriter, "publish", killed)
    with pytest.raises(KeyboardInterrupt):
        pretrain.run(_cfg(demo_dataset, out, 4))
    monkeypatch.undo()
    (run_dir,) = tmp_path.glob("mae.tmp-*")
    assert runs.steps_done(run_dir) == 4
    done = pretrain.run(_cfg(demo_dataset, out, 8))
    assert done.stats["extended_from"]["source"] == "unfinished"
    assert done.stats["extended_from"]["steps"] == 4
    assert done.stats["resumed_from_step"] == 4 and done.stats["steps"] == 8
    assert not list(tmp_path.glob("mae.tmp-*"))


def test_a_shorter_run_than_the_one_stopped_starts_afresh_with_a_warning(
    demo_dataset, tmp_path, caplog, monkeypatch
):
    out = tmp_path / "mae"
    monkeypatch.setattr(ArtifactWriter, "publish", lambda *a, **k: (_ for _ in ()).throw(OSError))
    with pytest.raises(OSError):
        pretrain.run(_cfg(demo_dataset, out, 6))
    monkeypatch.undo()
    with caplog.at_level("WARNING", logger="cxrkit"):
        done = pretrain.run(_cfg(demo_dataset, out, 4))
    assert "extended_from" not in done.stats and done.stats["resumed_from_step"] == 0
    assert "cannot be extended to a shorter run" in caplog.text


def _marker(work: Path, writer: ArtifactWriter, **owner) -> None:
    work.mkdir(parents=True)
    (work / PARTIAL_MARKER).write_text(json.dumps({"id": writer.id, "kind": "checkpoint", **owner}))


def test_a_pid_is_only_trusted_on_its_own_host(tmp_path, monkeypatch):
    here = socket.gethostname()
    alive = os.getppid()  # a live pid on this host
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert owner_state({"pid": alive, "host": here}) == "alive"
    assert owner_state({"pid": 2**22 + 7, "host": here}) == "dead"
    assert owner_state({"pid": alive, "host": "gpu-node-17"}) == "unknown"
    # a requeue of the same SLURM job: its old processes are gone wherever they ran
    monkeypatch.setenv("SLURM_JOB_ID", "99")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    requeued = {"pid": alive, "host": "gpu-node-17", "slurm_job": "99", "slurm_restart": "0"}
    assert owner_state(requeued) == "dead"
    writer = ArtifactWriter(tmp_path / "out", "checkpoint", {"a": 1})
    _marker(tmp_path / "out.tmp-123", writer, **requeued)
    assert writer.resume_dir() == tmp_path / "out.tmp-123"  # adopted, not a fresh start


def _state_letter(stat: Path) -> bytes:
    """A process's state letter from its /proc stat file (R, S, Z...)."""
    try:
        return stat.read_bytes().rpartition(b")")[2].split()[0]
    except FileNotFoundError:  # SIGCHLD ignored somewhere: children never linger as zombies
        pytest.skip("killed children are reaped at once in this process")


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
def test_an_owner_killed_but_not_yet_reaped_by_its_parent_is_dead(monkeypatch):
    """kill -9 leaves a zombie until the parent waits for it, and signal 0 still reaches a
    zombie: a re-run started before the reap (a script that relaunches at once) must
    resume the dead run's build, not take it for a live one."""
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    info = {"pid": child.pid, "host": socket.gethostname()}
    try:
        assert owner_state(info) == "alive"
        child.kill()  # not waited for: a zombie until child.wait() below
        state = Path(f"/proc/{child.pid}/stat")
        deadline = time.monotonic() + 60
        while _state_letter(state) != b"Z":
            assert time.monotonic() < deadline, "the killed child never became a zombie"
            time.sleep(0.01)
        os.kill(child.pid, 0)  # the pid is still there...
        assert owner_state(info) == "dead"  # ...but nothing runs under it
    finally:
        child.kill()
        child.wait()


def test_a_run_on_another_host_is_refused_and_can_be_taken_over_by_name(
    demo_dataset, tmp_path, monkeypatch
):
    out = tmp_path / "mae"
    monkeypatch.setattr(ArtifactWriter, "publish", lambda *a, **k: (_ for _ in ()).throw(OSError))
    with pytest.raises(OSError):  # a run stopped at step 4 (its files are all there)
        pretrain.run(_cfg(demo_dataset, out, 4))
    monkeypatch.undo()
    (run_dir,) = tmp_path.glob("mae.tmp-*")
    marker = json.loads((run_dir / PARTIAL_MARKER).read_text())
    marker.update(host="gpu-node-17", pid=os.getppid(), slurm_job=None)
    (run_dir / PARTIAL_MARKER).write_text(json.dumps(marker))
    with pytest.raises(ArtifactError, match=r"gpu-node-17.*cannot check.*--resume"):
        pretrain.run(_cfg(demo_dataset, out, 4))  # never a silent fresh start beside it
    assert not out.exists() and list(tmp_path.glob("mae.tmp-*")) == [run_dir]
    cfg = _cfg(demo_dataset, out, 4)
    cfg.train.resume = str(run_dir)  # the user names it: it is dead, continue it
    done = pretrain.run(cfg)
    assert done.stats["resumed_from_step"] == 4 and done.stats["steps"] == 4
    assert not list(tmp_path.glob("mae.tmp-*"))


def test_show_reports_a_run_in_progress(demo_dataset, tmp_path, monkeypatch):
    from cxrkit.cli import app

    out = tmp_path / "mae"
    monkeypatch.setattr(ArtifactWriter, "publish", lambda *a, **k: (_ for _ in ()).throw(OSError))
    with pytest.raises(OSError):
        pretrain.run(_cfg(demo_dataset, out, 6))
    monkeypatch.undo()
    (run_dir,) = tmp_path.glob("mae.tmp-*")
    (found,) = runs.progress(out)
    assert found["step"] == 6 and found["max_steps"] == 6 and found["state"] == "stopped"
    assert found["loss"] == _losses(run_dir)[-1] and found["img_per_s"] > 0
    result = CliRunner().invoke(app, ["show", str(out)])
    assert result.exit_code == 0, result.output
    for text in ("not published yet", "step", "6 / 6", "loss", "img/s", "ETA", "stopped"):
        assert text in result.output
    as_json = CliRunner().invoke(app, ["show", str(out), "--json"])
    assert json.loads(as_json.output)["kind"] == "in-progress"


def test_progress_eta_comes_from_the_recent_step_rate(tmp_path):
    run_dir = tmp_path / "o.tmp-1"
    run_dir.mkdir()
    (run_dir / PARTIAL_MARKER).write_text(json.dumps({"id": "x", "kind": "checkpoint", "pid": 1}))
    (run_dir / runs.RUN_FILE).write_text(json.dumps({"max_steps": 100}))
    rows = [
        {"step": s, "loss": 1.0 / s, "img_per_s": 8.0, "time": 1000.0 + 2 * s}
        for s in (1, 2, 3, 4, 5)
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (found,) = runs.progress(tmp_path / "o")
    # 4 steps in 8 s = 0.5 steps/s; 95 steps left -> 190 s
    assert found["step"] == 5 and found["eta_s"] == 190 and found["loss"] == 0.2
    assert found["last_checkpoint"] is None


@pytest.mark.parametrize("damage", [b"\xff\xfe not utf-8", b"[1, 2]", b'"text"', b'{"id": '])
def test_a_damaged_run_record_is_skipped_not_a_traceback(demo_dataset, tmp_path, damage):
    # Scratch records of a stopped run (disk errors, a hand edit): listing and a new run
    # treat the directory as foreign, as for a missing record.
    stale = tmp_path / "o.tmp-999999"
    stale.mkdir()
    (stale / PARTIAL_MARKER).write_bytes(damage)
    (stale / runs.RUN_FILE).write_bytes(damage)
    assert runs.progress(tmp_path / "o") == []
    published = pretrain.run(_cfg(demo_dataset, tmp_path / "o", 2))
    assert published.stats["steps"] == 2


def test_track_needs_its_package_and_says_so_in_one_line(demo_dataset, tmp_path):
    import importlib.util

    from cxrkit.cli import app

    missing = [
        n
        for n, pkgs in (("tensorboard", ("tensorboard", "tensorboardX")), ("wandb", ("wandb",)))
        if not any(importlib.util.find_spec(p) for p in pkgs)
    ]
    if not missing:
        pytest.skip("every tracker package is installed here")
    args = ["pretrain", str(demo_dataset), "--out", str(tmp_path / "o"), "--preset", "demo-mae"]
    result = CliRunner().invoke(app, [*args, "--track", missing[0]])
    assert result.exit_code == 2
    assert f"--track {missing[0]} needs the" in result.output and "not installed" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
    unknown = CliRunner().invoke(app, [*args, "--track", "mlflow"])
    assert unknown.exit_code == 2 and "not one of tensorboard, wandb" in unknown.output


def test_trackers_get_every_metrics_row_and_stay_out_of_the_artifact(
    demo_dataset, tmp_path, monkeypatch
):
    sent: list[dict] = []

    class Recorder:
        def __init__(self, names, out, run_name, config):
            assert names == ["tensorboard"] and config["train"]["max_steps"] == 3
            self.finished = False

        def log(self, row):
            sent.append(dict(row))

        def finish(self):
            sent.append({"finished": True})

    monkeypatch.setattr(pretrain, "Trackers", Recorder)
    monkeypatch.setattr(pretrain, "require_trackers", lambda names: None)
    plain = pretrain.run(_cfg(demo_dataset, tmp_path / "plain", 3))
    tracked = pretrain.run(
        resolve(
            pretrain.PretrainConfig,
            preset="demo-mae",
            flags={"data.dataset": str(demo_dataset), "out": str(tmp_path / "tracked")},
            sets=[*TINY, "train.max_steps=3", "train.track=['tensorboard']"],
            stage="pretrain",
        )
    )
    rows = [
        json.loads(r) for r in (tmp_path / "tracked" / "metrics.jsonl").read_text().splitlines()
    ]
    assert sent[:-1] == rows and sent[-1] == {"finished": True}
    assert tracked.id == plain.id  # tracking changes no weight, so not the id


def test_eta_ignores_the_pause_of_a_stop_and_resume(tmp_path):
    run_dir = tmp_path / "o.tmp-1"
    run_dir.mkdir()
    (run_dir / PARTIAL_MARKER).write_text(json.dumps({"id": "x", "kind": "checkpoint", "pid": 1}))
    (run_dir / runs.RUN_FILE).write_text(json.dumps({"max_steps": 20}))
    times = [0, 1, 2, 3, 3600, 3601, 3602, 3603]  # stopped after step 4, resumed an hour later
    rows = [{"step": s + 1, "loss": 1.0, "time": t} for s, t in enumerate(times)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (found,) = runs.progress(tmp_path / "o")
    assert found["eta_s"] == 12  # 1 step/s since the restart, 12 steps left


def test_show_on_a_published_run_lists_an_extension_under_way(demo_dataset, tmp_path):
    from cxrkit.cli import app

    out = tmp_path / "mae"
    pretrain.run(_cfg(demo_dataset, out, 2))
    extension = tmp_path / "mae.tmp-77"
    extension.mkdir()
    (extension / PARTIAL_MARKER).write_text(json.dumps({"id": "y", "kind": "checkpoint", "pid": 1}))
    result = CliRunner().invoke(app, ["show", str(out)])
    assert result.exit_code == 0 and "build under way beside it" in result.output


def test_tensorboard_tracker_writes_the_metrics_rows(demo_dataset, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    cfg = resolve(
        pretrain.PretrainConfig,
        preset="demo-mae",
        flags={"data.dataset": str(demo_dataset), "out": str(out)},
        sets=[*TINY, "train.max_steps=3", "train.log_every=1", "train.track=['tensorboard']"],
        stage="pretrain",
    )
    pretrain.run(cfg)
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    events = sorted((tmp_path / "tb.tensorboard").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file written beside the artifact"
    logged = {}
    for path in events:
        acc = EventAccumulator(str(path))
        acc.Reload()
        if "loss" in acc.Tags()["scalars"]:
            logged = {e.step: e.value for e in acc.Scalars("loss")}
    assert logged == pytest.approx({r["step"]: r["loss"] for r in rows}, rel=1e-6)
    assert not any(p.name.startswith("events") for p in out.rglob("*"))  # not in the artifact
