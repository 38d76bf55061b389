"""`cxrkit pretrain`: a dataset (+ annotations) artifact -> a checkpoint artifact.

With ``--slurm`` it writes (and with ``--submit`` submits) an sbatch script
that runs this same command on every node under ``accelerate launch``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cxrkit.cli.common import (
    ConfigFile,
    DryRun,
    Force,
    JsonOut,
    OutDir,
    Preset,
    Sets,
    Views,
    app,
    err,
    guarded,
    out,
    run_stage,
    views_list,
)
from cxrkit.cli.slurm_options import (
    SLURM_HELP,
    Account,
    Constraint,
    CpusPerTask,
    EnvSetup,
    Exclude,
    GpusPerNode,
    Mem,
    Nodes,
    Partition,
    Qos,
    SbatchExtra,
    Submit,
    Time,
    slurm_job,
)

if TYPE_CHECKING:
    from cxrkit.train.slurm import SlurmJob


@app.command("pretrain")
@guarded
def pretrain_command(
    dataset: Annotated[Path, typer.Argument(help="Dataset artifact (from `cxrkit ingest`).")],
    out_dir: OutDir = ...,
    annotations: Annotated[
        Path | None,
        typer.Option("--annotations", help="Annotations artifact (from `cxrkit annotate`)."),
    ] = None,
    unpaired: Annotated[
        Path | None,
        typer.Option(
            "--unpaired",
            help="Second dataset artifact of image-only rows mixed into every batch "
            "(data.unpaired; how many per batch: --set data.unpaired_per_batch=N).",
        ),
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Optimiser steps (train.max_steps).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Images per process per micro-batch (data.batch_size).")
    ] = None,
    views: Views = None,
    resume: Annotated[
        str | None,
        typer.Option(help="auto (continue OUT's unfinished run) | never | PATH of a checkpoint."),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="auto (bf16 on a CUDA GPU that supports it, else fp32) | bf16 | fp32."),
    ] = None,
    track: Annotated[
        list[str] | None,
        typer.Option(
            help="Also log metrics to tensorboard or wandb (offline), repeatable; "
            "metrics.jsonl is always written (train.track).",
        ),
    ] = None,
    preset: Preset = None,
    config: ConfigFile = None,
    sets: Sets = None,
    dry_run: DryRun = False,
    force: Force = False,
    as_json: JsonOut = False,
    slurm: Annotated[
        bool,
        typer.Option(
            "--slurm",
            help="Write an sbatch script (OUT.sbatch) instead of training here.",
            rich_help_panel=SLURM_HELP,
        ),
    ] = False,
    nodes: Nodes = 1,
    gpus_per_node: GpusPerNode = 1,
    time: Time = "24:00:00",
    partition: Partition = None,
    account: Account = None,
    qos: Qos = None,
    constraint: Constraint = None,
    exclude: Exclude = None,
    mem: Mem = None,
    cpus_per_task: CpusPerTask = None,
    env_setup: EnvSetup = None,
    sbatch_extra: SbatchExtra = None,
    submit: Submit = False,
) -> None:
    """Pretrain an objective (MAE, HD-MAE, ...) on a dataset artifact -> a checkpoint artifact.

    Checkpoints periodically inside OUT.tmp-<pid>; SIGUSR1/SIGTERM save and exit 75,
    and re-running the same command resumes bit for bit. Multi-GPU/multi-node:
    run under `accelerate launch -m cxrkit.cli pretrain ...` or use --slurm.
    """
    from cxrkit.train import launch

    flags = {
        "data.dataset": str(dataset),
        "data.annotations": str(annotations) if annotations else None,
        "data.unpaired": str(unpaired) if unpaired else None,
        "out": str(out_dir),
        "train.max_steps": max_steps,
        "data.batch_size": batch_size,
        "data.views": views_list(views),
        "train.resume": resume,
        "train.precision": precision,
        "train.track": list(track) if track else None,
    }
    if slurm:
        from cxrkit.errors import ConfigError

        if force:
            raise ConfigError(
                "--force does not go into a SLURM job (every requeue would rebuild); "
                "remove OUT first, or choose another --out"
            )

        job = slurm_job(
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
            sbatch_extra=sbatch_extra,
        )
        _write_slurm(job, flags, preset=preset, config=config, sets=sets, submit=submit)
        return
    if submit:
        from cxrkit.errors import ConfigError

        raise ConfigError("--submit only goes with --slurm")
    with launch.exit_record():  # the generated SLURM script reads each rank's exit code
        from cxrkit.stages.noop import pretrain_up_to_date

        run_stage(
            "pretrain",
            _config_class,
            _run,
            preset=preset,
            config=config,
            sets=sets,
            flags={**flags, "preset": preset},  # the config records its preset's name
            dry_run=dry_run,
            as_json=as_json,
            force=force,
            report=launch.is_main_process(),  # the other ranks train quietly
            up_to_date=pretrain_up_to_date,  # decided without torch when certain
        )


def _config_class() -> type:
    from cxrkit.stages.pretrain import PretrainConfig

    return PretrainConfig


def _run(cfg, **kwargs):  # noqa: ANN001, ANN202 - pretrain.run's own signature
    from cxrkit.stages.pretrain import run

    return run(cfg, **kwargs)


def _write_slurm(
    job: SlurmJob,
    flags: dict,
    *,
    preset: str | None,
    config: Path | None,
    sets: list[str] | None,
    submit: bool,
) -> None:
    """Check the config here (fail fast on the login node), then write/submit the script."""
    from cxrkit.config import resolve
    from cxrkit.stages import pretrain
    from cxrkit.train.slurm import submit as sbatch_submit

    if preset:
        flags = {**flags, "preset": preset}
    cfg = resolve(
        pretrain.PretrainConfig,
        preset=preset,
        config_file=config,
        flags=flags,
        sets=sets,
        stage="pretrain",
    )
    files = pretrain.write_slurm_job(cfg, job)
    err.print(f"{files.plan.describe()}")
    err.print(
        f"wrote {files.script} and {files.config.name} "
        f"({job.nodes} node(s) x {job.gpus_per_node} GPU(s))"
    )
    if submit:
        job_id = sbatch_submit(files.script)
        err.print(f"submitted job {job_id}")
        out.print(job_id)
    else:
        out.print(str(files.script))
