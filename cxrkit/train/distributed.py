"""Process-group helpers for objectives: rank, world size, and gathering with gradient.

Contrastive objectives need every process's embeddings as negatives. A plain
``all_gather`` cuts the graph: the gathered copies carry no gradient, so the
local embeddings only learn from the local rows of the logits. :func:`gather_with_grad`
keeps the whole graph: its backward sums, over processes, the gradient that
each process's loss sends to every chunk, and hands each process the sum for
its own chunk.

Gradient convention (the one DDP expects). When every process computes the
same loss L over the gathered batch, process r's local embeddings receive
``world_size * dL/dx_r``; DDP then averages parameter gradients over the
processes, which gives exactly dL/dθ of one process holding the whole batch.

On one process (or without an initialised process group) every function is
the identity.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """Whether a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward all-reduces the gradient and keeps this process's slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # noqa: D102
        tensor = tensor.contiguous()
        ctx.rank, ctx.size = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor)
        return torch.cat(parts)  # (W * B, ...)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        # all_reduce works on every backend (gloo has no reduce_scatter).
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.size : (ctx.rank + 1) * ctx.size]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (B, ...) from every process along dim 0, in rank order.

    Takes a tensor with the same shape on every process. Returns (W * B, ...);
    rows ``rank * B : (rank + 1) * B`` are this process's own. Gradients flow
    back to every process's chunk (see the module docstring for the scale).
    Identity on one process.
    """
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)


def local_slice(batch_size: int) -> slice:
    """Rows of this process inside a gathered batch of per-process size ``batch_size``."""
    return slice(rank() * batch_size, (rank() + 1) * batch_size)
