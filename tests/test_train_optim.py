"""Learning-rate schedule, AdamW param groups and EMA, against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cxrkit.config import from_dict
from cxrkit.errors import ConfigError
from cxrkit.train.config import OptimConfig, TrainConfig, resolve_precision
from cxrkit.train.optim import EMA, build_optimizer, cosine_lr


def test_warmup_is_linear_then_cosine_reaches_min_lr():
    kw = {"lr": 1.0, "min_lr": 0.1, "warmup_steps": 4, "max_steps": 14}
    assert [cosine_lr(s, **kw) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert cosine_lr(4, **kw) == pytest.approx(1.0)  # cosine starts at the peak
    assert cosine_lr(9, **kw) == pytest.approx(0.1 + 0.5 * (1 + math.cos(math.pi * 0.5)) * 0.9)
    assert cosine_lr(9, **kw) == pytest.approx(0.55)
    assert cosine_lr(14, **kw) == 0.1 and cosine_lr(99, **kw) == 0.1


def test_no_weight_decay_on_norms_and_biases():
    model = nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(2))
    groups = [
        {"params": [model[0].weight], "weight_decay": 0.05},
        {"params": [model[0].bias, model[1].weight, model[1].bias], "weight_decay": 0.0},
    ]
    optimizer = build_optimizer(groups, lr=1e-3, betas=(0.9, 0.95))
    decays = [(len(g["params"]), g["weight_decay"]) for g in optimizer.param_groups]
    assert decays == [(1, 0.05), (3, 0.0)]
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.95)


def test_ema_moves_by_one_minus_decay_towards_the_weights():
    layer = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    ema = EMA(layer, decay=0.9)
    with torch.no_grad():
        layer.weight.fill_(3.0)
    ema.update(layer)  # 0.9 * 1 + 0.1 * 3
    assert ema.shadow["weight"].item() == pytest.approx(1.2)


def test_optim_config_rejects_min_lr_above_lr():
    with pytest.raises(ConfigError, match="min_lr"):
        from_dict(OptimConfig, {"lr": 1e-4, "min_lr": 1e-3})


def test_train_config_rejects_unknown_precision():
    with pytest.raises(ConfigError, match="precision"):
        from_dict(TrainConfig, {"precision": "fp16"})


def test_auto_precision_is_fp32_without_a_bf16_gpu():
    expected = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    assert resolve_precision("auto") == expected
    assert resolve_precision("fp32") == "no" and resolve_precision("bf16") == "bf16"
