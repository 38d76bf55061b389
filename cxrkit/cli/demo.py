"""`cxrkit demo`: the whole pipeline on small real data, on CPU, in minutes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cxrkit.cli.common import Force, app, err, guarded, out


@app.command("demo")
@guarded
def demo_command(
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Directory for the demo's inputs and artifacts.")
    ] = Path("demo-out"),
    steps: Annotated[
        int | None, typer.Option(help="Pretraining steps (default: the demo-METHOD preset's).")
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            help="Pretraining method: mae (image only), maco or mmclip (image-report; "
            "zero-shot and retrieval on the training pairs, open_clip export), m3ae "
            "(fused image-report; pairs scored by its ITM head)."
        ),
    ] = "mae",
    seed: Annotated[
        int | None,
        typer.Option(
            help="Seed of the pretraining run (train.seed and data.seed; default: the "
            "preset's): rerun with another seed, into another --out, to see how much a "
            "number moves."
        ),
    ] = None,
    force: Force = False,
) -> None:
    """Run ingest -> annotate -> pretrain -> eval -> export -> ingest-physio -> distill
    on real data shipped by packages.

    Real chest X-rays (16 pediatric JPEGs, one adult DICOM) paired with real IU
    reports of other patients that agree only in label (normal / pneumonia), and a
    real ECG and real serum values assigned to the demo patients (synthetic pairs):
    plumbing, not medicine.
    """
    from cxrkit.stages.demo import DISCLAIMER, run_demo

    err.print(f"[bold]cxrkit demo[/] - {DISCLAIMER}", markup=True)
    summary = run_demo(out_dir, steps=steps, force=force, method=method, seed=seed)
    table = Table(title="demo pipeline", title_justify="left")
    for column in ("stage", "artifact", "id", "note"):
        table.add_column(column, overflow="fold")
    for row in summary:
        table.add_row(row["stage"], row["artifact"], row["id"], row["note"])
    err.print(table)
    if any(row["stage"] == "distill" for row in summary):
        err.print("distill: SYNTHETIC pairs (real ECG/labs assigned to demo patients)")
    out.print(str(out_dir))
