"""A tiny random-init MAE checkpoint artifact for eval tests (image-only, 64 px, depth 1)."""

from __future__ import annotations

from pathlib import Path

import torch

from cxrkit.artifacts import ArtifactWriter

TINY_MAE = {
    "model": {"arch": "vit_tiny_patch16_224", "image_size": 64, "patch_size": 16, "depth": 1},
    "decoder_dim": 32,
    "decoder_depth": 1,
    "decoder_heads": 2,
}


def tiny_mae_checkpoint(root: Path, inputs: list | None = None) -> Path:
    """Publish the checkpoint at ``root / "ckpt"`` (seed 0; ``inputs`` its lineage)."""
    from cxrkit.objectives.base import build_objective
    from cxrkit.objectives.loading import save_objective

    writer = ArtifactWriter(root / "ckpt", "checkpoint", {"t": TINY_MAE}, inputs or [])
    work = writer.begin()
    torch.manual_seed(0)
    save_objective(build_objective("mae", TINY_MAE), work)
    return writer.publish().path
