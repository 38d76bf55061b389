"""Contrastive pieces of image-text objectives, checked by hand on tiny tensors.

- :func:`correlation_weight`: MaCo's per-image weight from the visible-patch indicator;
- :func:`maco_contrastive_loss`: MaCo's weighted symmetric InfoNCE (plain InfoNCE when
  the weights are 1);
- :func:`gather_batch`: the batch from every process with gradient, for negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cxrkit.train.distributed import gather_with_grad


def correlation_weight(visible: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """MaCo's correlation weight: w = softplus(aᵀ m + b), one per image.

    Takes: visible (B, L), 1.0 where a patch is visible and 0.0 where hidden, and
    the ``nn.Linear(L, 1)`` holding a (weight) and b (bias).
    Returns: (B,) positive weights.
    """
    return F.softplus(linear(visible.to(linear.weight.dtype))).squeeze(-1)


def maco_contrastive_loss(
    image_vec: torch.Tensor,
    text_vec: torch.Tensor,
    weight: torch.Tensor | None,
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """MaCo's weighted symmetric InfoNCE over N matched image-text pairs.

    Takes: image_vec (N, E), text_vec (N, E) (not yet normalised; pair i matches
    i), weight (N,) per image (None = all ones) and the logit scale τ (plain).
    S = τ · norm(image) · norm(text)ᵀ, (N, N), row i = image i. With target i for row i:

    - CE(w ⊙ S): mean over images of cross-entropy of row i of S multiplied by w_i
      (the weight sharpens or flattens that image's softmax; gradient reaches w);
    - CE(w ⊙ Sᵀ): the same over texts, text row i multiplied by its image's w_i;
    - CE_w(S): cross-entropy of the unscaled rows, averaged with weights w_i
      *detached*: Σ_i w_i·CE_i / Σ_i w_i (torch's class-weighted mean, target i
      has class weight w_i: the code's ``CrossEntropyLoss(weight=w.detach())``);
    - CE_w(Sᵀ): the same for the text rows.

    Returns: the scalar ¼ [CE(w⊙S) + CE(w⊙Sᵀ) + CE_w(S) + CE_w(Sᵀ)], in float32.
    With w ≡ 1 this is twice-counted plain symmetric InfoNCE, i.e. equal to it.
    """
    image = F.normalize(image_vec.float(), dim=-1)
    text = F.normalize(text_vec.float(), dim=-1)
    logits = logit_scale.float() * image @ text.T  # (N, N), rows = images
    targets = torch.arange(logits.shape[0], device=logits.device)
    if weight is None:
        weight = torch.ones(logits.shape[0], device=logits.device)
    w = weight.float()[:, None]  # (N, 1): row i scaled by w_i
    scaled = F.cross_entropy(logits * w, targets) + F.cross_entropy(logits.T * w, targets)
    fixed = weight.detach().float()
    weighted = F.cross_entropy(logits, targets, weight=fixed) + F.cross_entropy(
        logits.T, targets, weight=fixed
    )
    return (scaled + weighted) / 4


def gather_batch(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B, ...) from every process, keeping gradients to each piece.

    Single process: ``x`` itself. Every rank then computes the same full loss; the
    gather's backward sums the ranks' gradients and DDP averages them, which gives
    exactly the single-process gradient of the gathered batch (open_clip's
    ``gather_with_grad``, MaCo's ``GatherLayer``).
    """
    return gather_with_grad(x)
