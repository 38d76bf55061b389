"""The on-disk model format: ``config.json`` + ``model.safetensors``, read and written here only.

A checkpoint directory holds ``model.safetensors`` (the state_dict of the whole
Objective module) and ``config.json``, read into a typed :class:`CheckpointConfig`::

    {"objective": "mae",
     "objective_config": {... resolved, including "model": {VisionConfig fields}},
     "image_encoder_prefix": "encoder.",
     "preprocessing": {"image_size": 224, "in_chans": 1, "mean": 0.5, "std": 0.5,
                       "photometric": "MONOCHROME2 (bright bone)"}}

An exported encoder directory (``image_encoder/`` of an export artifact) holds
the image encoder alone: ``config.json`` with a ``"model"`` table (VisionConfig
fields) and its timm state_dict, without prefix, in ``model.safetensors`` (or
``encoder.safetensors``).

This module knows the files, not the methods: rebuilding an Objective from a
checkpoint needs the objective registry and lives in
:mod:`cxrkit.objectives.loading`. Weights are read with safetensors only;
nothing is unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cxrkit.config import from_dict
from cxrkit.errors import ArtifactError, CxrkitError
from cxrkit.models.tower_configs import VisionConfig
from cxrkit.models.vision import build_vision_encoder
from cxrkit.vision.normalise import CXR_MEAN, CXR_STD

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ENCODER_WEIGHTS_FILE = "encoder.safetensors"
EXPORT_IMAGE_DIR = "image_encoder"  # inside an export artifact (cxrkit export)
PHOTOMETRIC = "MONOCHROME2 (bright bone)"


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How images were prepared for the model: the ``preprocessing`` table of a checkpoint."""

    image_size: int | None = None  # square input side in pixels
    in_chans: int = 1
    mean: float = CXR_MEAN  # (x - mean) / std applied to [0, 1] images
    std: float = CXR_STD
    photometric: str = PHOTOMETRIC

    def to_dict(self) -> dict[str, Any]:
        """The JSON table, keys in the order checkpoints have always stored them."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """The typed ``config.json`` of a checkpoint directory (see the module doc)."""

    objective: str  # registered objective name
    objective_config: dict[str, Any]  # the objective's resolved Config as JSON, with "model"
    image_encoder_prefix: str | None  # state-dict key prefix of the image encoder; None = unknown
    preprocessing: Preprocessing

    @property
    def model(self) -> dict[str, Any]:
        """The ``model`` table (VisionConfig fields) of the objective config; {} when absent."""
        model = self.objective_config.get("model")
        return model if isinstance(model, dict) else {}

    @property
    def image_size(self) -> int | None:
        """The input side: preprocessing.image_size, else the model table's image_size."""
        return self.preprocessing.image_size or self.model.get("image_size")

    def vision_config(self, where: str | Path = CONFIG_FILE) -> VisionConfig:
        """The image encoder's VisionConfig. Raises ArtifactError naming ``where`` when bad."""
        return vision_config(self.objective_config.get("model"), where)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to config.json."""
        return {
            "objective": self.objective,
            "objective_config": self.objective_config,
            "image_encoder_prefix": self.image_encoder_prefix,
            "preprocessing": self.preprocessing.to_dict(),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str | Path) -> CheckpointConfig:
        """Check and type a parsed config.json. Raises ArtifactError naming ``where``."""
        name, objective_config = raw.get("objective"), raw.get("objective_config")
        if not isinstance(name, str) or not isinstance(objective_config, dict):
            raise ArtifactError(
                f"{where}: no 'objective' / 'objective_config'; not a cxrkit checkpoint"
            )
        prefix = raw.get("image_encoder_prefix")
        return cls(
            objective=name,
            objective_config=objective_config,
            image_encoder_prefix=prefix if isinstance(prefix, str) else None,
            preprocessing=_preprocessing(raw.get("preprocessing"), where),
        )


def _preprocessing(table: Any, where: str | Path) -> Preprocessing:
    if table is None:
        return Preprocessing()
    names = {f.name for f in dataclasses.fields(Preprocessing)}
    if not isinstance(table, dict) or not set(table) <= names:
        raise ArtifactError(
            f"{where}: bad 'preprocessing' table {table!r}; expected keys from {sorted(names)}"
        )
    return Preprocessing(**table)


def read_config(directory: str | Path) -> dict[str, Any]:
    """Read ``config.json`` of a checkpoint or export dir as a plain dict. Raises ArtifactError."""
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


def read_checkpoint_config(directory: str | Path) -> CheckpointConfig:
    """Read a checkpoint directory's ``config.json`` into a CheckpointConfig.

    Raises: ArtifactError when it is missing, unreadable or not a checkpoint's config.
    """
    return CheckpointConfig.from_dict(read_config(directory), Path(directory) / CONFIG_FILE)


def write_config(directory: str | Path, config: dict[str, Any]) -> None:
    """Write ``config.json`` (indented JSON and a final newline) into ``directory``."""
    (Path(directory) / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


def write_weights(
    path: str | Path, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Write a state_dict to a safetensors file (tensors must be contiguous, unshared).

    The file gets the mode any other new file gets (0644 under the usual umask);
    safetensors itself creates it 0600.
    """
    from safetensors.torch import save_file

    save_file(state, str(path), metadata=metadata)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


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


def write_checkpoint(
    directory: str | Path, config: CheckpointConfig, state: dict[str, torch.Tensor]
) -> None:
    """Write ``model.safetensors`` and ``config.json`` of a checkpoint into an existing directory.

    Takes: the typed config and the whole objective's state_dict (moved to CPU,
    made contiguous here). The trainer adds its own files next to these.
    """
    directory = Path(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    write_weights(directory / WEIGHTS_FILE, state)
    write_config(directory, config.to_dict())


def strict_load(module: nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    """``load_state_dict(strict=True)``; a mismatch is an ArtifactError naming ``where``."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise ArtifactError(
            f"{where}: weights do not fit the model in {CONFIG_FILE} "
            f"({' '.join(first)}); the checkpoint was written by another "
            "model configuration or is damaged"
        ) from exc


def vision_config(table: Any, where: str | Path) -> VisionConfig:
    """A ``model`` table as VisionConfig. Raises ArtifactError naming ``where`` when bad."""
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
    raw = read_config(ckpt_dir)
    where = ckpt_dir / CONFIG_FILE
    weights_path = ckpt_dir / WEIGHTS_FILE
    if "objective" in raw:
        config = CheckpointConfig.from_dict(raw, where)
        cfg = config.vision_config(where)
        prefix = config.image_encoder_prefix
        if prefix is None:
            raise ArtifactError(f"{where}: no 'image_encoder_prefix'")
        state = {
            key[len(prefix) :]: value
            for key, value in read_weights(weights_path).items()
            if key.startswith(prefix)
        }
    else:
        cfg = vision_config(raw.get("model"), where)
        if not weights_path.is_file() and (ckpt_dir / ENCODER_WEIGHTS_FILE).is_file():
            weights_path = ckpt_dir / ENCODER_WEIGHTS_FILE
        state = read_weights(weights_path)
    try:
        encoder = build_vision_encoder(cfg)
    except CxrkitError as exc:
        raise ArtifactError(f"{where}: cannot build the encoder ({exc})") from exc
    strict_load(encoder, state, weights_path)
    return encoder.to(device).eval(), cfg
