"""`cxrkit verify`: check an artifact's files against its manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cxrkit.cli.common import app, err, guarded, out


@app.command()
@guarded
def verify(path: Annotated[Path, typer.Argument(help="Artifact directory.")]) -> None:
    """Check an artifact against its manifest: every file's bytes (sha256, read in full),
    sizes, missing and extra files, paths outside it, required files, stats, checksum."""
    from rich.markup import escape

    from cxrkit.artifacts import verify as verify_artifact
    from cxrkit.errors import ArtifactError

    problems = verify_artifact(path, cached=False)  # read every byte: bit rot keeps ctime
    if problems:
        for problem in problems:
            err.print(f"[red]FAIL[/] {escape(f'{path}: {problem}')}", markup=True)
        raise ArtifactError(f"{path}: {len(problems)} integrity problem(s)")
    out.print(f"OK {path}")
