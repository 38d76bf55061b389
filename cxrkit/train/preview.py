"""A reconstruction preview for objectives that offer ``forward_reconstruction``.

One row per image: original | masked input | reconstruction, in display grey
levels (the loader's normalisation undone); the grid is
:func:`cxrkit.vision.reconstruction.reconstruction_grid`. The caller supplies the
images (and contours, for objectives that mask by them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cxrkit.vision.reconstruction import reconstruction_grid

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

    Takes the objective (with ``forward_reconstruction(images, generator, contour)``
    returning (reconstruction, mask)), normalised images (B, 1, H, W), the output
    path, and the matching contour masks when the objective uses them. The
    objective's train/eval mode is restored afterwards. Returns the path.
    """
    from PIL import Image

    images = images.to(device)
    generator = torch.Generator().manual_seed(PREVIEW_SEED)
    was_training = objective.training
    objective.eval()
    reconstruction, mask = objective.forward_reconstruction(
        images, generator=generator, contour=contour.to(device) if contour is not None else None
    )
    objective.train(was_training)
    grid = reconstruction_grid(images.float(), reconstruction.float(), mask.float())
    Image.fromarray(grid).save(path)
    return path
