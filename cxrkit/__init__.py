"""cxrkit: pretrain and evaluate chest X-ray vision-language foundation models.

Each pipeline stage is a plain function over versioned on-disk artifacts
(``cxrkit.stages.<name>.run``); the ``cxrkit`` command line is a thin layer over
them.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cxrkit")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]


def load(path, device="cpu", verify=True):  # noqa: ANN001,ANN201 - the one-call entry point
    """Load whatever a directory holds: ``cxrkit.load("runs/mae")``.

    Takes: a checkpoint artifact directory (gives its Objective), an export
    artifact directory or the ``image_encoder/`` inside one (gives the timm image
    encoder); both in eval mode on ``device``. With ``verify`` (the default) the
    artifact's manifest must be there and every file hash must match before any
    weights are read; ``verify=False`` also loads bare folders (a run's
    ``checkpoints/step-N``, an encoder copied out of its export).
    Raises: ArtifactError when the directory is none of these, fails
    verification, or its files are missing or corrupt.
    """
    from pathlib import Path

    from cxrkit.artifacts import MANIFEST, read_manifest, verify_model_artifact
    from cxrkit.errors import ArtifactError
    from cxrkit.models.checkpoint import CONFIG_FILE, EXPORT_IMAGE_DIR, read_config

    path = Path(path)
    if verify:
        verify_model_artifact(path)
    if (path / MANIFEST).is_file() and read_manifest(path).get("kind") == "export":
        from cxrkit.export.native import load_exported_encoder

        return load_exported_encoder(path, verify=False)[0].to(device)  # verified above
    if not (path / CONFIG_FILE).is_file() and (path / EXPORT_IMAGE_DIR / CONFIG_FILE).is_file():
        path = path / EXPORT_IMAGE_DIR
    config = read_config(path)
    if "objective" in config and "model" not in config:
        from cxrkit.objectives.loading import load_objective

        return load_objective(path, device)
    if "model" in config:
        from cxrkit.models.checkpoint import load_image_encoder

        return load_image_encoder(path, device)[0]
    raise ArtifactError(
        f"{path / CONFIG_FILE}: neither a checkpoint ('objective') nor an exported "
        "encoder ('model'); nothing to load"
    )


__all__ += ["load"]
