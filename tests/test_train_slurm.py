"""The generated sbatch script: resources, environment hook, rendezvous, signal forwarding,
requeue on the ranks' exit code 75, time formats, and no value can inject a shell line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cxrkit.errors import ConfigError, InputError
from cxrkit.train import launch
from cxrkit.train.slurm import SlurmJob, normalise_time, render_sbatch, submit, write_sbatch


@pytest.fixture()
def script():
    job = SlurmJob(
        nodes=2,
        gpus_per_node=4,
        time="12:00:00",
        partition="gpu",
        account="rad",
        qos="high",
        constraint="a100|h100",
        exclude="gpu[01-03]",
        mem="256G",
        cpus_per_task=48,
        env_setup="module load cuda/12; source /opt/venv/bin/activate",
        extra=["--mail-type=END", "--comment=mae run"],
    )
    return render_sbatch(
        job,
        ["/data/ds", "--out", "/runs/mae", "--config", "/runs/mae.pretrain.json"],
        Path("/runs/mae-%j.log"),
    )


def _srun(text: str) -> str:
    return next(line.strip() for line in text.splitlines() if line.strip().startswith("srun "))


def test_header_asks_for_every_resource_and_early_usr1(script):
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --cpus-per-task=48",
        "#SBATCH --time=12:00:00",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=rad",
        "#SBATCH --qos=high",
        "#SBATCH --constraint=a100|h100",
        "#SBATCH --exclude=gpu[01-03]",
        "#SBATCH --mem=256G",
        "#SBATCH --mail-type=END",
        "#SBATCH --comment=mae run",
        "#SBATCH --signal=B:USR1@120",
        "#SBATCH --requeue",
        "#SBATCH --output=/runs/mae-%j.log",
    ):
        assert line in script.splitlines() or any(
            s.startswith(line + " ") for s in script.splitlines()
        ), line
    assert script.startswith("#!/bin/bash\n")


def test_environment_hook_runs_before_launch_and_python_comes_from_it(script):
    lines = script.splitlines()
    hook = lines.index("module load cuda/12; source /opt/venv/bin/activate")
    srun = next(i for i, line in enumerate(lines) if line.strip().startswith("srun "))
    assert hook < srun
    assert "exec python -m accelerate.commands.launch" in lines[srun]


def test_one_accelerate_launch_per_node_running_the_resolved_config(script):
    assert 'MAIN_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in script
    srun = _srun(script)
    for part in (
        "--num_machines $SLURM_NNODES",
        "--machine_rank $SLURM_NODEID",
        "--main_process_ip $MAIN_NODE",
        "--main_process_port $MAIN_PORT",
        "--num_processes $((SLURM_NNODES * 4))",
        "--multi_gpu",
        "-m cxrkit.cli pretrain /data/ds --out /runs/mae --config /runs/mae.pretrain.json'",
    ):
        assert part in srun
    assert srun.endswith("' &")  # in the background so the shell can take USR1
    assert "export TORCH_NCCL_ASYNC_ERROR_HANDLING=1" in script
    assert "export OMP_NUM_THREADS=${OMP_NUM_THREADS:-12}" in script  # 48 CPUs / 4 GPUs


def test_usr1_is_forwarded_again_until_the_ranks_exit_and_rank_code_75_requeues(script):
    assert "trap forward_usr1 USR1" in script
    assert script.count('scancel --signal=USR1 "$SLURM_JOB_ID"') == 2  # first, then re-sent
    assert 'CODES=$(cat "$CXRKIT_EXIT_DIR"/rank-* 2>/dev/null' in script
    assert '    *" 75 "*) STATUS=75 ;;' in script
    assert 'scontrol requeue "$SLURM_JOB_ID"' in script


def test_script_is_valid_bash(tmp_path, script):
    path = write_sbatch(tmp_path / "job.sbatch", script)
    assert os.access(path, os.X_OK)
    assert subprocess.run(["bash", "-n", str(path)], check=False).returncode == 0


def _run_tail(tmp_path: Path, rank_codes: dict[int, int], launcher: int, preempted: int) -> tuple:
    """Run the script's exit-code logic with a fake launcher status and rank files."""
    text = render_sbatch(SlurmJob(), ["d"], tmp_path / "log")
    tail = text[text.index("# The ranks' own exit codes") :]
    exit_dir = tmp_path / "exit"
    exit_dir.mkdir()
    for rank, code in rank_codes.items():
        (exit_dir / f"rank-{rank}").write_text(f"{code}\n")
    calls = tmp_path / "calls"
    bash = (
        f'scontrol() {{ echo "$*" >> {calls}; }}\n'
        f"CXRKIT_EXIT_DIR={exit_dir}; SLURM_JOB_ID=7; STATUS={launcher}; "
        f"PREEMPTED={preempted}; TERMINATED=0\n{tail}"
    )
    done = subprocess.run(["bash", "-c", bash], capture_output=True, text=True, check=False)
    return done.returncode, calls.read_text() if calls.exists() else ""


@pytest.mark.parametrize(
    ("ranks", "launcher", "preempted", "code", "requeued"),
    [
        ({0: 75, 1: 75}, 1, 1, 75, True),  # accelerate's ChildFailedError -> 1; ranks say 75
        ({0: 0, 1: 0}, 0, 0, 0, False),
        ({0: 3}, 1, 0, 3, False),  # a bad input: its own code, no requeue loop
        ({}, 137, 1, 75, True),  # killed before any rank wrote, after a USR1
        ({}, 137, 0, 137, False),
    ],
)
def test_exit_status_and_requeue_follow_the_ranks(
    tmp_path, ranks, launcher, preempted, code, requeued
):
    status, calls = _run_tail(tmp_path, ranks, launcher, preempted)
    assert status == code
    assert ("requeue 7" in calls) is requeued


def test_single_gpu_job_has_no_multi_gpu_flag_and_calls_this_interpreter():
    import sys

    text = render_sbatch(SlurmJob(nodes=1, gpus_per_node=1), ["d", "--out", "o"], Path("l"))
    assert "--multi_gpu" not in text and "#SBATCH --partition" not in text
    assert f"exec {sys.executable} -m accelerate" in text


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("48h", "2-00:00:00"),
        ("2-00:00:00", "2-00:00:00"),
        ("36:00:00", "1-12:00:00"),
        ("12:00:00", "12:00:00"),
        ("90m", "01:30:00"),
        ("1d12h", "1-12:00:00"),
        ("2-12", "2-12:00:00"),
        ("3-04:30", "3-04:30:00"),
    ],
)
def test_time_limits_are_normalised(given, normal):
    assert normalise_time(given) == normal


@pytest.mark.parametrize("bad", ["90 minutes", "", "1h\n#SBATCH --x", "60s", "abc"])
def test_bad_time_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="--time"):
        normalise_time(bad)


@pytest.mark.parametrize(
    "field",
    [
        {"partition": "gpu\nrm -rf ~"},
        {"account": "lab; touch /tmp/x"},
        {"qos": "a b"},
        {"constraint": "a100\n"},
        {"exclude": "n1 n2"},
        {"mem": "lots"},
        {"extra": ["--mail-type=END\necho pwned"]},
        {"extra": ["echo pwned"]},
        {"env_setup": "source a\nsource b"},
    ],
)
def test_no_value_can_inject_a_line_into_the_script(field):
    with pytest.raises(ConfigError):
        render_sbatch(SlurmJob(**field), ["d"], Path("l"))


def test_paths_are_quoted_in_the_command():
    text = render_sbatch(SlurmJob(), ["/data/my ds", "--out", "/runs/a'b $(x)"], Path("l"))
    line = _srun(text).removesuffix(" &").replace("exec ", "printf %s@ ")
    fake_srun = 'srun() { while [[ "$1" == --* ]]; do shift; done; "$@"; }\n'
    done = subprocess.run(
        ["bash", "-c", fake_srun + line],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SLURM_NNODES": "1", "SLURM_NODEID": "0"},
    )
    assert done.stdout.endswith("@pretrain@/data/my ds@--out@/runs/a'b $(x)@"), done


def test_submit_without_sbatch_says_where_the_script_is(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InputError, match="sbatch not found"):
        submit(tmp_path / "job.sbatch")


def test_each_rank_records_its_exit_code_for_the_job(tmp_path, monkeypatch):
    from cxrkit.errors import Preempted

    monkeypatch.setenv(launch.EXIT_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(Preempted), launch.exit_record():
        raise Preempted("stop")
    assert (tmp_path / "rank-1").read_text() == "75\n"
    monkeypatch.setenv("RANK", "0")
    with launch.exit_record():
        pass
    assert (tmp_path / "rank-0").read_text() == "0\n"
    assert launch.is_main_process() and launch.global_rank() == 0
    monkeypatch.delenv(launch.EXIT_DIR_ENV)
    assert launch.exit_code_file() is None
