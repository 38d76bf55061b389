"""`cxrkit show`, `verify`, `presets`: commands that read artifacts and presets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cxrkit.cli.common import JsonOut, app, err, guarded, out, print_stats_table


@app.command()
@guarded
def show(
    path: Annotated[Path, typer.Argument(help="Artifact directory.")], as_json: JsonOut = False
) -> None:
    """Print an artifact's manifest summary, lineage back to the raw inputs, and stats."""
    from cxrkit.artifacts import lineage, open_artifact

    artifact = open_artifact(path, verify_files=False)  # show even a damaged one
    if as_json:
        out.print_json(json.dumps({**artifact.manifest, "lineage": lineage(path)}, default=str))
        return
    m = artifact.manifest
    head = Table(show_header=False, title=f"{m['kind']} artifact {path}", title_justify="left")
    for key in ("id", "format", "created", "cxrkit_version", "git_sha"):
        head.add_row(key, str(m.get(key)))
    head.add_row(
        "files",
        f"{len(m.get('files', []))} ({sum(f['bytes'] for f in m.get('files', [])):,} bytes)",
    )
    out.print(head)
    tree = Table(title="lineage", title_justify="left")
    for col in ("kind", "id", "path"):
        tree.add_column(col)
    for row in lineage(path):
        mark = "" if row["found"] else "  [missing]"
        tree.add_row("  " * row["depth"] + row["kind"], row["id"][:12], row["path"] + mark)
    out.print(tree)
    print_stats_table("stats", m.get("stats", {}), console=out)


@app.command()
@guarded
def verify(path: Annotated[Path, typer.Argument(help="Artifact directory.")]) -> None:
    """Check every file of an artifact against its manifest (hash, size, missing, extra)."""
    from cxrkit.artifacts import verify as verify_artifact
    from cxrkit.errors import ArtifactError

    problems = verify_artifact(path)
    if problems:
        for problem in problems:
            err.print(f"[red]FAIL[/] {path}: {problem}", markup=True)
        raise ArtifactError(f"{path}: {len(problems)} integrity problem(s)")
    out.print(f"OK {path}")


@app.command()
def presets() -> None:
    """List the shipped stage presets."""
    from cxrkit.config import load_preset, preset_names

    table = Table(title="presets (stages/*.toml)", title_justify="left")
    for col in ("name", "stage", "description"):
        table.add_column(col)
    for name in preset_names():
        data = load_preset(name)
        table.add_row(name, str(data.get("stage", "")), str(data.get("description", "")))
    out.print(table)
