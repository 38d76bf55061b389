"""Rebuild trained models from checkpoint and export directories, without pickle.

A checkpoint directory holds ``model.safetensors`` (the state_dict of the whole
Objective module) and ``config.json``::

    {"objective": "mae",
     "objective_config": {... resolved, including "model": {VisionConfig fields}},
     "image_encoder_prefix": "encoder.",
     "preprocessing": {"image_size": 224, "in_chans": 1, "mean": 0.5, "std": 0.5,
                       "photometric": "MONOCHROME2 (bright bone)"}}

An exported encoder directory (``image_encoder/`` of an export artifact) holds
the image encoder alone: ``config.json`` with a ``"model"`` table (VisionConfig
fields) and its timm state_dict, without prefix, in ``model.safetensors`` (or
``encoder.safetensors``).
Weights are read with safetensors only; nothing is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cxrkit.artifacts import MANIFEST, read_manifest
from cxrkit.config import from_dict
from cxrkit.errors import ArtifactError, CxrkitError
from cxrkit.models.vision import VisionConfig, build_vision_encoder

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ENCODER_WEIGHTS_FILE = "encoder.safetensors"
EXPORT_IMAGE_DIR = "image_encoder"  # inside an export artifact (cxrkit export)
CXR_MEAN = 0.5
CXR_STD = 0.5
PHOTOMETRIC = "MONOCHROME2 (bright bone)"


def read_config(directory: str | Path) -> dict[str, Any]:
    """Read ``config.json`` of a checkpoint or export dir. Raises ArtifactError."""
    path = Path(directory) / CONFIG_FILE
    if not Path(directory).is_dir():
        raise ArtifactError(f"{directory}: no such checkpoint directory")
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; is {directory} a cxrkit checkpoint or export?")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable ({exc}); the checkpoint is corrupt") from exc
    if not isinstance(config, dict):
        raise ArtifactError(f"{path}: expected a JSON object")
    return config


def read_weights(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors state_dict. Raises ArtifactError when missing or corrupt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ArtifactError(f"{path}: missing weights file")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"{path}: corrupt safetensors file ({exc})") from exc


def _strict_load(module: nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise ArtifactError(
            f"{where}: weights do not fit the model in {CONFIG_FILE} "
            f"({' '.join(first)}); the checkpoint was written by another "
            "model configuration or is damaged"
        ) from exc


def save_objective(objective: nn.Module, directory: str | Path) -> None:
    """Write ``model.safetensors`` and ``config.json`` for an objective (see module doc).

    Takes: a built Objective and an existing directory. The trainer adds its
    own files (metrics, trainer state) next to these.
    """
    from safetensors.torch import save_file

    from cxrkit.config import to_dict

    directory = Path(directory)
    cfg = objective.cfg
    state = {k: v.detach().contiguous().cpu() for k, v in objective.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    model_cfg = getattr(cfg, "model", None)
    config = {
        "objective": objective.name,
        "objective_config": to_dict(cfg),
        "image_encoder_prefix": getattr(objective, "image_encoder_prefix", ""),
        "preprocessing": {
            "image_size": getattr(model_cfg, "image_size", None),
            "in_chans": 1,
            "mean": CXR_MEAN,
            "std": CXR_STD,
            "photometric": PHOTOMETRIC,
        },
    }
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


def load_objective(ckpt_dir: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the Objective saved in a checkpoint directory, weights loaded strictly.

    Returns: the objective in eval mode on ``device``.
    Raises: ArtifactError when config.json or model.safetensors is missing or
    corrupt, names an unknown objective, or the weights do not fit.
    """
    from cxrkit.objectives.base import build_objective

    ckpt_dir = Path(ckpt_dir)
    config = read_config(ckpt_dir)
    name = config.get("objective")
    if not isinstance(name, str) or not isinstance(config.get("objective_config"), dict):
        raise ArtifactError(
            f"{ckpt_dir / CONFIG_FILE}: no 'objective' / 'objective_config'; "
            "not a cxrkit checkpoint"
        )
    try:
        objective = build_objective(name, config["objective_config"])
    except CxrkitError as exc:
        raise ArtifactError(
            f"{ckpt_dir / CONFIG_FILE}: cannot rebuild objective {name!r} ({exc})"
        ) from exc
    _strict_load(objective, read_weights(ckpt_dir / WEIGHTS_FILE), ckpt_dir / WEIGHTS_FILE)
    return objective.to(device).eval()


def _vision_config(table: Any, where: Path) -> VisionConfig:
    if not isinstance(table, dict):
        raise ArtifactError(f"{where}: no 'model' table describing the image encoder")
    try:
        return from_dict(VisionConfig, table, "model")
    except CxrkitError as exc:
        raise ArtifactError(f"{where}: bad 'model' table ({exc})") from exc


def load_image_encoder(
    ckpt_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, VisionConfig]:
    """Rebuild only the image encoder (a timm ViT) of a checkpoint or export directory.

    Reads the ``model`` table of config.json and the encoder's weights (the
    keys under ``image_encoder_prefix`` of a checkpoint; all keys of an export).
    Returns: (encoder in eval mode on ``device``, its VisionConfig).
    Raises: ArtifactError on missing or corrupt files or weights that do not fit.
    """
    ckpt_dir = Path(ckpt_dir)
    config = read_config(ckpt_dir)
    where = ckpt_dir / CONFIG_FILE
    if "objective" in config:
        cfg = _vision_config(config.get("objective_config", {}).get("model"), where)
        prefix = config.get("image_encoder_prefix")
        if not isinstance(prefix, str):
            raise ArtifactError(f"{where}: no 'image_encoder_prefix'")
        weights_path = ckpt_dir / WEIGHTS_FILE
        state = {
            key[len(prefix) :]: value
            for key, value in read_weights(weights_path).items()
            if key.startswith(prefix)
        }
    else:
        cfg = _vision_config(config.get("model"), where)
        weights_path = ckpt_dir / WEIGHTS_FILE
        if not weights_path.is_file() and (ckpt_dir / ENCODER_WEIGHTS_FILE).is_file():
            weights_path = ckpt_dir / ENCODER_WEIGHTS_FILE
        state = read_weights(weights_path)
    try:
        encoder = build_vision_encoder(cfg)
    except CxrkitError as exc:
        raise ArtifactError(f"{where}: cannot build the encoder ({exc})") from exc
    _strict_load(encoder, state, weights_path)
    return encoder.to(device).eval(), cfg


def verified_artifact_root(path: Path) -> Path:
    """The artifact holding ``path`` (itself, or the export around ``image_encoder/``), verified.

    Raises ArtifactError when there is no manifest to check the weights against
    (a folder copied out of an artifact, an artifact whose manifest was deleted),
    when the artifact is not a checkpoint or export, or when it fails verification.
    """
    from cxrkit.artifacts import open_artifact

    root = path
    if not (path / MANIFEST).is_file() and (path.parent / MANIFEST).is_file():
        root = path.parent  # e.g. export/image_encoder
    if not (root / MANIFEST).is_file():
        raise ArtifactError(
            f"{path}: no {MANIFEST} to verify these weights against (a folder copied out of "
            "an artifact, or an artifact whose manifest was deleted); load the whole "
            "artifact directory, or pass verify=False to load unverified weights"
        )
    kind = read_manifest(root).get("kind")
    if kind not in ("checkpoint", "export"):
        raise ArtifactError(f"{root}: a {kind} artifact holds no model to load")
    open_artifact(root, verify_files=True)
    return root


def load(path: str | Path, device: str | torch.device = "cpu", verify: bool = True) -> nn.Module:
    """Load whatever a directory holds: a checkpoint gives its Objective, an export its encoder.

    Takes: a checkpoint artifact directory, an export artifact directory (its
    ``image_encoder/`` is loaded) or the ``image_encoder/`` inside an export. With
    ``verify`` (the default) the artifact's manifest must be there and every file
    hash must match before any weights are read; ``verify=False`` also loads bare
    folders (a run's ``checkpoints/step-N``).
    Raises: ArtifactError when the directory is none of these, fails
    verification, or its files are missing or corrupt.
    """
    path = Path(path)
    if verify:
        verified_artifact_root(path)
    if (path / MANIFEST).is_file() and read_manifest(path).get("kind") == "export":
        # An export artifact: verify every file hash before unpacking any weights.
        from cxrkit.export.native import load_exported_encoder

        return load_exported_encoder(path, verify=False)[0].to(device)  # verified above
    if not (path / CONFIG_FILE).is_file() and (path / EXPORT_IMAGE_DIR / CONFIG_FILE).is_file():
        path = path / EXPORT_IMAGE_DIR
    config = read_config(path)
    if "objective" in config and "model" not in config:
        return load_objective(path, device)
    if "model" in config:
        return load_image_encoder(path, device)[0]
    raise ArtifactError(
        f"{path / CONFIG_FILE}: neither a checkpoint ('objective') nor an exported "
        "encoder ('model'); nothing to load"
    )
