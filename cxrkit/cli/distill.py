"""`cxrkit distill`: PaCX-MAE — ECG and lab embeddings distilled into an MAE image encoder."""

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


@app.command("distill")
@guarded
def distill_command(
    dataset: Annotated[Path, typer.Argument(help="Dataset artifact (from `cxrkit ingest`).")],
    physio: Annotated[
        Path, typer.Option(help="Physio artifact (from `cxrkit ingest-physio`, same salt).")
    ],
    out_dir: OutDir = ...,
    student: Annotated[
        Path | None,
        typer.Option(help="MAE checkpoint artifact to adapt (from `cxrkit pretrain`)."),
    ] = None,
    teachers: Annotated[
        Path | None,
        typer.Option(help="Load these teachers (a teachers artifact) instead of training them."),
    ] = None,
    stage: Annotated[
        str | None,
        typer.Option(help="Stop after: pairs | teachers (+ embeddings) | all (default)."),
    ] = None,
    work: Annotated[
        Path | None, typer.Option(help="Intermediate artifacts (default OUT.work).")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Optimiser steps (train.max_steps).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Images per process per micro-batch (data.batch_size).")
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
            help="Prepare pairs/teachers here, then write the training run's sbatch script.",
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
    """Pair images with ECGs and lab panels, train (or load) frozen teachers, and distil them
    into an MAE encoder (LoRA or full) -> an image-only checkpoint for eval and export.

    Training is `cxrkit pretrain`'s run with objective pacx (checkpoints, kill/SIGUSR1
    resume bit for bit, accelerate launch); re-run the same command to resume.
    """
    from cxrkit.stages import distill

    flags = {
        "dataset": str(dataset),
        "physio": str(physio),
        "out": str(out_dir),
        "student": str(student) if student else None,
        "teachers": str(teachers) if teachers else None,
        "stage": stage,
        "work": str(work) if work else None,
        "train.max_steps": max_steps,
        "data.batch_size": batch_size,
        "preset": preset,  # recorded by every path (the run's id includes it)
    }
    if slurm:
        job = dict(
            nodes=nodes,
            gpus_per_node=gpus_per_node,
            time=time,
            partition=partition,
            account=account,
        )
        _write_slurm(distill, flags, preset, config, sets, force, job, submit)
        return
    if os.environ.get("RANK", "0") != "0":  # a non-main process under accelerate
        from cxrkit.config import resolve

        cfg = resolve(
            distill.DistillConfig,
            preset=preset,
            config_file=config,
            flags=flags,
            sets=sets,
            stage="distill",
        )
        if not dry_run:
            distill.run(cfg, force=force)
        return
    run_stage(
        "distill",
        distill.DistillConfig,
        _run_and_show_coverage,
        preset=preset,
        config=config,
        sets=sets,
        flags=flags,
        dry_run=dry_run,
        as_json=as_json,
        force=force,
    )


def _run_and_show_coverage(cfg, force: bool = False):
    from cxrkit.cli.common import print_stats_table
    from cxrkit.stages import distill

    artifact = distill.run(cfg, force=force)
    pairs = distill.work_dir(cfg) / "pairs"
    if (pairs / "manifest.json").is_file():
        import json

        coverage = json.loads((pairs / "manifest.json").read_text())["stats"]["coverage"]
        title = "pairing coverage (images)"
        if cfg.synthetic_pairs:
            title += f" - {distill.SYNTHETIC_NOTE}"
        print_stats_table(title, coverage)
    return artifact


def _write_slurm(distill, flags, preset, config, sets, force, job: dict, submit: bool) -> None:
    """Pairs/teachers/embeddings here, then pretrain's sbatch writer for the training run."""
    from cxrkit.cli.common import not_built
    from cxrkit.config import resolve
    from cxrkit.stages import pretrain

    writer = getattr(pretrain, "write_slurm_job", None)
    if writer is None:
        not_built(
            "distill --slurm",
            "it hands the training run to `cxrkit pretrain --slurm`'s job writer "
            "(pretrain.write_slurm_job), which this build lacks; run distill under "
            "`accelerate launch` or `srun` instead",
        )
    from cxrkit.train.slurm import SlurmJob

    cfg = resolve(
        distill.DistillConfig,
        preset=preset,
        config_file=config,
        flags=flags,
        sets=sets,
        stage="distill",
    )
    parts = distill.prepare(cfg, force=force)
    slurm_job = SlurmJob(job_name=f"cxrkit-distill-{Path(cfg.out).name}", **job)
    files = writer(distill.training_config(cfg, parts), slurm_job)
    err.print(
        f"wrote {files.script}; after the job, re-run this command without --slurm to "
        "publish the merged image-only checkpoint"
    )
    if submit:
        from cxrkit.train.slurm import submit as sbatch_submit

        out.print(sbatch_submit(files.script))
    else:
        out.print(str(files.script))
