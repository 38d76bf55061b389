"""A reconstruction preview for objectives that declare the ``reconstruction`` capability.

One row per image: original | masked input | reconstruction, in display grey
levels (the loader's normalisation undone).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

PREVIEW_IMAGES = 4
PREVIEW_SEED = 0  # fixed masks, so previews of different runs compare


def to_grey(images: torch.Tensor, mean: float = 0.5, std: float = 0.5) -> np.ndarray:
    """Normalised (B, 1, H, W) -> uint8 (B, H, W): x * std + mean, clipped to [0, 1]."""
    pixels = (images.detach().float().cpu()[:, 0] * std + mean).clamp(0.0, 1.0)
    return (pixels * 255.0 + 0.5).to(torch.uint8).numpy()


def reconstruction_grid(
    images: torch.Tensor, reconstruction: torch.Tensor, mask: torch.Tensor, gap: int = 2
) -> np.ndarray:
    """uint8 grid (B rows x 3 columns): original, masked (hidden patches mid-grey), reconstruction
    of the hidden patches with the visible ones pasted back.

    Takes images, reconstruction and mask (1 = hidden), all (B, 1, H, W).
    """
    masked = images * (1 - mask)  # hidden patches become 0, i.e. mid-grey after de-normalising
    # As MAE shows it: predictions for the hidden patches, the visible ones pasted back (the
    # loss never looks at predictions of visible patches, so those are meaningless).
    pasted = reconstruction * mask + images * (1 - mask)
    return panel_grid([images, masked, pasted], gap)


def panel_grid(panels: list[torch.Tensor], gap: int = 2) -> np.ndarray:
    """uint8 grid of B rows, one column per panel (each (B, 1, H, W), normalised)."""
    columns = [to_grey(panel) for panel in panels]
    batch, height, width = columns[0].shape
    count = len(columns)
    grid = np.full((batch * (height + gap) - gap, count * (width + gap) - gap), 255, dtype=np.uint8)
    for row in range(batch):
        for col, tiles in enumerate(columns):
            y, x = row * (height + gap), col * (width + gap)
            grid[y : y + height, x : x + width] = tiles[row]
    return grid


@torch.no_grad()
def write_reconstruction(
    objective: Any, cfg: Any, dataset: Any, path: Path, device: torch.device | str = "cpu"
) -> Path:
    """Reconstruct the first images of the training split and save the grid as PNG.

    Takes the objective (declaring ``reconstruction``: ``reconstruct(images, seed,
    contour) -> (images, masked, reconstruction)``), the PretrainConfig, the dataset artifact
    and the output path. Returns the path.
    """
    from PIL import Image

    from cxrkit.io.shards import ShardDataset, dataset_shards
    from cxrkit.vision.transforms import EvalTransform

    annotations = None
    if cfg.data.annotations:
        annotations = Path(cfg.data.annotations) / "annotations.parquet"
    data = ShardDataset(
        dataset_shards(dataset),
        transform=EvalTransform(cfg.data.image_size),
        batch_size=PREVIEW_IMAGES,
        needs=objective.needs & {"contour"},
        split=cfg.data.split,
        annotations=annotations,
        shuffle=False,
        loop=False,
    )
    batch = next(iter(data))
    images = batch["image"].to(device)
    contour = batch.get("contour")
    was_training = objective.training
    objective.eval()
    _, masked, shown = objective.reconstruct(
        images, PREVIEW_SEED, contour=contour.to(device) if contour is not None else None
    )
    objective.train(was_training)
    grid = panel_grid([images.float(), masked.float(), shown.float()])
    Image.fromarray(grid).save(path)
    return path
