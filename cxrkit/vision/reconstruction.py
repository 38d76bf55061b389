"""Reconstruction previews as pixels: original | masked input | reconstruction.

The one place that decides what a masked-image-modelling preview shows, used by
the pretraining preview (:mod:`cxrkit.train.preview`, a uint8 grid saved as PNG)
and by evaluation's figure (:func:`cxrkit.evaluate.plots.reconstruction_figure`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cxrkit.vision.normalise import CXR_MEAN, CXR_STD


def to_grey(images: torch.Tensor, mean: float = CXR_MEAN, std: float = CXR_STD) -> np.ndarray:
    """Normalised (B, 1, H, W) -> uint8 (B, H, W): x * std + mean, clipped to [0, 1]."""
    pixels = (images.detach().float().cpu()[:, 0] * std + mean).clamp(0.0, 1.0)
    return (pixels * 255.0 + 0.5).to(torch.uint8).numpy()


def reconstruction_panels(
    images: torch.Tensor, reconstruction: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(original, masked, pasted), each (B, 1, H, W) in the model's normalised range.

    Takes images, reconstruction and mask (1 = hidden), all (B, 1, H, W). ``masked``
    has the hidden patches at 0 (mid-grey once de-normalised); ``pasted`` is the
    prediction for the hidden patches with the visible ones pasted back, as MAE
    shows it (the loss never looks at predictions of visible patches, so those
    are meaningless).
    """
    masked = images * (1 - mask)
    pasted = reconstruction * mask + images * (1 - mask)
    return images, masked, pasted


def reconstruction_grid(
    images: torch.Tensor, reconstruction: torch.Tensor, mask: torch.Tensor, gap: int = 2
) -> np.ndarray:
    """uint8 grid (B rows x 3 columns, white ``gap`` between tiles) of
    :func:`reconstruction_panels`: original, masked, reconstruction.

    Takes images, reconstruction and mask (1 = hidden), all (B, 1, H, W).
    """
    return panels_grid(reconstruction_panels(images, reconstruction, mask), gap)


def panels_grid(panels: Sequence[torch.Tensor], gap: int = 2) -> np.ndarray:
    """uint8 grid: one row per image, one column per panel (each (B, 1, H, W), normalised).

    The panels an objective's ``reconstruct`` returns (original, masked,
    reconstruction) give the same grid as :func:`reconstruction_grid`.
    """
    columns = [to_grey(panel) for panel in panels]
    batch, height, width = columns[0].shape
    count = len(columns)
    grid = np.full((batch * (height + gap) - gap, count * (width + gap) - gap), 255, dtype=np.uint8)
    for row in range(batch):
        for col, tiles in enumerate(columns):
            y, x = row * (height + gap), col * (width + gap)
            grid[y : y + height, x : x + width] = tiles[row]
    return grid
