"""Optimiser, learning-rate schedule and EMA weights.

The schedule is a pure function of the optimiser step, so resuming needs only
the step number (saved in the trainer state) to land on the same learning rate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from cxrkit.errors import ConfigError

LR_SCALE = "lr_scale"  # param-group key: this group's lr = schedule(step) * lr_scale


def build_optimizer(
    param_groups: list[dict],
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    fused: bool = False,
    *,
    kind: str = "adamw",
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """AdamW or SGD (with momentum) over the objective's param groups.

    Takes the groups from ``Objective.param_groups(weight_decay)`` (each carries
    its own ``weight_decay`` and optionally ``lr_scale``, default 1.0), the peak
    learning rate, AdamW's betas or SGD's momentum, and ``kind`` ("adamw" |
    "sgd"). Every group's ``lr_scale`` is kept in the group so the schedule
    multiplies it (:func:`set_lr`). Raises ConfigError when no group has a
    parameter, a group's lr_scale is negative, or the kind is unknown.
    """
    groups = []
    for group in param_groups:
        params = list(group["params"])
        if not params:
            continue
        scale = float(group.get(LR_SCALE, 1.0))
        if scale < 0:
            raise ConfigError(f"param group lr_scale must be >= 0, got {scale}")
        groups.append({**group, "params": params, LR_SCALE: scale, "lr": lr * scale})
    if not groups:
        raise ConfigError("the objective has no trainable parameters")
    extra = {"fused": True} if fused else {}
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), **extra)
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, **extra)
    raise ConfigError(f"optim.optimizer {kind!r} is not one of adamw, sgd")


def cosine_lr(step: int, *, lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """Learning rate for optimiser step ``step`` (0-based).

    Linear warmup from lr/warmup_steps to lr over ``warmup_steps`` steps, then a
    half-cosine from lr down to ``min_lr`` at ``max_steps``; ``min_lr`` after that.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def linear_lr(step: int, *, lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """Learning rate for optimiser step ``step`` (0-based) with linear decay.

    The same warmup as :func:`cosine_lr`, then a straight line from lr at
    ``warmup_steps`` to ``min_lr`` at ``max_steps``; ``min_lr`` after that.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return lr + progress * (min_lr - lr)


SCHEDULES = {"cosine": cosine_lr, "linear": linear_lr}


def set_lr(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Set every param group's learning rate to ``value * group["lr_scale"]`` (scale 1 if absent).

    The schedule gives the base rate; a group's multiplier (e.g. 0.1 for a
    pretrained text tower) is kept, never overwritten.
    """
    for group in optimizer.param_groups:
        group["lr"] = value * group.get(LR_SCALE, 1.0)


class EMA:
    """Exponential moving average of a module's floating-point parameters and buffers.

    ``shadow = decay * shadow + (1 - decay) * value`` after every optimiser step.
    """

    def __init__(self, module: nn.Module, decay: float, skip: tuple[str, ...] = ()) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"optim.ema_decay must be in (0, 1) or 0 for off, got {decay}")
        self.decay, self.skip = decay, tuple(skip)  # skip: state_dict prefixes (frozen modules)
        self.shadow = {name: value.detach().clone() for name, value in self._state(module)}

    def _state(self, module: nn.Module) -> Iterable[tuple[str, torch.Tensor]]:
        for name, value in _float_state(module):
            if not (self.skip and name.startswith(self.skip)):
                yield name, value

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for name, value in self._state(module):
            self.shadow[name].lerp_(value.detach(), 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise ValueError(f"EMA state lacks {sorted(missing)[:3]}")
        for name in self.shadow:
            self.shadow[name].copy_(state[name])


def _float_state(module: nn.Module) -> Iterable[tuple[str, torch.Tensor]]:
    for name, value in module.state_dict(keep_vars=True).items():
        if torch.is_floating_point(value):
            yield name, value
