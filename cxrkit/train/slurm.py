"""SLURM submission: an sbatch script that runs `cxrkit pretrain` on N nodes x G GPUs.

Layout of the generated job (DESIGN.md §5; the pattern torchtitan's and other
multi-node scripts use: one launcher task per node, the first host of the
allocation as rendezvous):

- an environment hook (``--env-setup "module load ...; source venv/bin/activate"``)
  runs first; without one the script calls the interpreter that wrote it;
- one task per node (``srun --ntasks-per-node=1``) runs ``accelerate launch``
  with ``--num_machines $SLURM_NNODES --machine_rank $SLURM_NODEID`` and
  ``--main_process_ip`` = the first node of ``$SLURM_JOB_NODELIST``; accelerate
  starts one training process per GPU. The job runs ``cxrkit pretrain DATASET
  --out OUT --config OUT.pretrain.json``: the config resolved and checked on the
  login node, not flags rebuilt by hand;
- ``--signal=B:USR1@120``: SLURM sends USR1 to the batch shell 120 s before the
  time limit; the shell forwards it to the training processes (``scancel
  --signal``), and says it again every few seconds until they exit, because a
  process still starting up (before its handler is installed) ignores it. The
  launcher ignores USR1 so it does not die before its workers have saved;
- the launcher's own status is useless for requeueing (``accelerate launch``
  and ``torchrun`` exit 1 when a child exits 75), so every training process
  writes its exit code into ``$CXRKIT_EXIT_DIR`` (see :mod:`cxrkit.train.launch`)
  and the script requeues (``scontrol requeue``) when one of them says 75;
  the requeued job runs the same command, which resumes from the run directory.

Every value written into the script is checked (no control characters, a
restricted alphabet for ``#SBATCH`` values that cannot be quoted) or quoted
with ``shlex.quote``, so no option can inject a shell line.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cxrkit import __version__
from cxrkit.errors import ConfigError, InputError

SIGNAL_LEAD_S = 120
RESEND_S = 10
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Alphabets of #SBATCH values (sbatch reads these lines itself; nothing can be quoted).
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+(,[A-Za-z0-9_.+-]+)*$")  # partition, account, qos
_HOSTLIST = re.compile(r"^[A-Za-z0-9_.,\[\]-]+$")
_CONSTRAINT = re.compile(r"^[A-Za-z0-9_.,&|*\[\]():!-]+$")
_MEM = re.compile(r"^\d+[KMGT]?$", re.IGNORECASE)
_PATH = re.compile(r"^[^\s\x00-\x1f\x7f]+$")
_EXTRA = re.compile(r"^--?[A-Za-z][A-Za-z0-9-]*(=\S.*)?$")


def normalise_time(value: str) -> str:
    """A SLURM time limit from ``48h``, ``90m``, ``2d``, ``1d12h``, ``2-00:00:00``,
    ``36:00:00`` or ``2-12`` -> ``HH:MM:SS`` (under a day) or ``D-HH:MM:SS``.

    Raises ConfigError for anything else, or for a limit not longer than the
    USR1 warning (SIGNAL_LEAD_S).
    """
    text = str(value).strip().lower()
    seconds: int | None = None
    units = re.fullmatch(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?:in)?)?(?:(\d+)s)?", text)
    clock = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d{1,2}))?(?::(\d{1,2}))?", text)
    if text and units and any(units.groups()):
        d, h, m, s = (int(g or 0) for g in units.groups())
        seconds = ((d * 24 + h) * 60 + m) * 60 + s
    elif clock:
        d, first, second, third = clock.groups()
        if d is not None:  # D-HH[:MM[:SS]]
            seconds = ((int(d) * 24 + int(first)) * 60 + int(second or 0)) * 60 + int(third or 0)
        elif third is not None:  # HH:MM:SS
            seconds = (int(first) * 60 + int(second)) * 60 + int(third)
    if seconds is None:
        raise ConfigError(f"--time {value!r}: use e.g. 48h, 90m, 2d12h, 2-00:00:00 or 36:00:00")
    if seconds <= SIGNAL_LEAD_S:
        raise ConfigError(
            f"--time {value!r}: must be longer than the {SIGNAL_LEAD_S} s checkpoint warning"
        )
    days, rest = divmod(seconds, 86400)
    hms = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{hms}" if days else hms


def _check(option: str, value: str | None, pattern: re.Pattern) -> None:
    if value is None:
        return
    if _CONTROL.search(value) or not pattern.match(value):
        raise ConfigError(
            f"{option} {value!r}: not a value sbatch can take here "
            "(no spaces, newlines or shell characters)"
        )


@dataclass
class SlurmJob:
    """What the sbatch header asks for, and how the job sets up its environment."""

    nodes: int = 1
    gpus_per_node: int = 1
    time: str = "24:00:00"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    exclude: str | None = None
    mem: str | None = None
    cpus_per_task: int | None = None  # default: 8 per GPU (data-loader workers)
    job_name: str = "cxrkit-pretrain"
    main_port: int = 29500
    env_setup: str | None = None
    extra: list[str] = field(default_factory=list)  # more "#SBATCH" options, e.g. --mail-type=END

    def validate(self) -> None:
        """Normalise ``time``; raise ConfigError on values sbatch would refuse or that could
        inject a line into the script."""
        if self.nodes < 1 or self.gpus_per_node < 1:
            raise ConfigError("--nodes and --gpus-per-node must be >= 1")
        if self.cpus_per_task is not None and self.cpus_per_task < 1:
            raise ConfigError("--cpus-per-task must be >= 1")
        if not 1024 <= self.main_port <= 65535:
            raise ConfigError(f"main port {self.main_port}: must be in 1024..65535")
        self.time = normalise_time(self.time)
        for option, value in (
            ("--partition", self.partition),
            ("--account", self.account),
            ("--qos", self.qos),
            ("job name", self.job_name),
        ):
            _check(option, value, _NAME)
        _check("--constraint", self.constraint, _CONSTRAINT)
        _check("--exclude", self.exclude, _HOSTLIST)
        _check("--mem", self.mem, _MEM)
        for line in self.extra:
            if _CONTROL.search(line) or not _EXTRA.match(line):
                raise ConfigError(
                    f"--sbatch {line!r}: give one sbatch option per --sbatch, e.g. "
                    "--sbatch=--mail-type=END (no newlines)"
                )
        if self.env_setup is not None and _CONTROL.search(self.env_setup):
            raise ConfigError(
                "--env-setup: one line of shell (join commands with ';'), no newlines"
            )

    @property
    def num_processes(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def cpus(self) -> int:
        return self.cpus_per_task or 8 * self.gpus_per_node


def _header(job: SlurmJob, log_path: Path) -> list[str]:
    lines = [
        f"#SBATCH --job-name={job.job_name}",
        f"#SBATCH --nodes={job.nodes}",
        "#SBATCH --ntasks-per-node=1          # one launcher per node; it starts one process per GPU",
        f"#SBATCH --gpus-per-node={job.gpus_per_node}",
        f"#SBATCH --cpus-per-task={job.cpus}          # all the node's data-loader workers",
        f"#SBATCH --time={job.time}",
    ]
    for option, value in (
        ("partition", job.partition),
        ("account", job.account),
        ("qos", job.qos),
        ("constraint", job.constraint),
        ("exclude", job.exclude),
        ("mem", job.mem),
    ):
        if value:
            lines.append(f"#SBATCH --{option}={value}")
    lines += [f"#SBATCH {line}" for line in job.extra]
    lines += [
        f"#SBATCH --signal=B:USR1@{SIGNAL_LEAD_S}          # warn this script "
        f"{SIGNAL_LEAD_S} s before the time limit",
        "#SBATCH --requeue                    # allow `scontrol requeue` to restart the job",
        "#SBATCH --open-mode=append           # requeued runs append to the same log",
        f"#SBATCH --output={log_path}",
    ]
    return lines


def render_sbatch(
    job: SlurmJob,
    pretrain_args: list[str],
    log_path: Path,
    python: str | None = None,
    exit_parent: Path | None = None,
) -> str:
    """The sbatch script text.

    Takes the job, the ``cxrkit pretrain`` arguments (everything after
    ``pretrain``), the log path, the Python interpreter (default: ``python``
    after an ``env_setup`` hook, else the current interpreter) and the shared
    folder that gets ``.cxrkit-exit-<job id>/``, where the ranks write their
    exit codes (default: the log's folder). Raises ConfigError for a value that
    cannot go into the script.
    """
    job.validate()
    _check("log path", str(log_path), _PATH)
    if python is None:
        python = "python" if job.env_setup else sys.executable
    exit_dir = shlex.quote(str(exit_parent or Path(log_path).parent)) + "/.cxrkit-exit-"
    launch = [
        python,
        "-m",
        "accelerate.commands.launch",
        "--num_machines",
        "$SLURM_NNODES",
        "--machine_rank",
        "$SLURM_NODEID",
        "--main_process_ip",
        "$MAIN_NODE",
        "--main_process_port",
        "$MAIN_PORT",
        "--num_processes",
        f"$((SLURM_NNODES * {job.gpus_per_node}))",
        "--dynamo_backend",
        "no",
        "--mixed_precision",
        "no",  # cxrkit picks the precision itself (train.precision)
    ]
    if job.num_processes > 1:
        launch.append("--multi_gpu")
    launch += ["-m", "cxrkit.cli", "pretrain", *pretrain_args]
    # Inside single quotes for `bash -c`: $SLURM_NODEID must expand on each node, not here.
    inner = " ".join(a if a.startswith("$") else shlex.quote(a) for a in launch)
    inner = inner.replace("'", "'\"'\"'")
    if job.env_setup:
        env = ["# Environment (--env-setup):", job.env_setup]
    else:
        env = [
            "# No --env-setup given: the interpreter that wrote this script is called by path;",
            "# give --env-setup 'module load ...; source .../bin/activate' on a real cluster.",
        ]
    threads = max(job.cpus // job.gpus_per_node, 1)
    lines = [
        "#!/bin/bash",
        f"# Generated by `cxrkit pretrain --slurm` (cxrkit {__version__}). Submit with: sbatch FILE",
        "# Re-submitting (or the automatic requeue) resumes the run from its directory.",
        *_header(job, log_path),
        "",
        "set -uo pipefail",
        "# Signals first: a USR1 during the environment set-up must not kill this script.",
        "PREEMPTED=0",
        "TERMINATED=0",
        "SRUN_PID=",
        "forward_usr1() {",
        "    # Time is nearly up: tell every training process to checkpoint and exit 75.",
        "    PREEMPTED=1",
        '    if [ -n "$SRUN_PID" ]; then scancel --signal=USR1 "$SLURM_JOB_ID"; fi',
        "}",
        "trap forward_usr1 USR1",
        "trap 'TERMINATED=1' TERM   # scancel/preemption: the ranks save on their own SIGTERM",
        "",
        *env,
        "",
        "export HF_HUB_OFFLINE=1",
        f"export OMP_NUM_THREADS=${{OMP_NUM_THREADS:-{threads}}}",
        "# NCCL: fail fast on a dead peer instead of hanging until the time limit;",
        "# site-specific network settings (NCCL_SOCKET_IFNAME, NCCL_IB_HCA) go in --env-setup.",
        "export TORCH_NCCL_ASYNC_ERROR_HANDLING=1",
        "export NCCL_DEBUG=${NCCL_DEBUG:-WARN}",
        "# Rendezvous: the first node of the allocation hosts the main process.",
        'export MAIN_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f"export MAIN_PORT=${{CXRKIT_MAIN_PORT:-{job.main_port}}}",
        "# Each training process writes its exit code here (the launcher's own status is 1",
        "# whenever a child fails, so it cannot tell a preemption from a crash).",
        f'export CXRKIT_EXIT_DIR={exit_dir}"$SLURM_JOB_ID"',
        'rm -rf "$CXRKIT_EXIT_DIR"; mkdir -p "$CXRKIT_EXIT_DIR"',
        "",
        "STATUS=75",
        'if [ "$PREEMPTED" -eq 0 ]; then',
        "    # The launcher ignores USR1 (so it outlives its workers' checkpoint); the",
        "    # training processes install their own handler.",
        "    srun --ntasks-per-node=1 --kill-on-bad-exit=1 "
        f"bash -c 'trap \"\" USR1; exec {inner}' &",
        "    SRUN_PID=$!",
        '    while kill -0 "$SRUN_PID" 2>/dev/null; do',
        '        if [ "$PREEMPTED" -eq 1 ]; then',
        "            # A process still starting up ignores USR1: say it again until all exit.",
        f"            sleep ${{CXRKIT_USR1_RESEND_S:-{RESEND_S}}}",
        '            kill -0 "$SRUN_PID" 2>/dev/null && scancel --signal=USR1 "$SLURM_JOB_ID"',
        "        else",
        '            wait "$SRUN_PID"   # returns early when a trapped signal arrives',
        "        fi",
        "    done",
        '    wait "$SRUN_PID"; STATUS=$?',
        "fi",
        "",
        "# The ranks' own exit codes outrank the launcher's: any 75 means preempted.",
        'CODES=$(cat "$CXRKIT_EXIT_DIR"/rank-* 2>/dev/null | tr "\\n" " ")',
        'case " $CODES" in',
        '    *" 75 "*) STATUS=75 ;;',
        '    *) for CODE in $CODES; do if [ "$CODE" -ne 0 ]; then STATUS=$CODE; break; fi; done ;;',
        "esac",
        'if [ -z "$CODES" ] && [ "$PREEMPTED" -eq 1 ] && [ "$STATUS" -ne 0 ]; then STATUS=75; fi',
        'rm -rf "$CXRKIT_EXIT_DIR"',
        "",
        'if [ "$STATUS" -eq 75 ] && [ "$TERMINATED" -eq 0 ]; then',
        '    echo "cxrkit: preempted; requeueing job $SLURM_JOB_ID to resume"',
        '    scontrol requeue "$SLURM_JOB_ID"',
        "fi",
        'exit "$STATUS"',
        "",
    ]
    return "\n".join(lines)


def write_sbatch(path: Path, text: str) -> Path:
    """Write the script (executable) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def submit(path: Path) -> str:
    """Run ``sbatch PATH`` and return its job id. Raises InputError when sbatch fails or is absent."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise InputError(
            f"sbatch not found on PATH; the script is ready at {path}: "
            "submit it from a SLURM login node with `sbatch " + str(path) + "`"
        )
    done = subprocess.run(
        [sbatch, "--parsable", str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise InputError(f"sbatch {path} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip().split(";")[0]
