"""`cxrkit ingest` and `cxrkit ingest-merge`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cxrkit.cli.common import (
    FLAG,
    ConfigFile,
    DryRun,
    Force,
    JsonOut,
    OutDir,
    Preset,
    Sets,
    app,
    guarded,
    report_artifact,
    report_local_rejects,
    run_stage,
)


@app.command("ingest")
@guarded
def ingest_command(
    sources: Annotated[
        list[str] | None, typer.Argument(help="Directories, files or globs of DICOM/PNG/JPEG.")
    ] = None,
    out: OutDir = ...,
    reports: Annotated[
        Path | None, typer.Option(help="MIMIC-CXR report tree, IU XML dir or IU .tgz.")
    ] = None,
    mapping: Annotated[
        Path | None,
        typer.Option(
            help="CSV pairing images with reports: columns image_path and report_path or "
            "report_text; optional study_id, patient_id, view, split, label columns.",
        ),
    ] = None,
    image_size: Annotated[
        int | None, typer.Option(help="Long side of stored images (default 512).")
    ] = None,
    uint16: Annotated[
        bool, typer.Option("--uint16", help="Store 16-bit pixels instead of 8-bit.", metavar=FLAG)
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(help="Decode worker processes (0 = all cores).", min=0),
    ] = None,
    shard_index: Annotated[
        int | None, typer.Option(help="Partition index (default: SLURM_ARRAY_TASK_ID).", min=0)
    ] = None,
    num_shards: Annotated[int | None, typer.Option(help="Number of partitions.", min=1)] = None,
    salt_file: Annotated[
        Path | None, typer.Option(help="Private HMAC salt file (created if absent).")
    ] = None,
    allow_burned_in: Annotated[
        bool,
        typer.Option("--allow-burned-in", help="Keep BurnedInAnnotation=YES images.", metavar=FLAG),
    ] = False,
    keep_paths: Annotated[
        bool, typer.Option("--keep-paths", help="Store raw source paths.", metavar=FLAG)
    ] = False,
    preset: Preset = None,
    config: ConfigFile = None,
    sets: Sets = None,
    dry_run: DryRun = False,
    force: Force = False,
    as_json: JsonOut = False,
) -> None:
    """DICOM/PNG/JPEG chest X-rays + reports -> a dataset artifact (Parquet shards + rejects).

    PHI is stripped: ids become HMAC pseudonyms under your salt, dates are shifted
    per patient, only allow-listed tags are read. Every input ends up in a shard
    or in rejects.parquet. A killed run resumes when re-run with the same command.
    """
    from cxrkit.stages import ingest

    flags = {
        "sources": list(sources) if sources else None,
        "out": str(out),
        "reports": str(reports) if reports else None,
        "mapping": str(mapping) if mapping else None,
        "image_size": image_size,
        "dtype": "uint16" if uint16 else None,
        "workers": workers,
        "shard_index": shard_index,
        "num_shards": num_shards,
        "salt_file": str(salt_file) if salt_file else None,
        "allow_burned_in": allow_burned_in or None,
        "keep_paths": keep_paths or None,
    }
    artifact = run_stage(
        "ingest",
        ingest.IngestConfig,
        ingest.run,
        preset=preset,
        config=config,
        sets=sets,
        flags=flags,
        dry_run=dry_run,
        as_json=as_json,
        force=force,
    )
    report_local_rejects(artifact)


@app.command("ingest-merge")
@guarded
def ingest_merge_command(
    parts: Annotated[list[Path], typer.Argument(help="Partition dataset artifacts (all of them).")],
    out: OutDir = ...,
    force: Force = False,
    as_json: JsonOut = False,
) -> None:
    """Combine the partitions of a partitioned ingest (--num-shards) into one dataset."""
    from cxrkit.stages import ingest

    merged = ingest.merge(parts, out, force=force)
    report_artifact(merged, as_json)
    report_local_rejects(merged)
