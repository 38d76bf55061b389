"""A reconstruction preview for objectives that declare the ``reconstruction`` capability.

One row per image: original | masked input | reconstruction, in display grey
levels (the loader's normalisation undone); the grid is
:func:`cxrkit.vision.reconstruction.panels_grid` of the objective's ``reconstruct``. The caller supplies the
images (and contours, for objectives that mask by them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cxrkit.vision.reconstruction import panels_grid

PREVIEW_IMAGES = 4
PREVIEW_SEED = 0  # fixed masks, so previews of different runs compare


@torch.no_grad()
def write_reconstruction(
    objective: Any,
    images: torch.Tensor,
    path: Path,
    contour: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
) -> Path:
    """Reconstruct ``images`` with fixed masks and save the grid as PNG.

    Takes the objective (declaring the ``reconstruction`` capability:
    ``reconstruct(images, seed, contour) -> (images, masked, reconstruction)``),
    normalised images (B, 1, H, W), the output path, and the matching contour
    masks when the objective uses them. The objective's train/eval mode is
    restored afterwards. Returns the path.
    """
    from PIL import Image

    images = images.to(device)
    was_training = objective.training
    objective.eval()
    _, masked, shown = objective.reconstruct(
        images, PREVIEW_SEED, contour=contour.to(device) if contour is not None else None
    )
    objective.train(was_training)
    grid = panels_grid([images.float(), masked.float(), shown.float()])
    Image.fromarray(grid).save(path)
    return path
