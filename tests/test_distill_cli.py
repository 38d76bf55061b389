"""`cxrkit distill` and `cxrkit ingest-physio` as commands: presets, coverage on the terminal,
stage stops, exit codes, and kill -9 during distillation resumes bit for bit."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hold_support import held_env
from safetensors.torch import load_file
from typer.testing import CliRunner

from cxrkit.cli import app
from cxrkit.config import load_preset, resolve
from cxrkit.stages import distill, pretrain
from cxrkit.stages.demo_physio import build_demo_physio

TINY_MAE = [
    "model.depth=2",
    "objective.decoder_depth=1",
    "objective.decoder_dim=64",
    "objective.decoder_heads=2",
    "train.max_steps=2",
]


@pytest.fixture(scope="module")
def student(demo_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-student") / "mae"
    cfg = resolve(
        pretrain.PretrainConfig,
        preset="demo-mae",
        flags={"out": str(out), "data.dataset": str(demo_dataset)},
        sets=TINY_MAE,
        stage="pretrain",
    )
    return pretrain.run(cfg).path


@pytest.fixture(scope="module")
def physio_dir(demo_inputs, salt_file, tmp_path_factory):
    with open(demo_inputs) as handle:
        patients = [r["patient_id"] for r in csv.DictReader(handle) if r["patient_id"]]
    files = build_demo_physio(tmp_path_factory.mktemp("cli-physio-raw"), patients)
    out = tmp_path_factory.mktemp("cli-physio") / "physio"
    result = CliRunner().invoke(
        app,
        [
            "ingest-physio",
            "--ecg",
            str(files["ecg"]),
            "--ecg-map",
            str(files["ecg_map"]),
            "--labs",
            str(files["labs"]),
            "--salt-file",
            str(salt_file),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    return out


def test_presets_resolve_with_their_tagged_values():
    paper = resolve(distill.DistillConfig, preset="pacx-mae", stage="distill")
    assert paper.objective["lora_r"] == 8 and paper.objective["lora_alpha"] == 16.0
    assert paper.objective["regression_weight"] == 0.1 and paper.optim.lr == 3e-4
    assert resolve(distill.DistillConfig, preset="demo-pacx", stage="distill").synthetic_pairs
    stage1 = load_preset("pacx-mae-stage1")
    assert stage1["objective"]["mask_ratio"] == 0.9


def test_a_typo_in_the_objective_table_is_a_config_error_with_a_did_you_mean():
    from cxrkit.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'lora_r'"):
        resolve(distill.DistillConfig, preset="pacx-mae", sets=["objective.lora_rr=4"])


def test_missing_student_is_a_usage_error(demo_dataset, physio_dir, tmp_path):
    result = CliRunner().invoke(
        app,
        ["distill", str(demo_dataset), "--physio", str(physio_dir), "--out", str(tmp_path / "o")],
    )
    assert result.exit_code == 2 and "student" in result.output


def test_stage_pairs_stops_after_pairing_and_shows_coverage(demo_dataset, physio_dir, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "distill",
            str(demo_dataset),
            "--physio",
            str(physio_dir),
            "--out",
            str(tmp_path / "o"),
            "--stage",
            "pairs",
            "--preset",
            "demo-pacx",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "pairing coverage" in result.output and "synthetic pairs" in result.output
    assert (tmp_path / "o.work" / "pairs" / "manifest.json").is_file()
    assert not (tmp_path / "o").exists()


def test_a_non_mae_student_is_an_artifact_error(demo_dataset, physio_dir, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "distill",
            str(demo_dataset),
            "--physio",
            str(physio_dir),
            "--student",
            str(physio_dir),  # a physio artifact, not a checkpoint
            "--out",
            str(tmp_path / "o"),
            "--preset",
            "demo-pacx",
        ],
    )
    assert result.exit_code == 4, result.output


# ------------------------------------------------------------------ kill -9 and resume
def _command(dataset, physio, student, out) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cxrkit.cli",
        "distill",
        str(dataset),
        "--physio",
        str(physio),
        "--student",
        str(student),
        "--out",
        str(out),
        "--preset",
        "demo-pacx",
        "--max-steps",
        "16",
        "--batch-size",
        "4",
        "--set",
        "train.checkpoint_every=4",
        "--set",
        "train.log_every=1",
        "--set",
        "teacher.epochs=2",
        "--set",
        "data.num_workers=1",
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
def test_kill_9_during_distill_then_the_same_command_resumes_bit_for_bit(
    demo_dataset, physio_dir, student, tmp_path
):
    straight = subprocess.run(
        _command(demo_dataset, physio_dir, student, tmp_path / "straight"),
        env=_env(),
        capture_output=True,
        timeout=600,
        check=False,
    )
    assert straight.returncode == 0, straight.stderr.decode()[-2000:]

    out = tmp_path / "killed"
    held, _ = held_env(tmp_path, step=5, base=_env())  # killed while it waits: never released
    victim = subprocess.Popen(
        _command(demo_dataset, physio_dir, student, out),
        env=held,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    run_dirs = lambda: list((tmp_path / "killed.work").glob("run.tmp-*"))  # noqa: E731
    deadline = time.monotonic() + 300
    while not any((d / "checkpoints" / "step-00000004").is_dir() for d in run_dirs()):
        assert victim.poll() is None, victim.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert not out.exists(), "the run finished before the kill; the test proves nothing"

    resumed = subprocess.run(
        _command(demo_dataset, physio_dir, student, out),
        env=_env(),
        capture_output=True,
        timeout=600,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    run = json.loads((tmp_path / "killed.work" / "run" / "manifest.json").read_text())
    assert run["stats"]["resumed_from_step"] >= 4 and run["stats"]["steps"] == 16
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = [
        [json.loads(r)["loss"] for r in (d / "metrics.jsonl").read_text().splitlines()]
        for d in (tmp_path / "straight", out)
    ]
    assert losses[0] == losses[1] and len(losses[0]) == 16


@pytest.mark.slow
def test_two_gloo_processes_distill_with_negatives_gathered_over_both(
    demo_dataset, physio_dir, student, tmp_path
):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--main_process_port",
        str(port),
        *_command(demo_dataset, physio_dir, student, out)[1:],  # -m cxrkit.cli distill ...
        "--set",
        "train.find_unused_parameters=true",
    ]
    command[command.index("16")] = "4"  # --max-steps
    done = subprocess.run(
        command,
        env={**_env(), "ACCELERATE_USE_CPU": "true"},
        capture_output=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    run = json.loads((tmp_path / "ddp.work" / "run" / "manifest.json").read_text())
    assert run["stats"]["processes"] == 2 and run["stats"]["steps"] == 4
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    # 4 images per process: more than 4 pairs in a step means both processes' rows were used
    assert max(r["pairs_ecg"] for r in rows) > 4
    assert json.loads((out / "config.json").read_text())["objective"] == "mae"


def test_slurm_prepares_here_and_hands_the_resolved_run_to_pretrains_job_writer(
    demo_dataset, physio_dir, student, tmp_path, monkeypatch
):
    from types import SimpleNamespace

    handed = {}

    def fake_writer(cfg, job):  # stands in for pretrain.write_slurm_job (cluster)
        handed["cfg"], handed["job"] = cfg, job
        script = tmp_path / "run.sbatch"
        script.write_text("#!/bin/bash\n")
        return SimpleNamespace(script=script)

    monkeypatch.setattr(pretrain, "write_slurm_job", fake_writer, raising=False)
    args = ["distill", str(demo_dataset), "--physio", str(physio_dir), "--student"]
    args += [str(student), "--out", str(tmp_path / "o"), "--preset", "demo-pacx", "--slurm"]
    result = CliRunner().invoke(app, [*args, "--nodes", "2", "--set", "teacher.epochs=1"])
    assert result.exit_code == 0, result.output
    cfg = handed["cfg"]
    assert cfg.objective["name"] == "pacx" and Path(cfg.objective["embeddings"]).is_absolute()
    assert Path(cfg.out) == (tmp_path / "o.work" / "run").resolve()
    assert handed["job"].nodes == 2 and handed["job"].job_name == "cxrkit-distill-o"
    assert (tmp_path / "o.work" / "embeddings" / "manifest.json").is_file()
    assert not (tmp_path / "o").exists()  # published by a re-run after the job


def test_slurm_job_trains_the_run_and_the_rerun_publishes_it(
    demo_dataset, physio_dir, student, tmp_path
):
    args = ["distill", str(demo_dataset), "--physio", str(physio_dir), "--student", str(student)]
    args += ["--out", str(tmp_path / "o"), "--preset", "demo-pacx", "--max-steps", "3"]
    args += ["--set", "teacher.epochs=1"]
    cluster = ["--slurm", "--gpus-per-node", "2", "--mem", "64G", "--qos", "high"]
    cluster += ["--env-setup", "module load cuda", "--sbatch=--mail-type=END"]
    written = CliRunner().invoke(app, [*args, *cluster])
    assert written.exit_code == 0, written.output
    run = (tmp_path / "o.work" / "run").resolve()
    script = Path(f"{run}.sbatch")
    text = script.read_text()
    assert script.is_file() and "cxrkit" in text and "pretrain" in text
    # the same SLURM options as `cxrkit pretrain --slurm` (one definition, cli/slurm_options.py)
    assert "#SBATCH --mem=64G" in text and "#SBATCH --qos=high" in text
    assert "#SBATCH --mail-type=END" in text and "module load cuda" in text
    config = Path(f"{run}.pretrain.json")
    assert json.loads(config.read_text())["objective"]["name"] == "pacx"
    # what the job runs, here in one process
    job = CliRunner().invoke(
        app, ["pretrain", str(demo_dataset), "--out", str(run), "--config", str(config)]
    )
    assert job.exit_code == 0, job.output
    trained = json.loads((run / "manifest.json").read_text())
    published = CliRunner().invoke(app, args)
    assert published.exit_code == 0, published.output
    assert json.loads((run / "manifest.json").read_text())["id"] == trained["id"]  # not retrained
    assert json.loads((tmp_path / "o" / "config.json").read_text())["objective"] == "mae"


# ------------------------------------------------------------------ the no-op re-run
NOOP_PROBE = """
import json, sys
from typer.testing import CliRunner
from cxrkit.cli import app
result = CliRunner().invoke(app, json.loads(sys.argv[1]))
heavy = [m for m in ("torch", "timm", "open_clip", "accelerate") if m in sys.modules]
print(json.dumps({"exit_code": result.exit_code, "heavy": heavy, "output": result.output}))
"""


def _probe(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, "-c", NOOP_PROBE, json.dumps(args)],
                          capture_output=True, text=True, timeout=300, env=_env())  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_noop_rerun_imports_no_torch_and_a_deleted_step_takes_the_full_path(
    demo_dataset, physio_dir, student, tmp_path
):
    args = ["distill", str(demo_dataset), "--physio", str(physio_dir), "--student", str(student)]
    args += ["--out", str(tmp_path / "o"), "--preset", "demo-pacx", "--max-steps", "2"]
    args += ["--set", "teacher.epochs=1", "--set", "train.precision=fp32"]  # any machine
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    manifest = (tmp_path / "o" / "manifest.json").read_bytes()
    again = _probe(args)
    assert again["exit_code"] == 0, again["output"]
    assert again["heavy"] == [], f"a no-op distill imported {again['heavy']}"
    assert "is up to date" in again["output"] and "pairing coverage" in again["output"]
    assert (tmp_path / "o" / "manifest.json").read_bytes() == manifest
    # a step's artifact deleted: the full path remakes it, as before, and OUT stays
    shutil.rmtree(tmp_path / "o.work" / "embeddings")
    remade = _probe(args)
    assert remade["exit_code"] == 0, remade["output"]
    assert "torch" in remade["heavy"]
    assert (tmp_path / "o.work" / "embeddings" / "manifest.json").is_file()
    assert (tmp_path / "o" / "manifest.json").read_bytes() == manifest
