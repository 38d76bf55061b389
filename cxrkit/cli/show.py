"""`cxrkit show`: an artifact's manifest summary, lineage and stats."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cxrkit.cli.common import JsonOut, app, guarded, out, print_json, print_stats_table


@app.command()
@guarded
def show(
    path: Annotated[Path, typer.Argument(help="Artifact directory.")], as_json: JsonOut = False
) -> None:
    """Print an artifact's manifest summary, lineage back to the raw inputs, and stats."""
    from cxrkit.stages import show as show_stage

    m = show_stage.run(path)
    if as_json:
        print_json(m, default=str)
        return
    if m["kind"] == "in-progress":
        _show_runs(path, m["runs"])
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
        setting = f"  ({row['setting']})" if row.get("setting") else ""
        tree.add_row(
            "  " * row["depth"] + row["kind"], row["id"][:12], row["path"] + setting + mark
        )
    out.print(tree)
    print_stats_table("stats", m.get("stats", {}), console=out)
    if m.get("runs_in_progress"):
        _show_runs(path, m["runs_in_progress"], title="build under way beside it")


def _show_runs(path: Path, runs: list[dict], title: str = "not published yet") -> None:
    """A build in progress: step, loss, throughput, ETA and last checkpoint of each run."""
    import datetime as dt

    for run in runs:
        table = Table(show_header=False, title=f"{path}: {title}", title_justify="left")
        owner = run["owner"]
        where = f"pid {owner.get('pid')} on {owner.get('host') or '?'}"
        if owner.get("slurm_job"):
            where += f", SLURM job {owner['slurm_job']}"
        steps = f"{run['step']}" + (f" / {run['max_steps']}" if run.get("max_steps") else "")
        eta = run.get("eta_s")
        rows = [
            ("run directory", run["run_dir"]),
            ("state", f"{run['state']} ({where})"),
            ("step", steps),
            ("loss", f"{run['loss']:.4g}" if run.get("loss") is not None else "-"),
            ("throughput", f"{run['img_per_s']:.1f} img/s" if run.get("img_per_s") else "-"),
            ("ETA", str(dt.timedelta(seconds=eta)) if eta is not None else "-"),
            (
                "last checkpoint",
                f"step {run['last_checkpoint_step']} ({run['last_checkpoint']})"
                if run.get("last_checkpoint")
                else "none yet",
            ),
        ]
        if run.get("updated"):
            stamp = dt.datetime.fromtimestamp(run["updated"]).isoformat(timespec="seconds")
            rows.append(("last update", stamp))
        for key, value in rows:
            table.add_row(key, value)
        out.print(table)
