"""`cxrkit ingest-physio`: ECG records and lab tables -> a physio artifact."""

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
    report_local_rejects,
    run_stage,
)


@app.command("ingest-physio")
@guarded
def ingest_physio_command(
    ecg: Annotated[
        list[str] | None,
        typer.Option("--ecg", help="ECG files, directories or globs (WFDB .hea, DICOM .dcm)."),
    ] = None,
    labs: Annotated[
        Path | None,
        typer.Option(
            help="Lab table (CSV/Parquet), long or wide, or MIMIC-IV hosp/labevents.csv(.gz)."
        ),
    ] = None,
    lab_items: Annotated[
        Path | None,
        typer.Option(help="MIMIC-IV d_labitems.csv(.gz) (default: the one beside labevents)."),
    ] = None,
    lab_test: Annotated[
        list[str] | None,
        typer.Option(
            "--lab-test",
            help="labevents: a test to keep, by d_labitems label or itemid (repeat); "
            "default: the 50 with most values.",
        ),
    ] = None,
    ecg_map: Annotated[
        Path | None,
        typer.Option(
            help="CSV path,patient_id[,time] for the ECG files, or MIMIC-IV-ECG's "
            "record_list.csv (without --ecg: the files it lists)."
        ),
    ] = None,
    dataset: Annotated[
        Path | None,
        typer.Option(help="Dataset artifact: its train split decides who fits the lab scaling."),
    ] = None,
    out: OutDir = ...,
    salt_file: Annotated[
        Path | None, typer.Option(help="The salt `cxrkit ingest` used (pseudonyms join).")
    ] = None,
    keep_paths: Annotated[
        bool,
        typer.Option("--keep-paths", help="Store raw input paths.", metavar=FLAG),
    ] = False,
    preset: Preset = None,
    config: ConfigFile = None,
    sets: Sets = None,
    dry_run: DryRun = False,
    force: Force = False,
    as_json: JsonOut = False,
) -> None:
    """ECGs (WFDB/DICOM) + lab panels -> a physio artifact for `cxrkit distill`.

    ECGs are resampled to 500 Hz, cut or padded to 10 s, put in the 12-lead order
    with lead and sample masks, filtered and normalised per lead; labs become
    percentile-scaled values + missing flags (scaling fitted on training patients).
    Patient ids and times are pseudonymised with the salt of `cxrkit ingest`; input
    paths reach the artifact only as salted tokens unless --keep-paths. MIMIC-IV's
    labevents + d_labitems and MIMIC-IV-ECG's record_list.csv are read as they ship;
    their subject_id 10000032 is keyed p10000032, as MIMIC-CXR's folders key it.
    """
    from cxrkit.stages import physio

    flags = {
        "out": str(out),
        "ecg": list(ecg) if ecg else None,
        "labs": str(labs) if labs else None,
        "lab_items": str(lab_items) if lab_items else None,
        "lab_tests": list(lab_test) if lab_test else None,
        "ecg_map": str(ecg_map) if ecg_map else None,
        "dataset": str(dataset) if dataset else None,
        "salt_file": str(salt_file) if salt_file else None,
        "keep_paths": keep_paths or None,
    }
    artifact = run_stage(
        "ingest-physio",
        physio.PhysioConfig,
        physio.run,
        preset=preset,
        config=config,
        sets=sets,
        flags=flags,
        dry_run=dry_run,
        as_json=as_json,
        force=force,
    )
    report_local_rejects(artifact, "rejects")
