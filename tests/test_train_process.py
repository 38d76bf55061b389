"""`cxrkit pretrain` as real processes on the real demo dataset: kill -9 + resume is bitwise,
SIGUSR1 exits 75 with a checkpoint and the re-run resumes, 2-process gloo DDP splits the data.
"""

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
import torch
from hold_support import held_env
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "--preset",
    "demo-mae",
    "--set",
    "model.depth=2",
    "--set",
    "objective.decoder_depth=1",
    "--set",
    "objective.decoder_dim=64",
    "--set",
    "train.log_every=1",
]


def _command(dataset: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cxrkit.cli",
        "pretrain",
        str(dataset),
        "--out",
        str(out),
        *TINY,
        *extra,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _wait_for(predicate, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(
                f"process ended early with {process.returncode}: "
                f"{process.stderr.read().decode()[-2000:]}"
            )
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.02)


def _run_dirs(out: Path) -> list[Path]:
    return sorted(out.parent.glob(out.name + ".tmp-*"))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def test_kill_9_then_resume_auto_gives_bitwise_the_same_weights(demo_dataset, tmp_path):
    settings = [
        "--max-steps",
        "16",
        "--batch-size",
        "4",
        "--set",
        "train.checkpoint_every=4",
        "--set",
        "data.num_workers=1",
    ]
    straight = subprocess.run(
        _command(demo_dataset, tmp_path / "straight", *settings),
        env=_env(),
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert straight.returncode == 0, straight.stderr.decode()[-2000:]

    out = tmp_path / "killed"
    held, _ = held_env(tmp_path, step=5, base=_env())  # killed while it waits: never released
    victim = subprocess.Popen(
        _command(demo_dataset, out, *settings),
        env=held,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _wait_for(
        lambda: any((d / "checkpoints" / "step-00000004").is_dir() for d in _run_dirs(out)), victim
    )
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert not out.exists(), "the run finished before the kill; the test proves nothing"

    resumed = subprocess.run(
        _command(demo_dataset, out, *settings, "--resume", "auto"),
        env=_env(),
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stats"]["resumed_from_step"] >= 4 and manifest["stats"]["steps"] == 16
    a, b = _weights(tmp_path / "straight"), _weights(out)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"
    losses = [
        [json.loads(r)["loss"] for r in (d / "metrics.jsonl").read_text().splitlines()]
        for d in (tmp_path / "straight", out)
    ]
    assert losses[0] == losses[1] and len(losses[0]) == 16


def test_sigusr1_exits_75_with_a_checkpoint_and_the_rerun_finishes(demo_dataset, tmp_path):
    out = tmp_path / "preempted"
    settings = ["--max-steps", "12", "--batch-size", "4", "--set", "train.checkpoint_every=100"]
    held, release = held_env(tmp_path, step=3, base=_env())
    process = subprocess.Popen(
        _command(demo_dataset, out, *settings),
        env=held,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def logged_two_steps() -> bool:
        rows = [d / "metrics.jsonl" for d in _run_dirs(out)]
        return any(r.is_file() and len(r.read_text().splitlines()) >= 2 for r in rows)

    _wait_for(logged_two_steps, process)
    process.send_signal(signal.SIGUSR1)
    release.touch()  # the signal is in: let the run go on to its next step boundary
    assert process.wait(timeout=120) == 75
    assert b"SIGUSR1" in process.stderr.read()
    (run_dir,) = _run_dirs(out)
    saved = sorted((run_dir / "checkpoints").glob("step-*"))
    assert len(saved) == 1 and 2 <= int(saved[0].name[5:]) < 12

    rerun = subprocess.run(
        _command(demo_dataset, out, *settings),
        env=_env(),
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    stats = json.loads((out / "manifest.json").read_text())["stats"]
    assert stats["resumed_from_step"] == int(saved[0].name[5:]) and stats["steps"] == 12


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_processes_split_every_batch_without_duplicates(demo_dataset, tmp_path):
    # 11 train images, 2 processes: 5 per process per epoch; batch 5 = one epoch per step.
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "cxrkit.cli",
        "-v",
        "pretrain",
        str(demo_dataset),
        "--out",
        str(out),
        *TINY,
        "--max-steps",
        "2",
        "--batch-size",
        "5",
    ]
    done = subprocess.run(
        command,
        env={**_env(), "ACCELERATE_USE_CPU": "true"},
        capture_output=True,
        timeout=300,
        check=False,
    )
    log = done.stderr.decode()
    assert done.returncode == 0, log[-3000:]
    taken: dict[tuple[int, int], list[str]] = {}
    for line in log.splitlines():
        if " DEBUG rank " in line and " images " in line:
            words = line.split()
            rank, step = int(words[words.index("rank") + 1]), int(words[words.index("step") + 1])
            taken[(rank, step)] = words[-1].split(",")
    assert set(taken) == {(0, 1), (1, 1), (0, 2), (1, 2)}
    for step in (1, 2):
        both = taken[(0, step)] + taken[(1, step)]
        assert len(both) == 10 and len(set(both)) == 10, f"ranks overlap at step {step}"
    assert json.loads((out / "manifest.json").read_text())["stats"]["processes"] == 2
    assert out.stat() and len(_run_dirs(out)) == 0


@pytest.mark.slow
def test_kill_9_resume_with_two_workers_and_accumulation(demo_dataset, tmp_path):
    """Longer variant: workers 2, accumulate 2, 40 steps, killed after the second checkpoint."""
    settings = [
        "--max-steps",
        "40",
        "--batch-size",
        "4",
        "--set",
        "train.checkpoint_every=8",
        "--set",
        "data.num_workers=2",
        "--set",
        "optim.accumulate=2",
    ]
    straight = subprocess.run(
        _command(demo_dataset, tmp_path / "a", *settings),
        env=_env(),
        capture_output=True,
        timeout=600,
        check=False,
    )
    assert straight.returncode == 0
    out = tmp_path / "b"
    held, _ = held_env(tmp_path, step=17, base=_env())  # killed while it waits: never released
    victim = subprocess.Popen(
        _command(demo_dataset, out, *settings),
        env=held,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _wait_for(
        lambda: any((d / "checkpoints" / "step-00000016").is_dir() for d in _run_dirs(out)),
        victim,
        timeout=600,
    )
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert not out.exists(), "the run finished before the kill; the test proves nothing"
    assert (
        subprocess.run(
            _command(demo_dataset, out, *settings),
            env=_env(),
            capture_output=True,
            timeout=600,
            check=False,
        ).returncode
        == 0
    )
    a, b = _weights(tmp_path / "a"), _weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)
