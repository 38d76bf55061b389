"""`cxrkit show`: what an artifact is and where it came from, as one JSON-ready dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxrkit.artifacts import lineage, open_artifact


def run(path: str | Path) -> dict[str, Any]:
    """Read an artifact's manifest and follow its lineage back to the raw inputs.

    Takes: an artifact directory.
    Returns: the manifest's keys plus ``lineage``, one row per ancestor (kind,
    id, path, depth, found), the artifact itself first.
    Raises: ArtifactError when ``path`` holds no readable manifest.
    """
    artifact = open_artifact(path)
    return {**artifact.manifest, "lineage": lineage(path)}
