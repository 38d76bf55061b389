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


def load(path, device="cpu"):  # noqa: ANN001,ANN201 - the package's one-call entry point
    """Load whatever a directory holds: ``cxrkit.load("runs/mae")``.

    Takes: a checkpoint directory (gives its Objective), an export artifact
    directory (its ``image_encoder/``, after every file hash is checked) or an
    exported encoder directory itself (gives the timm image encoder); both in
    eval mode on ``device``.
    Raises: ArtifactError when the directory is none of these, or its files are
    missing or corrupt.
    """
    from pathlib import Path

    from cxrkit.artifacts import MANIFEST, read_manifest
    from cxrkit.errors import ArtifactError
    from cxrkit.models.checkpoint import CONFIG_FILE, EXPORT_IMAGE_DIR, read_config

    path = Path(path)
    if (path / MANIFEST).is_file() and read_manifest(path).get("kind") == "export":
        from cxrkit.export.native import load_exported_encoder

        return load_exported_encoder(path)[0].to(device)
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
