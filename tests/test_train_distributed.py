"""Gathered contrastive negatives: 2 real gloo processes equal one process on the whole batch."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from cxrkit.train import distributed

BATCH, DIM_IN, DIM = 3, 5, 4  # per process


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.ModuleDict(
        {"image": torch.nn.Linear(DIM_IN, DIM), "text": torch.nn.Linear(DIM_IN, DIM)}
    )


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(2 * BATCH, DIM_IN, generator=generator)
    texts = torch.randn(2 * BATCH, DIM_IN, generator=generator)
    return images, texts


def _clip_loss(image: torch.Tensor, text: torch.Tensor, local: slice) -> torch.Tensor:
    """Symmetric InfoNCE of the local rows against every gathered column."""
    image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    logits = 10.0 * image[local] @ text.T  # (B, W * B)
    target = torch.arange(local.start, local.stop)
    logits_text = 10.0 * text[local] @ image.T
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits_text, target)) / 2


def _worker(rank: int, rendezvous: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=2)
    try:
        model = _model()
        images, texts = _data()
        mine = slice(rank * BATCH, (rank + 1) * BATCH)
        image = distributed.gather_with_grad(model["image"](images[mine]))  # (2B, D)
        text = distributed.gather_with_grad(model["text"](texts[mine]))
        # Each process scores its own rows; the mean over processes is the global loss.
        loss = _clip_loss(image, text, distributed.local_slice(BATCH))
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        dist.all_reduce(grads)  # DDP's average of the parameter gradients
        total = loss.detach().clone()
        dist.all_reduce(total)
        result = {
            "loss": (total / 2).item(),
            "grads": grads / 2,
            "rank": distributed.rank(),
            "world": distributed.world_size(),
        }
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _spawn_two(tmp_path) -> None:
    """Run ``_worker`` on 2 processes meeting in a file, not on a TCP port: a port found
    free and then closed can be taken by another process before rank 0 listens on it."""
    rendezvous = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_worker, args=(rendezvous, str(tmp_path)), nprocs=2, join=True)


def test_gathered_loss_and_gradients_equal_one_process_on_the_whole_batch(tmp_path):
    model = _model()
    images, texts = _data()
    # One process holding the concatenated batch: every row against every column.
    loss = _clip_loss(model["image"](images), model["text"](texts), slice(0, 2 * BATCH))
    loss.backward()
    expected = torch.cat([p.grad.flatten() for p in model.parameters()])

    _spawn_two(tmp_path)
    for rank in (0, 1):
        out = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert out["rank"] == rank and out["world"] == 2
        assert abs(out["loss"] - loss.item()) < 1e-6
        torch.testing.assert_close(out["grads"], expected, rtol=1e-5, atol=1e-6)


def test_without_a_process_group_gathering_is_the_identity():
    x = torch.randn(3, 2, requires_grad=True)
    assert distributed.gather_with_grad(x) is x
    assert distributed.rank() == 0 and distributed.world_size() == 1
    assert distributed.local_slice(3) == slice(0, 3)
