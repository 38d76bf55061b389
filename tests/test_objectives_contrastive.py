"""Gathered pairs with image-only rows: 2 gloo processes whose batches hold different numbers
of pairs give the loss and (DDP-averaged) gradients of one process on all the pairs."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cxrkit.objectives.contrastive import gathered_pairs, symmetric_infonce

BATCH, DIM_IN, DIM = 4, 5, 3
VALID = torch.tensor([[True, False, True, True], [False, True, False, False]])  # 3 + 1 pairs


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.ModuleDict(
        {"image": torch.nn.Linear(DIM_IN, DIM), "text": torch.nn.Linear(DIM_IN, DIM)}
    )


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return torch.randn(2 * BATCH, DIM_IN, generator=generator), torch.randn(
        2 * BATCH, DIM_IN, generator=generator
    )


def _loss(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    i2t, t2i = symmetric_infonce(image, text, 5.0)
    return i2t + t2i


def _worker(rank: int, rendezvous: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=2)
    try:
        model = _model()
        images, texts = _data()
        mine = slice(rank * BATCH, (rank + 1) * BATCH)
        image, text = gathered_pairs(
            model["image"](images[mine]), model["text"](texts[mine]), VALID[rank]
        )
        loss = _loss(image, text)  # every process: the loss over all 4 pairs
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        dist.all_reduce(grads)  # DDP's average of the parameter gradients
        torch.save({"loss": loss.item(), "grads": grads / 2, "pairs": image.shape[0]},
                   os.path.join(out_dir, f"rank{rank}.pt"))  # fmt: skip
    finally:
        dist.destroy_process_group()


def _spawn_two(tmp_path) -> None:
    """Run ``_worker`` on 2 processes meeting in a file, not on a TCP port: a port found
    free and then closed can be taken by another process before rank 0 listens on it."""
    rendezvous = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_worker, args=(rendezvous, str(tmp_path)), nprocs=2, join=True)


def test_gathered_pairs_equal_one_process_on_all_pairs(tmp_path):
    model = _model()
    images, texts = _data()
    valid = VALID.flatten()
    loss = _loss(model["image"](images)[valid], model["text"](texts)[valid])
    loss.backward()
    expected = torch.cat([p.grad.flatten() for p in model.parameters()])

    _spawn_two(tmp_path)
    for rank in (0, 1):
        out = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert out["pairs"] == 4
        assert abs(out["loss"] - loss.item()) < 1e-6
        torch.testing.assert_close(out["grads"], expected, rtol=1e-5, atol=1e-6)


def test_one_process_keeps_the_valid_rows():
    image, text = torch.arange(6.0).reshape(3, 2), -torch.arange(6.0).reshape(3, 2)
    kept_image, kept_text = gathered_pairs(image, text, torch.tensor([True, False, True]))
    assert kept_image.tolist() == [[0.0, 1.0], [4.0, 5.0]]
    assert kept_text.tolist() == [[-0.0, -1.0], [-4.0, -5.0]]
