"""The generated SLURM job, run for real: fake `srun`/`scancel`/`scontrol` on PATH (shell
scripts that record their argv), a REAL 2-process gloo `accelerate launch`, SIGUSR1 to the
batch shell as SLURM sends it; the job must requeue (the launcher itself exits 1) and the
requeued job must resume and finish."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cxrkit.config import resolve
from cxrkit.stages import pretrain
from cxrkit.train.slurm import SlurmJob

TINY = [
    "model.depth=2",
    "objective.decoder_depth=1",
    "objective.decoder_dim=64",
    "train.log_every=1",
    "train.checkpoint_every=1000",
    "data.num_workers=0",
]

FAKE_SRUN = """#!/bin/bash
# fake srun: record argv, run the task, remember its pid for the fake scancel
echo "srun $*" >> "$FAKE_LOG"
while [[ "$1" == --* ]]; do shift; done
"$@" &
CHILD=$!
echo "$CHILD" > "$FAKE_DIR/step.pid"
wait "$CHILD"
"""
# Real SLURM (proctrack/cgroup) signals every process of the step, also the workers that
# torch's launcher starts in sessions of their own; the fake walks the process tree.
FAKE_SCANCEL = """#!/bin/bash
echo "scancel $*" >> "$FAKE_LOG"
SIG=${1#--signal=}
tree() { local p; for p in $(ps -o pid= --ppid "$1"); do echo "$p"; tree "$p"; done; }
ROOT=$(cat "$FAKE_DIR/step.pid")
for PID in $ROOT $(tree "$ROOT"); do kill -s "$SIG" "$PID" 2>/dev/null || true; done
"""
FAKE_SCONTROL = """#!/bin/bash
echo "scontrol $*" >> "$FAKE_LOG"
if [ "$1" = show ]; then echo localhost; fi
"""
FAKE_SBATCH = """#!/bin/bash
echo "sbatch $*" >> "$FAKE_LOG"
echo "4242"
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def fake_slurm(tmp_path):
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    for name, text in (
        ("srun", FAKE_SRUN),
        ("scancel", FAKE_SCANCEL),
        ("scontrol", FAKE_SCONTROL),
        ("sbatch", FAKE_SBATCH),
    ):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "slurm-calls.log"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_LOG": str(log),
        "FAKE_DIR": str(tmp_path),
        "SLURM_JOB_ID": "4242",
        "SLURM_NNODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_JOB_NODELIST": "localhost",
        "CXRKIT_MAIN_PORT": str(_free_port()),
        "CXRKIT_USR1_RESEND_S": "1",
        "ACCELERATE_USE_CPU": "true",  # real gloo DDP between 2 CPU processes
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    return env, log


def _write_job(dataset: Path, out: Path, max_steps: int) -> Path:
    cfg = resolve(
        pretrain.PretrainConfig,
        preset="demo-mae",
        flags={"data.dataset": str(dataset), "out": str(out), "preset": "demo-mae"},
        sets=[*TINY, f"train.max_steps={max_steps}", "data.batch_size=2"],
        stage="pretrain",
    )
    job = SlurmJob(nodes=1, gpus_per_node=2, time="1h", env_setup=f"cd {out.parent}")
    files = pretrain.write_slurm_job(cfg, job)
    text = files.script.read_text().replace("exec python ", f"exec {sys.executable} ")
    files.script.write_text(text)  # the hook would activate the venv on a cluster
    return files.script


def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.is_file() else []


def _wait(predicate, process: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"job ended early ({process.returncode}): {_tail(process)}")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError("timed out")
        time.sleep(0.05)


def _tail(process: subprocess.Popen) -> str:
    return (process.stdout.read() if process.stdout else b"").decode()[-3000:]


def _start(script: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        ["bash", str(script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # so a failed test can kill the whole job
    )


def _finish(process: subprocess.Popen, timeout: float = 300.0) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    return process.returncode, output.decode()


def _rows(out: Path) -> int:
    found = [d / "metrics.jsonl" for d in out.parent.glob(out.name + ".tmp-*")]
    return max((len(f.read_text().splitlines()) for f in found if f.is_file()), default=0)


@pytest.mark.slow
def test_usr1_mid_run_requeues_under_accelerate_and_the_requeued_job_resumes(
    demo_dataset, tmp_path, fake_slurm
):
    env, log = fake_slurm
    out = tmp_path / "runs" / "mae"
    script = _write_job(demo_dataset, out, max_steps=200)
    job = _start(script, env)
    _wait(lambda: _rows(out) >= 3, job)
    os.kill(job.pid, signal.SIGUSR1)  # --signal=B:USR1: to the batch shell only
    code, output = _finish(job)
    assert code == 75, output
    calls = _calls(log)
    assert "scancel --signal=USR1 4242" in calls
    assert "scontrol requeue 4242" in calls, output
    assert "ChildFailedError" in output  # the launcher said 1; the ranks' files said 75
    (run_dir,) = out.parent.glob(out.name + ".tmp-*")
    (saved,) = (run_dir / "checkpoints").glob("step-*")
    step = int(saved.name[5:])
    assert 3 <= step < 200 and not out.exists()
    assert not list(out.parent.glob(".cxrkit-exit-*")), "the exit-code folder is left behind"

    log.write_text("")
    requeued = {**env, "SLURM_RESTART_COUNT": "1"}  # what SLURM sets when it runs it again
    code, output = _finish(_start(script, requeued))
    assert code == 0, output
    assert "scontrol requeue" not in "\n".join(_calls(log))
    stats = json.loads((out / "manifest.json").read_text())["stats"]
    assert stats["resumed_from_step"] == step and stats["steps"] == 200
    assert stats["processes"] == 2 and stats["batch"]["global_batch"] == 4


@pytest.mark.slow
def test_usr1_before_the_first_step_is_not_lost(demo_dataset, tmp_path, fake_slurm):
    env, log = fake_slurm
    out = tmp_path / "runs" / "early"
    script = _write_job(demo_dataset, out, max_steps=30)
    job = _start(script, env)
    _wait(lambda: (tmp_path / "step.pid").is_file(), job)  # the launcher is starting up
    os.kill(job.pid, signal.SIGUSR1)
    code, output = _finish(job)
    assert code == 75, output
    assert "scontrol requeue 4242" in _calls(log), output
    assert _rows(out) == 0, "training went on after the USR1"
    code, output = _finish(_start(script, env))
    assert code == 0, output
    assert json.loads((out / "manifest.json").read_text())["stats"]["steps"] == 30


def test_usr1_during_the_environment_hook_requeues_without_launching(tmp_path, fake_slurm):
    from cxrkit.train.slurm import render_sbatch, write_sbatch

    env, log = fake_slurm
    job = SlurmJob(env_setup="kill -USR1 $$; sleep 0.2")  # the warning lands mid set-up
    script = write_sbatch(
        tmp_path / "job.sbatch", render_sbatch(job, ["ds", "--out", "o"], tmp_path / "log")
    )
    code, output = _finish(_start(script, env), timeout=60)
    assert code == 75, output
    assert "scontrol requeue 4242" in _calls(log)
    assert not any(c.startswith("srun") for c in _calls(log)), "it trained anyway"


def test_submit_calls_sbatch_with_the_written_script(
    demo_dataset, tmp_path, fake_slurm, monkeypatch
):
    from typer.testing import CliRunner

    from cxrkit.cli import app

    env, log = fake_slurm
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.setenv("FAKE_LOG", env["FAKE_LOG"])
    out = tmp_path / "runs" / "mae"
    args = ["pretrain", str(demo_dataset), "--out", str(out), "--preset", "demo-mae"]
    result = CliRunner().invoke(app, [*args, "--slurm", "--submit", "--time", "2h"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == "4242"
    assert _calls(log) == [f"sbatch --parsable {out.parent / 'mae.sbatch'}"]
