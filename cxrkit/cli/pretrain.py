"""`cxrkit pretrain`: a dataset (+ annotations) artifact -> a checkpoint artifact.

With ``--slurm`` it writes (and with ``--submit`` submits) an sbatch script
that runs this same command on every node under ``accelerate launch``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from cxrkit.cli.common import (
    ConfigFile,
    DryRun,
    Force,
    JsonOut,
    OutDir,
    Preset,
    Sets,
    app,
    err,
    guarded,
    out,
    run_stage,
)

SLURM_HELP = "SLURM (with --slurm)"


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
    resume: Annotated[
        str | None,
        typer.Option(help="auto (continue OUT's unfinished run) | never | PATH of a checkpoint."),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="auto (bf16 on a CUDA GPU that supports it, else fp32) | bf16 | fp32."),
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
    nodes: Annotated[int, typer.Option(help="Nodes.", rich_help_panel=SLURM_HELP)] = 1,
    gpus_per_node: Annotated[
        int, typer.Option(help="GPUs per node.", rich_help_panel=SLURM_HELP)
    ] = 1,
    time: Annotated[
        str, typer.Option(help="Time limit HH:MM:SS.", rich_help_panel=SLURM_HELP)
    ] = "24:00:00",
    partition: Annotated[
        str | None, typer.Option(help="Partition.", rich_help_panel=SLURM_HELP)
    ] = None,
    account: Annotated[
        str | None, typer.Option(help="Account.", rich_help_panel=SLURM_HELP)
    ] = None,
    submit: Annotated[
        bool,
        typer.Option("--submit", help="Submit the script with sbatch.", rich_help_panel=SLURM_HELP),
    ] = False,
) -> None:
    """Pretrain an objective (MAE, HD-MAE, ...) on a dataset artifact -> a checkpoint artifact.

    Checkpoints periodically inside OUT.tmp-<pid>; SIGUSR1/SIGTERM save and exit 75,
    and re-running the same command resumes bit for bit. Multi-GPU/multi-node:
    run under `accelerate launch -m cxrkit.cli pretrain ...` or use --slurm.
    """
    from cxrkit.stages import pretrain

    flags = {
        "data.dataset": str(dataset),
        "data.annotations": str(annotations) if annotations else None,
        "data.unpaired": str(unpaired) if unpaired else None,
        "out": str(out_dir),
        "train.max_steps": max_steps,
        "data.batch_size": batch_size,
        "train.resume": resume,
        "train.precision": precision,
    }
    if slurm:
        _write_slurm(
            pretrain.PretrainConfig,
            flags,
            preset=preset,
            config=config,
            sets=sets,
            force=force,
            job=dict(
                nodes=nodes,
                gpus_per_node=gpus_per_node,
                time=time,
                partition=partition,
                account=account,
            ),
            submit=submit,
        )
        return
    if submit:
        from cxrkit.errors import ConfigError

        raise ConfigError("--submit only goes with --slurm")
    if os.environ.get("RANK", "0") != "0":  # a non-main process under accelerate: train, stay quiet
        from cxrkit.config import resolve

        cfg = resolve(
            pretrain.PretrainConfig,
            preset=preset,
            config_file=config,
            flags=flags,
            sets=sets,
            stage="pretrain",
        )
        if not dry_run:
            pretrain.run(cfg, force=force)
        return
    run_stage(
        "pretrain",
        pretrain.PretrainConfig,
        pretrain.run,
        preset=preset,
        config=config,
        sets=sets,
        flags=flags,
        dry_run=dry_run,
        as_json=as_json,
        force=force,
    )


def _write_slurm(
    cfg_cls: type,
    flags: dict,
    *,
    preset: str | None,
    config: Path | None,
    sets: list[str] | None,
    force: bool,
    job: dict,
    submit: bool,
) -> None:
    """Check the config here (fail fast on the login node), then write/submit the script."""
    from cxrkit.config import resolve
    from cxrkit.train.slurm import SlurmJob, render_sbatch, write_sbatch
    from cxrkit.train.slurm import submit as sbatch_submit

    resolve(cfg_cls, preset=preset, config_file=config, flags=flags, sets=sets, stage="pretrain")
    out_path = Path(flags["out"]).resolve()
    args = [str(Path(flags["data.dataset"]).resolve()), "--out", str(out_path)]
    if flags["data.annotations"]:
        args += ["--annotations", str(Path(flags["data.annotations"]).resolve())]
    if flags.get("data.unpaired"):
        args += ["--unpaired", str(Path(flags["data.unpaired"]).resolve())]
    for option, key in (
        ("--max-steps", "train.max_steps"),
        ("--batch-size", "data.batch_size"),
        ("--precision", "train.precision"),
    ):
        if flags[key] is not None:
            args += [option, str(flags[key])]
    args += ["--resume", flags["train.resume"] or "auto"]
    if preset:
        args += ["--preset", str(Path(preset).resolve()) if preset.endswith(".toml") else preset]
    if config:
        args += ["--config", str(Path(config).resolve())]
    for item in sets or []:
        args += ["--set", item]
    if force:
        args.append("--force")
    slurm_job = SlurmJob(job_name=f"cxrkit-pretrain-{out_path.name}", **job)
    script = write_sbatch(
        out_path.parent / f"{out_path.name}.sbatch",
        render_sbatch(slurm_job, args, out_path.parent / f"{out_path.name}-%j.log"),
    )
    err.print(f"wrote {script} ({slurm_job.nodes} node(s) x {slurm_job.gpus_per_node} GPU(s))")
    if submit:
        job_id = sbatch_submit(script)
        err.print(f"submitted job {job_id}")
        out.print(job_id)
    else:
        out.print(str(script))
