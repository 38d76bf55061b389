"""Symmetric image-text InfoNCE (CLIP, Radford et al. 2021), shared by image-report objectives.

:func:`symmetric_infonce` is the plain loss on N matched pairs;
:func:`gathered_pairs` collects the pairs of every process (with gradient to
each process's own rows) and keeps the valid ones, so a rank whose batch holds
image-only rows can still contrast against every other rank's pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
    from cxrkit.train.distributed import gather_with_grad, is_distributed

    if is_distributed():
        import torch.distributed as dist

        flags = [torch.zeros_like(valid) for _ in range(dist.get_world_size())]
        dist.all_gather(flags, valid.contiguous())
        image, text, valid = gather_with_grad(image), gather_with_grad(text), torch.cat(flags)
    return image[valid], text[valid]
