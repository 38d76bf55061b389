"""`cxrkit show`: an artifact's manifest summary, lineage and stats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cxrkit.cli.common import JsonOut, app, guarded, out, print_stats_table


@app.command()
@guarded
def show(
    path: Annotated[Path, typer.Argument(help="Artifact directory.")], as_json: JsonOut = False
) -> None:
    """Print an artifact's manifest summary, lineage back to the raw inputs, and stats."""
    from cxrkit.stages import show as show_stage

    m = show_stage.run(path)
    if as_json:
        out.print_json(json.dumps(m, default=str))
        return
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
    for row in m["lineage"]:
        mark = "" if row["found"] else "  [missing]"
        tree.add_row("  " * row["depth"] + row["kind"], row["id"][:12], row["path"] + mark)
    out.print(tree)
    print_stats_table("stats", m.get("stats", {}), console=out)
