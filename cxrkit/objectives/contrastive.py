"""Contrastive pieces of image-text objectives, checked by hand on tiny tensors.

- :func:`symmetric_infonce`: the plain CLIP loss (Radford et al. 2021) on N matched pairs;
- :func:`gathered_pairs`: the valid pairs of every process (with gradient to each
  process's own rows), so a rank whose batch holds image-only rows can still contrast
  against every other rank's pairs;
- :func:`correlation_weight` and :func:`maco_contrastive_loss`: MaCo's per-image weight
  from the visible-patch indicator and its weighted symmetric InfoNCE (plain InfoNCE
  when the weights are 1);
- :func:`gather_batch`: the batch of every process with gradient (MaCo's negatives).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cxrkit.train.distributed import gather_with_grad


def symmetric_infonce(
    image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image-to-text and text-to-image InfoNCE over N pairs (pair i matches i).

    Takes image (N, E) and text (N, E) embeddings (normalised here) and the
    plain logit scale s = 1/σ. S = s · norm(image) norm(text)ᵀ.
    Returns (i2t, t2i): the mean over i of -log softmax(S[i])[i] and of
    -log softmax(Sᵀ[i])[i], in float32.
    """
    image = F.normalize(image.float(), dim=-1)
    text = F.normalize(text.float(), dim=-1)
    logits = image @ text.T * logit_scale  # (N, N), rows = images
    targets = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, targets), F.cross_entropy(logits.T, targets)


def gathered_pairs(
    image: torch.Tensor, text: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The valid (image, text) rows of every process, in rank order.

    Takes image (B, E), text (B, E) (any values in invalid rows) and valid (B,)
    bool; B must be the same on every process. Returns (image (V, E), text (V, E)).
    Single process: the valid rows of the inputs.
    """
    from cxrkit.train.distributed import is_distributed

    if is_distributed():
        import torch.distributed as dist

        flags = [torch.zeros_like(valid) for _ in range(dist.get_world_size())]
        dist.all_gather(flags, valid.contiguous())
        image, text, valid = gather_with_grad(image), gather_with_grad(text), torch.cat(flags)
    return image[valid], text[valid]


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
