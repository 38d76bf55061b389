"""SLURM options of `cxrkit pretrain --slurm` and `cxrkit distill --slurm`, defined once.

Both commands hand their training run to the same job writer
(``stages.pretrain.write_slurm_job``), so they take the same options and build
the same :class:`~cxrkit.train.slurm.SlurmJob` from them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from cxrkit.train.slurm import SlurmJob

SLURM_HELP = "SLURM (with --slurm)"

Nodes = Annotated[int, typer.Option(help="Nodes.", rich_help_panel=SLURM_HELP)]
GpusPerNode = Annotated[int, typer.Option(help="GPUs per node.", rich_help_panel=SLURM_HELP)]
Time = Annotated[
    str,
    typer.Option(
        help="Time limit: 48h, 90m, 2d12h, 2-00:00:00 or HH:MM:SS.", rich_help_panel=SLURM_HELP
    ),
]
Partition = Annotated[str | None, typer.Option(help="Partition.", rich_help_panel=SLURM_HELP)]
Account = Annotated[str | None, typer.Option(help="Account.", rich_help_panel=SLURM_HELP)]
Qos = Annotated[str | None, typer.Option(help="Quality of service.", rich_help_panel=SLURM_HELP)]
Constraint = Annotated[
    str | None, typer.Option(help="Node features, e.g. 'a100|h100'.", rich_help_panel=SLURM_HELP)
]
Exclude = Annotated[
    str | None, typer.Option(help="Nodes to avoid, e.g. 'gpu[01-03]'.", rich_help_panel=SLURM_HELP)
]
Mem = Annotated[
    str | None,
    typer.Option(help="Memory per node, e.g. 256G (0 = all).", rich_help_panel=SLURM_HELP),
]
CpusPerTask = Annotated[
    int | None,
    typer.Option(
        help="CPUs per node's task (default 8 per GPU, for data-loader workers).",
        rich_help_panel=SLURM_HELP,
    ),
]
EnvSetup = Annotated[
    str | None,
    typer.Option(
        help="Shell run first in the job, e.g. 'module load cuda; source venv/bin/activate' "
        "(default: call this interpreter by path).",
        rich_help_panel=SLURM_HELP,
    ),
]
SbatchExtra = Annotated[
    list[str] | None,
    typer.Option(
        "--sbatch",
        help="Extra #SBATCH option, e.g. --sbatch=--mail-type=END (repeatable).",
        rich_help_panel=SLURM_HELP,
    ),
]
Submit = Annotated[
    bool,
    typer.Option("--submit", help="Submit the script with sbatch.", rich_help_panel=SLURM_HELP),
]


def slurm_job(
    *,
    nodes: int,
    gpus_per_node: int,
    time: str,
    partition: str | None,
    account: str | None,
    qos: str | None,
    constraint: str | None,
    exclude: str | None,
    mem: str | None,
    cpus_per_task: int | None,
    env_setup: str | None,
    sbatch_extra: list[str] | None,
    **named: str,
) -> SlurmJob:
    """The SlurmJob these options describe (``named`` may set ``job_name``)."""
    from cxrkit.train.slurm import SlurmJob

    return SlurmJob(
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        time=time,
        partition=partition,
        account=account,
        qos=qos,
        constraint=constraint,
        exclude=exclude,
        mem=mem,
        cpus_per_task=cpus_per_task,
        env_setup=env_setup,
        extra=list(sbatch_extra or []),
        **named,
    )
