"""The reconstruction preview grid, checked pixel by pixel on a 1-image 2x2 example."""

from __future__ import annotations

import numpy as np
import torch

from cxrkit.vision.reconstruction import reconstruction_grid, to_grey


def test_grey_levels_undo_the_minus_one_to_one_normalisation():
    images = torch.tensor([[[[-1.0, 0.0], [1.0, 3.0]]]])
    assert to_grey(images).tolist() == [[[0, 128], [255, 255]]]


def test_grid_shows_original_masked_and_reconstruction_with_visible_patches_pasted():
    images = torch.tensor([[[[-1.0, 1.0], [1.0, -1.0]]]])  # (1, 1, 2, 2)
    reconstruction = torch.zeros(1, 1, 2, 2)  # mid-grey everywhere
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])  # top-left hidden
    grid = reconstruction_grid(images, reconstruction, mask, gap=1)
    assert grid.shape == (2, 3 * 2 + 2) and grid.dtype == np.uint8
    assert grid[:, 0:2].tolist() == [[0, 255], [255, 0]]  # original
    assert grid[:, 3:5].tolist() == [[128, 255], [255, 0]]  # hidden patch blanked to mid-grey
    assert grid[:, 6:8].tolist() == [[128, 255], [255, 0]]  # prediction only where hidden
    assert grid[:, 2].tolist() == [255, 255]  # white gap between columns
