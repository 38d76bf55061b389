"""`cxrkit export`: a checkpoint -> safetensors, timm, open_clip and ONNX, with a model card."""

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


@app.command("export")
@guarded
def export_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint artifact directory.")],
    out: OutDir = ...,
    formats: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="Comma-separated: safetensors,timm,open_clip,onnx (default: all).",
        ),
    ] = None,
    eval_dir: Annotated[
        Path | None,
        typer.Option(
            "--eval", help="Eval artifact of this checkpoint; its metrics go in the card."
        ),
    ] = None,
    onnx_uint8: Annotated[
        bool,
        typer.Option("--onnx-uint8", help="ONNX input as uint8 0..255 (default float [0, 1])."),
    ] = False,
    preset: Preset = None,
    config: ConfigFile = None,
    sets: Sets = None,
    dry_run: DryRun = False,
    force: Force = False,
    as_json: JsonOut = False,
) -> None:
    """Checkpoint -> export artifact: weights for cxrkit/timm/open_clip/ONNX plus a model card.

    Every format is loaded back and compared with the cxrkit model before the
    artifact is published; the max abs difference of each is in the manifest
    stats. A format that cannot apply (open_clip for an image-only MAE) is
    skipped with the reason. Weights are safetensors; nothing is pickled.
    """
    from cxrkit.stages import export

    flags = {
        "checkpoint": str(checkpoint),
        "out": str(out),
        "formats": formats,
        "eval": str(eval_dir) if eval_dir else None,
        "onnx_input_dtype": "uint8" if onnx_uint8 else None,
    }
    run_stage(
        "export",
        export.ExportConfig,
        export.run,
        preset=preset,
        config=config,
        sets=sets,
        flags=flags,
        dry_run=dry_run,
        as_json=as_json,
        force=force,
    )
