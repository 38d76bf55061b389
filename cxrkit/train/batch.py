"""The global batch: images per process x processes x accumulated micro-batches.

Papers state a global batch (MAE: 4096) and a learning rate set for it. A
preset states ``train.global_batch``; cxrkit derives the gradient accumulation
from the world size so the same preset trains at the same global batch on 1
GPU or on 2 nodes x 4 GPUs. The rule: ``global_batch`` must be divisible by
``batch_size x processes``; if it is not, the run stops with a ConfigError
that names the nearest working per-process batch sizes (the learning rate is
never rescaled silently). Without ``train.global_batch`` the old meaning
stands: ``optim.accumulate`` as given, the global batch grows with processes.
"""

from __future__ import annotations

from dataclasses import dataclass

from cxrkit.errors import ConfigError


@dataclass(frozen=True)
class BatchPlan:
    """How one optimiser step's images are spread: per process x processes x accumulate."""

    per_process: int
    processes: int
    accumulate: int

    @property
    def global_batch(self) -> int:
        return self.per_process * self.processes * self.accumulate

    def describe(self) -> str:
        """e.g. ``global batch 4096 = 64 per process x 8 processes x 8 accumulation``."""
        plural = "es" if self.processes != 1 else ""
        return (
            f"global batch {self.global_batch} = {self.per_process} per process x "
            f"{self.processes} process{plural} x {self.accumulate} accumulation"
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "global_batch": self.global_batch,
            "per_process_batch": self.per_process,
            "processes": self.processes,
            "accumulate": self.accumulate,
        }


def plan_batch(
    batch_size: int, processes: int, accumulate: int, global_batch: int | None
) -> BatchPlan:
    """The accumulation that gives ``global_batch`` on ``processes`` processes.

    Takes the per-process micro-batch, the world size, ``optim.accumulate`` and
    ``train.global_batch`` (None = keep ``accumulate``). Returns the BatchPlan.
    Raises ConfigError when the global batch is not a multiple of
    ``batch_size x processes``, or when an explicit ``accumulate`` (not 1)
    contradicts it.
    """
    if batch_size < 1 or processes < 1 or accumulate < 1:
        raise ConfigError("batch size, processes and optim.accumulate must be >= 1")
    if global_batch is None:
        return BatchPlan(batch_size, processes, accumulate)
    per_step = batch_size * processes
    if global_batch < 1 or global_batch % per_step:
        fits = [
            b
            for b in range(1, global_batch // processes + 1)
            if global_batch % (b * processes) == 0
        ]
        near = sorted(fits, key=lambda b: abs(b - batch_size))[:3] if fits else []
        hint = (
            f"; per-process batch sizes that fit: {', '.join(map(str, sorted(near)))}"
            if near
            else f"; it must be a multiple of the {processes} processes"
        )
        raise ConfigError(
            f"train.global_batch {global_batch} is not a multiple of data.batch_size "
            f"{batch_size} x {processes} process(es) = {per_step}{hint} "
            "(or set train.global_batch to a multiple of it)"
        )
    derived = global_batch // per_step
    if accumulate not in (1, derived):
        raise ConfigError(
            f"optim.accumulate {accumulate} contradicts train.global_batch {global_batch} "
            f"({batch_size} per process x {processes} process(es) needs accumulate {derived}); "
            "set only train.global_batch"
        )
    return BatchPlan(batch_size, processes, derived)
