"""Models as evaluation sees them: an image encoder and, for image-text models, a text encoder.

Two sources:

- a cxrkit checkpoint artifact. Image-only objectives (MAE) give features for the
  probe and fine-tuning. An objective declaring the ``image_text`` capability
  (:mod:`cxrkit.objectives.capabilities`: ``encode_image``, ``tokenize``,
  ``encode_text``, ``logit_scale()`` as a plain multiplier) is an image-text
  model: zero-shot and retrieval use it unchanged; one declaring ``fused_scoring``
  (M3AE) scores image-text pairs itself (:mod:`cxrkit.evaluate.fused`), and the
  probe and fine-tuning use its image tower alone;
- an open_clip model built from a JSON architecture config (``--open-clip-config``),
  random-initialised from the seed or loaded from ``--open-clip-weights``. Never
  fetched from a hub.

Images arrive normalised as cxrkit stores them ((x/max - CXR_MEAN)/CXR_STD, one channel);
open_clip models get them mapped back to [0, 1], repeated to three channels and
normalised with the model's own mean and std.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from cxrkit.artifacts import Artifact, open_artifact
from cxrkit.artifacts.manifest import sha256_file
from cxrkit.errors import ArtifactError, InputError
from cxrkit.objectives.capabilities import FUSED_SCORING, IMAGE_TEXT, ImageText, supports
from cxrkit.vision.normalise import CXR_MEAN, CXR_STD

log = logging.getLogger(__name__)

TEXT_BATCH = 64
CLIP_LOGIT_SCALE = 100.0  # CLIP's learned temperature saturates at 100; used when none is known


@dataclass
class EvalModel:
    """What the evaluation tasks need from a model."""

    key: str  # identity for the feature cache
    description: str
    image_size: int
    encode_images: Callable[[torch.Tensor], torch.Tensor]  # (B, 1, S, S) -> (B, D)
    encode_texts: Callable[[list[str]], torch.Tensor] | None = None  # -> (T, D)
    logit_scale: float = CLIP_LOGIT_SCALE
    image_encoder: nn.Module | None = None  # trainable encoder for fine-tuning
    objective: nn.Module | None = None  # for the reconstruction preview
    # Fused models (capability fused_scoring): (images (B, 1, S, S), texts) -> (B, T) scores.
    score_pairs: Callable[[torch.Tensor, list[str]], torch.Tensor] | None = None
    inputs: list = field(default_factory=list)  # Artifact objects or raw refs for the manifest

    @property
    def has_text(self) -> bool:
        """Separate text embeddings (cosine scoring)."""
        return self.encode_texts is not None

    @property
    def fused(self) -> bool:
        """Pairs scored by the model itself (no separate embeddings)."""
        return self.score_pairs is not None and self.encode_texts is None


def pooled(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Pooled features of a timm encoder built with ``num_classes=0``: (B, D)."""
    out = encoder(images)
    return out.mean(dim=1) if out.ndim == 3 else out  # (B, L, D) -> (B, D) if a head is absent


def load_checkpoint_model(path: str | Path, device: torch.device) -> EvalModel:
    """Wrap a checkpoint artifact. Raises ArtifactError when it is not a loadable checkpoint."""
    from cxrkit.models.checkpoint import read_checkpoint_config
    from cxrkit.objectives.loading import load_objective

    artifact: Artifact = open_artifact(path, kind="checkpoint", verify_files=True)
    config = read_checkpoint_config(artifact.path)
    objective = load_objective(artifact.path, device)
    encoder = objective.image_encoder()
    size = config.image_size
    if not isinstance(size, int):
        raise ArtifactError(f"{artifact.path}/config.json: no preprocessing.image_size")
    name = config.objective
    # The feature cache is keyed by what the features come from: the verified
    # content of the weights and config, not the artifact id (two runs whose ids
    # collide must never share features).
    digests = {f["path"]: f["sha256"] for f in artifact.manifest.get("files", [])}
    model = EvalModel(
        key=f"checkpoint-content:{digests.get('model.safetensors')}:{digests.get('config.json')}",
        description=f"checkpoint {artifact.path} (objective {name})",
        image_size=size,
        encode_images=lambda x: pooled(encoder, x),
        image_encoder=encoder,
        objective=objective,
        inputs=[artifact],
    )
    if supports(objective, IMAGE_TEXT):
        model.encode_images = objective.encode_image
        model.encode_texts = text_encoder_fn(objective, device)
        model.logit_scale = float(objective.logit_scale())
    if supports(objective, FUSED_SCORING):
        from cxrkit.evaluate.fused import pair_scorer

        model.score_pairs = pair_scorer(objective, device)
    return model


def text_encoder_fn(
    objective: ImageText, device: torch.device
) -> Callable[[list[str]], torch.Tensor]:
    """``texts -> (T, D)`` for an ``image_text`` objective: tokenize, move, encode in chunks."""

    def encode_texts(texts: list[str]) -> torch.Tensor:
        chunks = []
        for i in range(0, len(texts), TEXT_BATCH):
            tokens = objective.tokenize(texts[i : i + TEXT_BATCH])
            chunks.append(objective.encode_text({k: v.to(device) for k, v in tokens.items()}))
        return torch.cat(chunks)  # (T, D)

    return encode_texts


def _register_open_clip_config(config_path: Path) -> str:
    """Register a JSON architecture with open_clip under a content-hashed name; returns it."""
    import open_clip

    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{config_path}: unreadable open_clip config ({exc})") from exc
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in config]
    if missing:
        raise InputError(
            f"{config_path}: not an open_clip model config (missing {', '.join(missing)})"
        )
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    name = f"cxrkit-eval-{digest}"
    if name not in open_clip.list_models():
        folder = Path(tempfile.mkdtemp(prefix="cxrkit-openclip-"))
        (folder / f"{name}.json").write_text(json.dumps(config))
        open_clip.add_model_config(folder / f"{name}.json")
    return name


def load_open_clip_model(
    config_path: str | Path, weights: str | Path | None, device: torch.device, seed: int
) -> EvalModel:
    """Build an open_clip model from a JSON config (random init from ``seed`` or ``weights``).

    Raises InputError for an unreadable config or weights file.
    """
    import open_clip

    config_path = Path(config_path)
    name = _register_open_clip_config(config_path)
    torch.manual_seed(seed)  # random init must be reproducible: it is part of the cache key
    model = open_clip.create_model(name, pretrained=None, device="cpu")
    raw = [{"kind": "raw", "id": sha256_file(config_path), "path": str(config_path.resolve())}]
    if weights:
        weights = Path(weights)
        if not weights.is_file():
            raise InputError(f"{weights}: open_clip weights file not found")
        try:
            open_clip.load_checkpoint(model, str(weights))
        except pickle.UnpicklingError as exc:
            raise ArtifactError(
                f"{weights}: refused: holds pickled objects other than tensors (possibly "
                "malicious; nothing was unpickled); use a safetensors or plain state_dict file"
            ) from exc
        except (RuntimeError, OSError, ValueError, KeyError, EOFError) as exc:
            raise InputError(f"{weights}: cannot load into {config_path.name} ({exc})") from exc
        raw.append({"kind": "raw", "id": sha256_file(weights), "path": str(weights.resolve())})
    model = model.to(device).eval()
    tokenizer = open_clip.get_tokenizer(name)
    visual_size = model.visual.image_size
    size = int(visual_size[0] if isinstance(visual_size, tuple | list) else visual_size)
    preprocess = getattr(model.visual, "preprocess_cfg", {}) or {}
    mean = torch.tensor(preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN), device=device)
    std = torch.tensor(preprocess.get("std", open_clip.OPENAI_DATASET_STD), device=device)

    def encode_images(images: torch.Tensor) -> torch.Tensor:
        rgb = (images * CXR_STD + CXR_MEAN).expand(-1, 3, -1, -1)  # (B, 3, S, S) in [0, 1]
        return model.encode_image((rgb - mean[:, None, None]) / std[:, None, None])

    def encode_texts(texts: list[str]) -> torch.Tensor:
        chunks = [
            model.encode_text(tokenizer(texts[i : i + TEXT_BATCH]).to(device))
            for i in range(0, len(texts), TEXT_BATCH)
        ]
        return torch.cat(chunks)  # (T, D)

    weights_id = raw[-1]["id"] if weights else f"random-init-seed-{seed}"
    return EvalModel(
        key=f"open_clip:{raw[0]['id']}:{weights_id}",
        description=f"open_clip {config_path.name} "
        + (f"weights {Path(weights).name}" if weights else f"random init (seed {seed})"),
        image_size=size,
        encode_images=encode_images,
        encode_texts=encode_texts,
        logit_scale=float(model.logit_scale.exp().item()),
        inputs=raw,  # no image_encoder: fine-tuning is for image-only checkpoints
    )
