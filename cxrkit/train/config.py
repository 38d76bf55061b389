"""The trainer's settings: the ``[optim]`` and ``[train]`` sections of a training stage."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from cxrkit.config import doc
from cxrkit.errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class OptimConfig:
    """AdamW or SGD, linear warmup then cosine or linear decay, gradient clipping, optional EMA.

    The objective's parameter groups may carry an ``lr_scale``: the group's
    learning rate is the schedule's value times that multiplier.
    """

    optimizer: Literal["adamw", "sgd"] = doc("adamw | sgd (SGD with momentum)", "adamw")
    schedule: Literal["cosine", "linear"] = doc(
        "decay after warmup: cosine (half-cosine to min_lr) | linear (straight line to min_lr)",
        "cosine",
    )
    lr: float = doc("peak learning rate (per optimiser step, after warmup)", 1.5e-4)
    min_lr: float = doc("learning rate at the end of the cosine decay", 0.0)
    weight_decay: float = doc(
        "AdamW weight decay; never applied to biases, norms, position embeddings and tokens", 0.05
    )
    betas: list[float] = doc("AdamW (beta1, beta2)", [0.9, 0.95])
    momentum: float = doc("SGD momentum (optimizer = sgd only)", 0.9)
    warmup_steps: int = doc("optimiser steps of linear warmup", 0)
    grad_clip: float = doc("clip the global gradient norm to this value; 0 = no clipping", 1.0)
    accumulate: int = doc("micro-batches accumulated per optimiser step", 1)
    ema_decay: float = doc(
        "decay of an exponential moving average of the weights, "
        "published as the final model; 0 = off",
        0.0,
    )

    def validate(self) -> None:
        """Raise ConfigError on values the optimiser cannot use."""
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ConfigError(
                f"optim.lr must be > 0 and 0 <= optim.min_lr <= optim.lr "
                f"(got lr={self.lr}, min_lr={self.min_lr})"
            )
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {self.betas}")
        if self.accumulate < 1 or self.warmup_steps < 0 or self.grad_clip < 0:
            raise ConfigError(
                "optim.accumulate must be >= 1, optim.warmup_steps and optim.grad_clip >= 0"
            )
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"optim.momentum must be in [0, 1), got {self.momentum}")
        if not (self.ema_decay == 0.0 or 0.0 < self.ema_decay < 1.0):
            raise ConfigError(f"optim.ema_decay must be 0 (off) or in (0, 1), got {self.ema_decay}")


@dataclass
class TrainConfig:
    """Length, precision, logging, checkpointing and resume of a training run."""

    max_steps: int = doc("optimiser steps to train for", 1000)
    global_batch: int | None = doc(
        "images per optimiser step over all processes; optim.accumulate is derived from it "
        "and the world size (see cxrkit.train.batch); unset = optim.accumulate as given",
        None,
    )
    precision: str = doc(
        "auto (bf16 on a CUDA GPU that supports it, else fp32) | bf16 | fp32", "auto"
    )
    log_every: int = doc("write a metrics.jsonl line (and a progress line) every N steps", 10)
    checkpoint_every: int = doc("save a resumable checkpoint every N steps (and on stop)", 500)
    compile: bool = doc("torch.compile the model (faster on GPU, slow to start)", False)
    resume: str = doc(
        "auto (continue the unfinished run in OUT if there is one) | never | "
        "PATH of a checkpoint directory",
        "auto",
    )
    seed: int = doc("seed of model init and masking (the loader has its own: data.seed)", 0)
    track: list[str] = doc(
        "experiment trackers fed with every metrics row: tensorboard, wandb (offline); "
        "metrics.jsonl is always written",
        [],
    )
    find_unused_parameters: bool = doc(
        "DDP: look for parameters that got no gradient this step (needed by objectives "
        "whose branches skip some batches; slower)",
        False,
    )

    def validate(self) -> None:
        """Raise ConfigError on impossible values."""
        if self.precision not in PRECISIONS:
            raise ConfigError(f"train.precision {self.precision!r} is not one of {PRECISIONS}")
        if self.max_steps < 1 or self.log_every < 1 or self.checkpoint_every < 1:
            raise ConfigError(
                "train.max_steps, train.log_every and train.checkpoint_every must be >= 1"
            )


def resolve_precision(precision: str) -> str:
    """Accelerate's mixed_precision value for a cxrkit precision setting.

    "auto" picks bf16 only on a CUDA device that supports it: on CPU, bf16
    autocast is slower than fp32 for these models and changes the numbers.
    """
    import torch

    if precision == "fp32":
        return "no"
    if precision == "bf16":
        return "bf16"
    cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return "bf16" if cuda_bf16 else "no"


# Device nodes without which no CUDA (or ROCm) device can be used: NVIDIA's driver,
# Tegra's integrated GPU (Jetson: memory manager, GPU control on older and newer L4T),
# AMD's compute driver, WSL's GPU bridge.
_GPU_DEVICE_NODES = (
    "/proc/driver/nvidia",
    "/dev/nvidiactl",
    "/dev/nvidia0",
    "/dev/nvmap",
    "/dev/nvhost-ctrl-gpu",
    "/dev/nvgpu",
    "/dev/kfd",
    "/dev/dxg",
)


def precision_without_torch(precision: object) -> str | None:
    """What :func:`resolve_precision` would return, where that is certain without
    importing torch: "no" for fp32, "bf16" for bf16, and "no" for auto on a machine
    with no GPU device node (``_GPU_DEVICE_NODES``) or with ``CUDA_VISIBLE_DEVICES``
    naming none. None where only torch can tell (auto with a GPU in sight) or for a
    value that is not a precision."""
    if precision not in PRECISIONS:
        return None
    if precision != "auto":
        return {"fp32": "no", "bf16": "bf16"}[str(precision)]
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1")
    if hidden or not any(os.path.exists(node) for node in _GPU_DEVICE_NODES):
        return "no"
    return None
