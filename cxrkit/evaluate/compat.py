"""Is the evaluated dataset prepared as the checkpoint's training data was?

Eval letterboxes whatever a dataset stores to the model's input size, so a dataset
ingested smaller than that input (upsampled, blurrier than in training) or with
another percentile intensity window (other contrast) still runs; these checks say
so in metrics.json's warnings instead of leaving the user to find out.
"""

from __future__ import annotations

from pathlib import Path

from cxrkit.artifacts import Artifact, lineage, read_manifest
from cxrkit.errors import ArtifactError

WINDOW_KEYS = ("window_low_pct", "window_high_pct")


def training_dataset_params(checkpoint: Artifact) -> dict | None:
    """Ingest params of the first dataset in the checkpoint's lineage that is still on disk,
    or None (none recorded, or moved away)."""
    try:
        rows = lineage(checkpoint.path)
    except ArtifactError:
        return None
    for row in rows:
        if row["kind"] == "dataset" and row["found"]:
            try:
                return read_manifest(Path(row["path"])).get("params") or {}
            except ArtifactError:
                return None
    return None


def _window(params: dict) -> tuple[float, float] | None:
    values = [params.get(key) for key in WINDOW_KEYS]
    if not all(isinstance(v, int | float) for v in values):
        return None
    return float(values[0]), float(values[1])


def preprocessing_warnings(
    checkpoint: Artifact | None, dataset: Artifact, input_size: int
) -> list[str]:
    """Sentences for metrics.json's warnings; empty when nothing differs or nothing is known.

    Takes the checkpoint artifact (None for an open_clip model: only the size is
    checked), the evaluated dataset and the model's input side in pixels.
    """
    notes = []
    stored = dataset.params.get("image_size")
    if isinstance(stored, int) and stored < input_size:
        notes.append(
            f"{dataset.path} stores images at {stored} px on the long side and the model's "
            f"input is {input_size} px: every image is upsampled, blurrier than in training"
        )
    trained = training_dataset_params(checkpoint) if checkpoint is not None else None
    if trained is None:
        return notes
    here, there = _window(dataset.params), _window(trained)
    if here is not None and there is not None and here != there:
        notes.append(
            f"{dataset.path} was ingested with the intensity window {here[0]:g}-{here[1]:g} % "
            f"and the checkpoint's training data with {there[0]:g}-{there[1]:g} %: image "
            "contrast differs from training"
        )
    return notes
