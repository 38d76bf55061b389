"""Builders shared by the export tests: tiny checkpoints on real data, a tiny image-text objective.

No tests here; the other ``test_export_*`` modules import these.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cxrkit.artifacts import Artifact, ArtifactWriter
from cxrkit.config import doc
from cxrkit.models.tower_configs import VisionConfig
from cxrkit.models.vision import build_vision_encoder
from cxrkit.objectives.base import Objective, build_objective, register
from cxrkit.objectives.capabilities import IMAGE_TEXT, OPEN_CLIP
from cxrkit.objectives.loading import save_objective

TINY_VIT = {"arch": "vit_tiny_patch16_224", "image_size": 64, "patch_size": 16, "depth": 2}
TINY_MAE = {"model": TINY_VIT, "decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2}


@dataclasses.dataclass
class TinyClipConfig:
    """A tiny CLIP-style image-text model (test only)."""

    model: VisionConfig = dataclasses.field(default_factory=VisionConfig)
    embed_dim: int = doc("joint embedding width", 16)
    text_width: int = doc("text transformer width", 32)
    text_layers: int = doc("text transformer blocks", 1)
    text_heads: int = doc("text attention heads", 2)
    context_length: int = doc("tokens per text", 16)


@register("test-tiny-clip")
class TinyClip(Objective):
    """Image tower = cxrkit's timm ViT; text tower = open_clip's TextTransformer."""

    Config = TinyClipConfig
    needs = frozenset({"image", "text"})
    image_encoder_prefix = "encoder."
    capabilities = frozenset({IMAGE_TEXT, OPEN_CLIP})

    def __init__(self, config: TinyClipConfig | dict[str, Any]) -> None:
        from open_clip.model import CLIPTextCfg, _build_text_tower

        super().__init__(config)
        cfg: TinyClipConfig = self.cfg
        self.encoder = build_vision_encoder(cfg.model)
        self.image_proj = nn.Linear(self.encoder.embed_dim, cfg.embed_dim, bias=False)
        self.text_cfg = {
            "context_length": cfg.context_length,
            "width": cfg.text_width,
            "heads": cfg.text_heads,
            "layers": cfg.text_layers,
        }
        self.text = _build_text_tower(cfg.embed_dim, CLIPTextCfg(**self.text_cfg))
        self.log_logit_scale = nn.Parameter(torch.tensor(2.5))  # stored as the log, as CLIP

    def image_encoder(self) -> nn.Module:
        return self.encoder

    def text_encoder(self) -> nn.Module:
        return self.text

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_proj(self.encoder(images))  # (B, E)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        import open_clip

        return {"input_ids": open_clip.tokenize(texts, context_length=self.cfg.context_length)}

    def encode_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.text(tokens["input_ids"])  # (B, E)

    def logit_scale(self) -> float:
        return float(self.log_logit_scale.exp())

    def loss(self, batch: dict[str, Any], step: int = 0) -> dict[str, torch.Tensor]:
        image = nn.functional.normalize(self.encode_image(batch["image"]), dim=-1)
        text = nn.functional.normalize(self.encode_text(self.tokenize(batch["text"])), dim=-1)
        logits = self.log_logit_scale.exp() * image @ text.T  # (B, B)
        target = torch.arange(len(logits))
        loss = (
            nn.functional.cross_entropy(logits, target)
            + nn.functional.cross_entropy(logits.T, target)
        ) / 2
        return {"loss": loss}

    def to_open_clip(self, out_dir=None) -> tuple[dict, dict[str, torch.Tensor]]:
        from cxrkit.export.open_clip_format import vit_to_open_clip_visual

        vision_cfg, state = vit_to_open_clip_visual(self.encoder, self.image_proj.weight.T)
        state.update({f"text.{k}": v for k, v in self.text.state_dict().items()})
        state["logit_scale"] = self.log_logit_scale.detach()
        model_cfg = {
            "embed_dim": self.cfg.embed_dim,
            "vision_cfg": vision_cfg,
            "text_cfg": self.text_cfg,
            "custom_text": True,
        }
        return model_cfg, state


def ingest_real_dataset(out: Path, tmp: Path) -> Artifact:
    """A dataset artifact from 3 real pediatric chest X-ray JPEGs (stored at 64 px).

    The salt is fixed (it keys the patient split): a new random salt per run put all three
    patients outside the train split in about 1 run of 125 (0.2 ** 3), and pretraining
    on the dataset then failed with "no images in split 'train'".
    """
    from cxrkit.io import bundled
    from cxrkit.stages import ingest

    salt = tmp / "salt.hex"
    salt.write_text("00" * 32)  # the conftest salt: all three patients in train
    salt.chmod(0o600)
    sources = [str(p) for p in bundled.pediatric_jpegs()[:3]]
    cfg = ingest.IngestConfig(
        sources=sources, out=str(out), salt_file=str(salt), image_size=64, min_size=32
    )
    return ingest.run(cfg)


def pretrain_real_checkpoint(out: Path, dataset: Artifact) -> Artifact:
    """A checkpoint from the real trainer: 2 MAE steps of a tiny ViT on ``dataset``."""
    from cxrkit.config import from_dict
    from cxrkit.stages import pretrain

    objective = {"name": "mae", **{k: v for k, v in TINY_MAE.items() if k != "model"}}
    cfg = from_dict(
        pretrain.PretrainConfig,
        {
            "out": str(out),
            "data": {
                "dataset": str(dataset.path),
                "image_size": 64,
                "batch_size": 2,
                "num_workers": 0,
            },
            "model": TINY_VIT,
            "objective": objective,
            "train": {"max_steps": 2, "precision": "fp32"},
        },
    )
    return pretrain.run(cfg)


def make_checkpoint(out: Path, name: str, config: dict, inputs: list, seed: int = 0) -> Artifact:
    """A checkpoint artifact (layout of the trainer's) holding a randomly initialised objective."""
    torch.manual_seed(seed)
    objective = build_objective(name, config)
    params = {
        "data": {"dataset": str(inputs[0].path) if inputs else None, "image_size": 64},
        "objective": {"name": name, **config},
        "train": {"max_steps": 0},
        "preset": "test-tiny",
    }
    writer = ArtifactWriter(out, "checkpoint", params, inputs=inputs)
    work = writer.begin()
    save_objective(objective, work)
    (work / "metrics.jsonl").write_text(json.dumps({"step": 0, "loss": 1.0}) + "\n")
    return writer.publish(stats={"step": 0, "loss": 1.0})


def make_eval(out: Path, checkpoint: Artifact, metrics: dict) -> Artifact:
    """An eval artifact of ``checkpoint`` with ``metrics.json`` (what `cxrkit eval` writes)."""
    writer = ArtifactWriter(out, "eval", {"task": "probe"}, inputs=[checkpoint])
    work = writer.begin()
    (work / "metrics.json").write_text(json.dumps(metrics))
    return writer.publish()
