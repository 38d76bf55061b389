"""`cxrkit distill`: PaCX-MAE — ECG and lab embeddings distilled into an MAE image encoder."""

from __future__ import annotations

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
    views: Views = None,
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
    """Pair images with ECGs and lab panels, train (or load) frozen teachers, and distil them
    into an MAE encoder (LoRA or full) -> an image-only checkpoint for eval and export.

    Training is `cxrkit pretrain`'s run with objective pacx (checkpoints, kill/SIGUSR1
    resume bit for bit, accelerate launch); re-run the same command to resume.
    """
    from cxrkit.train import launch

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
        "data.views": views_list(views),
        "preset": preset,  # recorded by every path (the run's id includes it)
    }
    if slurm:
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
            job_name=f"cxrkit-distill-{Path(out_dir).name}",
        )
        from cxrkit.stages import distill

        _write_slurm(distill, flags, preset, config, sets, force, job, submit)
        return
    if submit:
        from cxrkit.errors import ConfigError

        raise ConfigError("--submit only goes with --slurm")
    with launch.exit_record():  # the generated SLURM script reads each rank's exit code
        run_stage(
            "distill",
            _config_class,
            _run_and_show_coverage,
            preset=preset,
            config=config,
            sets=sets,
            flags=flags,
            dry_run=dry_run,
            as_json=as_json,
            force=force,
            report=launch.is_main_process(),  # the other ranks train quietly
            up_to_date=_up_to_date_with_coverage,  # decided without torch when certain
        )


def _config_class() -> type:
    from cxrkit.stages.distill import DistillConfig

    return DistillConfig


def _run_and_show_coverage(cfg, force: bool = False, request=None):  # noqa: ANN001
    from cxrkit.stages import distill
    from cxrkit.train import launch

    artifact = distill.run(cfg, force=force, request=request)
    if launch.is_main_process():
        note = distill.SYNTHETIC_NOTE if cfg.synthetic_pairs else None
        _show_coverage(distill.work_dir(cfg) / "pairs", note)
    return artifact


def _up_to_date_with_coverage(request):  # noqa: ANN001, ANN202 - a Request, an Artifact or None
    """The torch-free no-op (:func:`cxrkit.stages.noop.distill_up_to_date`), showing the
    pairing coverage as the full path does."""
    from cxrkit.stages.noop import distill_up_to_date

    done = distill_up_to_date(request)
    if done is not None:
        work = request.setting("work") or f"{request.out}.work"  # as distill.work_dir
        _show_coverage(Path(work) / "pairs", done.stats.get("note"))
    return done


def _show_coverage(pairs: Path, note: str | None) -> None:
    """The pairs artifact's coverage table on stderr (nothing when there is none)."""
    import json

    from cxrkit.cli.common import print_stats_table

    if not (pairs / "manifest.json").is_file():
        return
    coverage = json.loads((pairs / "manifest.json").read_text())["stats"]["coverage"]
    title = "pairing coverage (images)" + (f" - {note}" if note else "")
    print_stats_table(title, coverage)


def _write_slurm(distill, flags, preset, config, sets, force, job, submit: bool) -> None:
    """Pairs/teachers/embeddings here, then pretrain's sbatch writer for the training run."""
    from cxrkit.config import resolve
    from cxrkit.stages import pretrain

    cfg = resolve(
        distill.DistillConfig,
        preset=preset,
        config_file=config,
        flags=flags,
        sets=sets,
        stage="distill",
    )
    parts = distill.prepare(cfg, force=force)
    files = pretrain.write_slurm_job(distill.training_config(cfg, parts), job)
    err.print(
        f"wrote {files.script}; after the job, re-run this command without --slurm to "
        "publish the merged image-only checkpoint"
    )
    if submit:
        from cxrkit.train.slurm import submit as sbatch_submit

        out.print(sbatch_submit(files.script))
    else:
        out.print(str(files.script))
