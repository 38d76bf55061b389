"""`cxrkit show`: what an artifact is and where it came from, as one JSON-ready dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxrkit.artifacts import lineage, open_artifact
from cxrkit.errors import ArtifactError


def run(path: str | Path) -> dict[str, Any]:
    """Read an artifact's manifest and follow its lineage back to the raw inputs.

    Takes: an artifact directory.
    Returns: the manifest's keys plus ``lineage``, one row per ancestor (kind,
    id, path, depth, found), the artifact itself first.
    When ``path`` is not published yet but a build is under way (or stopped)
    in ``PATH.tmp-*``, returns ``{"kind": "in-progress", "path", "runs": [...]}``
    with each run's step, loss, throughput, ETA and last checkpoint instead
    (see :func:`cxrkit.train.runs.progress`); a published artifact with a build
    under way beside it gets them as ``runs_in_progress``.
    Raises: ArtifactError when ``path`` holds no readable manifest and no build.
    """
    from cxrkit.train.runs import progress

    try:
        artifact = open_artifact(path, verify_files=False)  # show even a damaged one
    except ArtifactError:
        runs = progress(Path(path)) if not (Path(path) / "manifest.json").exists() else []
        if not runs:
            raise
        return {"kind": "in-progress", "path": str(path), "runs": runs}
    shown = {**artifact.manifest, "lineage": lineage(path)}
    if runs := progress(Path(path)):  # e.g. an extension of this run under way
        shown["runs_in_progress"] = runs
    return shown
