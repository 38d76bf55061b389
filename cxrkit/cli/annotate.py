"""`cxrkit annotate`: dataset -> annotations (entities, labels, contours, prompts)."""

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
    app,
    guarded,
    run_stage,
)


@app.command("annotate")
@guarded
def annotate_command(
    dataset: Annotated[
        Path, typer.Argument(help="Dataset artifact directory (from `cxrkit ingest`).")
    ],
    out: OutDir = ...,
    workers: Annotated[int | None, typer.Option(help="Processes (0 = all cores).")] = None,
    scispacy_model: Annotated[
        str | None,
        typer.Option(
            "--scispacy-model", help="scispaCy model directory or package; merges its NER."
        ),
    ] = None,
    no_contours: Annotated[
        bool, typer.Option("--no-contours", help="Skip chest-contour masks (quality 'none').")
    ] = False,
    preview: Annotated[
        int | None, typer.Option(help="Write preview.png with N images and their contours.")
    ] = None,
    prompts: Annotated[
        Path | None, typer.Option(help="Prompt set JSON replacing the shipped default.")
    ] = None,
    preset: Preset = None,
    config: ConfigFile = None,
    sets: Sets = None,
    dry_run: DryRun = False,
    force: Force = False,
    as_json: JsonOut = False,
) -> None:
    """Dataset -> annotations: clinical entities with negation/uncertainty, 14 CheXpert-style
    labels (1/0/-1/blank), chest-contour masks and the prompt set, one row per image.

    Resumable: a killed run picks up its finished chunks when re-run with the same command.
    """
    from cxrkit.stages import annotate

    flags = {
        "dataset": str(dataset),
        "out": str(out),
        "workers": workers,
        "scispacy_model": scispacy_model,
        "contours": False if no_contours else None,
        "preview": preview,
        "prompts": str(prompts) if prompts else None,
    }
    run_stage(
        "annotate",
        annotate.AnnotateConfig,
        annotate.run,
        preset=preset,
        config=config,
        sets=sets,
        flags=flags,
        dry_run=dry_run,
        as_json=as_json,
        force=force,
    )
