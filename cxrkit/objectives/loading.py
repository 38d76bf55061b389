"""An Objective to and from a checkpoint directory (the file format is in models.checkpoint).

Saving needs only the objective's name, resolved config and state_dict; loading
needs the objective registry, which is why this lives here and not in
:mod:`cxrkit.models`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cxrkit.config import to_dict
from cxrkit.errors import ArtifactError, CxrkitError
from cxrkit.models.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointConfig,
    Preprocessing,
    read_checkpoint_config,
    read_weights,
    write_checkpoint,
)
from cxrkit.objectives.base import Objective, build_objective


def checkpoint_config(objective: Objective) -> CheckpointConfig:
    """The CheckpointConfig describing a built objective (what :func:`save_objective` writes)."""
    cfg = objective.cfg
    model_cfg = getattr(cfg, "model", None)
    return CheckpointConfig(
        objective=objective.name,
        objective_config=to_dict(cfg),
        image_encoder_prefix=objective.image_encoder_prefix,
        preprocessing=Preprocessing(image_size=getattr(model_cfg, "image_size", None)),
    )


def save_objective(objective: Objective, directory: str | Path) -> None:
    """Write ``model.safetensors`` and ``config.json`` for an objective.

    Takes: a built Objective and an existing directory. The trainer adds its
    own files (metrics, trainer state) next to these. Frozen modules
    (``Objective.frozen_modules``: teachers) are not written: the objective
    rebuilds them from their own source when it is built.
    """
    write_checkpoint(directory, checkpoint_config(objective), objective.trainable_state_dict())


def check_weights_unchanged(ckpt_dir: Path, config: CheckpointConfig) -> None:
    """ArtifactError when weights the checkpoint's config still reads at load (a text
    model folder: its tokenizer and config, M3AE's frozen text tower) now hold other
    content than the training run recorded in the manifest's inputs.

    Weights whose content lives in the checkpoint are no longer named by its config
    (MaCo's ``image_init``...), so only what loading reads is checked. A checkpoint
    without a manifest (a run directory) or written before weights were recorded by
    setting is not checked. Raises InputError for a named path that cannot be read.
    """
    from cxrkit.artifacts.contents import content_digest
    from cxrkit.artifacts.manifest import MANIFEST, read_record
    from cxrkit.objectives.weights import weights_sources

    if (manifest := read_record(ckpt_dir / MANIFEST)) is None:
        return
    inputs = manifest.get("inputs", [])
    if not isinstance(inputs, list):
        return
    recorded = {r["setting"]: r for r in inputs if isinstance(r, dict) and r.get("setting")}
    if not recorded:
        return
    try:
        sources = weights_sources(config.objective, config.objective_config)
    except CxrkitError:
        return  # an unusable config is reported by the build that follows
    for setting, path in sources.items():
        ref = recorded.get(setting)
        if ref is None or not Path(path).expanduser().exists():
            continue  # a missing folder is reported by the build that follows
        now = content_digest(path, setting).sha256
        if now != ref.get("id"):
            raise ArtifactError(
                f"{path}: {setting} holds other files than {ckpt_dir} was trained with "
                f"(sha256 {str(ref.get('id'))[:12]} then, {now[:12]} now); the checkpoint "
                "reads them when loaded: restore them"
            )


def load_objective(ckpt_dir: str | Path, device: str | torch.device = "cpu") -> Objective:
    """Rebuild the Objective saved in a checkpoint directory, trainable weights loaded strictly.

    Returns: the objective in eval mode on ``device``.
    Raises: ArtifactError when config.json or model.safetensors is missing or
    corrupt, names an unknown objective, or the weights do not fit.
    """
    ckpt_dir = Path(ckpt_dir)
    config = read_checkpoint_config(ckpt_dir)
    check_weights_unchanged(ckpt_dir, config)
    try:
        objective = build_objective(config.objective, config.objective_config)
    except CxrkitError as exc:
        raise ArtifactError(
            f"{ckpt_dir / CONFIG_FILE}: cannot rebuild objective {config.objective!r} ({exc})"
        ) from exc
    weights_path = ckpt_dir / WEIGHTS_FILE
    try:  # strict on the trainable part; frozen modules come from their own source
        objective.load_trainable_state_dict(read_weights(weights_path))
    except ArtifactError as exc:
        raise ArtifactError(
            f"{weights_path}: {exc}; the checkpoint was written by another model "
            "configuration or is damaged"
        ) from exc
    return objective.to(device).eval()
