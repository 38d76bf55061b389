"""The generated sbatch script: resources, rendezvous, signal forwarding, requeue on 75."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cxrkit.errors import ConfigError, InputError
from cxrkit.train.slurm import SlurmJob, render_sbatch, submit, write_sbatch


@pytest.fixture()
def script():
    job = SlurmJob(nodes=2, gpus_per_node=4, time="12:00:00", partition="gpu", account="rad")
    return render_sbatch(
        job,
        ["/data/ds", "--out", "/runs/mae", "--resume", "auto"],
        Path("/runs/mae-%j.log"),
        python="/venv/bin/python",
    )


def test_header_asks_for_nodes_gpus_time_and_early_usr1(script):
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --time=12:00:00",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=rad",
        "#SBATCH --signal=B:USR1@120",
        "#SBATCH --requeue",
        "#SBATCH --output=/runs/mae-%j.log",
    ):
        assert line in script
    assert script.startswith("#!/bin/bash\n")


def test_one_accelerate_launch_per_node_with_slurm_rank_and_first_host(script):
    assert 'MAIN_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in script
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    for part in (
        "--num_machines $SLURM_NNODES",
        "--machine_rank $SLURM_NODEID",
        "--main_process_ip $MAIN_NODE",
        "--main_process_port $MAIN_PORT",
        "--num_processes $((SLURM_NNODES * 4))",
        "--multi_gpu",
        "-m cxrkit.cli pretrain /data/ds --out /runs/mae --resume auto",
    ):
        assert part in srun
    assert "/venv/bin/python -m accelerate.commands.launch" in srun
    assert srun.endswith("' &")  # in the background so the shell can take USR1


def test_usr1_is_forwarded_and_exit_75_requeues(script):
    assert "trap forward_usr1 USR1" in script
    assert 'scancel --signal=USR1 "$SLURM_JOB_ID"' in script
    assert 'if [ "$STATUS" -eq 75 ] || [ "$PREEMPTED" -eq 1 ]; then' in script
    assert 'scontrol requeue "$SLURM_JOB_ID"' in script
    assert "--slurm" not in script.split("#SBATCH --output")[1]


def test_script_is_valid_bash(tmp_path, script):
    import subprocess

    path = write_sbatch(tmp_path / "job.sbatch", script)
    assert os.access(path, os.X_OK)
    assert subprocess.run(["bash", "-n", str(path)], check=False).returncode == 0


def test_single_gpu_job_has_no_multi_gpu_flag():
    text = render_sbatch(SlurmJob(nodes=1, gpus_per_node=1), ["d", "--out", "o"], Path("l"))
    assert "--multi_gpu" not in text and "#SBATCH --partition" not in text


def test_bad_time_is_a_config_error():
    with pytest.raises(ConfigError, match="--time"):
        render_sbatch(SlurmJob(time="90 minutes"), [], Path("l"))


def test_submit_without_sbatch_says_where_the_script_is(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InputError, match="sbatch not found"):
        submit(tmp_path / "job.sbatch")
