"""The objective protocol as the trainer sees it: lr multipliers, schedules, SGD, step, frozen parts."""

from __future__ import annotations

import pytest
import torch
from pretrain_support import SquareTransform, write_dataset
from torch import nn

from cxrkit.errors import ConfigError
from cxrkit.io.dataset import dataset_shards
from cxrkit.io.shards import ShardDataset, make_loader
from cxrkit.objectives.base import Objective, register
from cxrkit.train import checkpoint as ckpt
from cxrkit.train.config import OptimConfig, TrainConfig
from cxrkit.train.loop import Trainer, to_device
from cxrkit.train.optim import build_optimizer, linear_lr, set_lr


@register("test-frozen-teacher")
class TeacherStudent(Objective):
    """A student regressing a frozen teacher's features; the head learns 10x slower."""

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        self.student = nn.Sequential(nn.Conv2d(1, 4, 8, 8), nn.Dropout(0.5))
        self.head = nn.Linear(4, 4)
        self.teacher = nn.Sequential(nn.Conv2d(1, 4, 8, 8), nn.Dropout(0.5))
        self.steps_seen: list[int] = []

    def image_encoder(self) -> nn.Module:
        return self.student

    def frozen_modules(self) -> dict[str, nn.Module]:
        return {"teacher": self.teacher}

    def param_groups(self, weight_decay: float) -> list[dict]:
        return [
            {"params": list(self.student.parameters()), "weight_decay": weight_decay},
            {"params": list(self.head.parameters()), "weight_decay": 0.0, "lr_scale": 0.1},
        ]

    def loss(self, batch: dict, step: int = 0) -> dict[str, torch.Tensor]:
        self.steps_seen.append(step)
        student = self.head(self.student(batch["image"]).mean((2, 3)))  # (B, 4)
        with torch.no_grad():
            target = self.teacher(batch["image"]).mean((2, 3))
        return {"loss": ((student - target) ** 2).mean()}


def test_linear_schedule_warms_up_then_falls_in_a_straight_line():
    kw = {"lr": 1.0, "min_lr": 0.2, "warmup_steps": 2, "max_steps": 6}
    values = [linear_lr(s, **kw) for s in range(8)]
    assert values == pytest.approx([0.5, 1.0, 1.0, 0.8, 0.6, 0.4, 0.2, 0.2])


def test_schedule_multiplies_each_groups_lr_scale_instead_of_overwriting():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    optimizer = build_optimizer(
        [{"params": [a], "weight_decay": 0.0}, {"params": [b], "lr_scale": 0.1}], lr=1.0
    )
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1.0, 0.1])
    set_lr(optimizer, 0.5)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.5, 0.05])


def test_sgd_with_momentum_is_selectable():
    weight = nn.Parameter(torch.tensor([1.0]))
    optimizer = build_optimizer([{"params": [weight]}], lr=0.1, kind="sgd", momentum=0.9)
    assert isinstance(optimizer, torch.optim.SGD)
    for _ in range(2):  # grad 1: v1 = 1, w = 0.9; v2 = 0.9 * 1 + 1 = 1.9, w = 0.9 - 0.19
        weight.grad = torch.ones(1)
        optimizer.step()
    assert weight.item() == pytest.approx(0.71)
    with pytest.raises(ConfigError, match="adamw, sgd"):
        build_optimizer([{"params": [weight]}], lr=0.1, kind="lion")


def test_nested_batches_reach_the_device_whole():
    batch = {"tokens": {"input_ids": torch.ones(2, 3)}, "text": ["a", "b"], "n": 1}
    moved = to_device(batch, "cpu")
    assert torch.equal(moved["tokens"]["input_ids"], batch["tokens"]["input_ids"])
    assert moved["text"] == ["a", "b"] and moved["n"] == 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    dataset = write_dataset(tmp_path_factory.mktemp("proto") / "ds", size=40)
    torch.manual_seed(0)
    objective = TeacherStudent({})
    teacher_before = {k: v.clone() for k, v in objective.teacher.state_dict().items()}
    trainer = Trainer(
        objective,
        OptimConfig(lr=1e-2, warmup_steps=0, ema_decay=0.5, schedule="linear"),
        TrainConfig(max_steps=3, checkpoint_every=3, log_every=1),
    )
    data = ShardDataset(
        dataset_shards(dataset), transform=SquareTransform(32), batch_size=2, seed=1
    )
    run_dir = tmp_path_factory.mktemp("run")
    result = trainer.fit(
        lambda start: iter(make_loader(data, 0, start)),
        run_dir=run_dir,
        batch_size=2,
        samples_per_epoch=data.samples_per_rank,
    )
    return objective, trainer, teacher_before, run_dir, result


def test_the_objective_gets_the_optimiser_step(trained):
    objective = trained[0]
    assert objective.steps_seen == [0, 1, 2]


def test_frozen_modules_stay_in_eval_mode_unchanged_and_without_an_optimiser_group(trained):
    objective, trainer, teacher_before, _, _ = trained
    assert not objective.teacher.training and objective.student.training
    assert all(torch.equal(v, teacher_before[k]) for k, v in objective.teacher.state_dict().items())
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not optimised & {id(p) for p in objective.teacher.parameters()}
    assert [g["lr_scale"] for g in trainer.optimizer.param_groups] == [1.0, 0.1]
    # linear decay from 1e-2 to 0 over 3 steps; the last step ran at 1e-2 / 3, the head at a tenth
    assert [g["lr"] for g in trainer.optimizer.param_groups] == pytest.approx([1e-2 / 3, 1e-3 / 3])


def test_ema_and_checkpoints_hold_only_the_trainable_part(trained):
    objective, trainer, _, run_dir, _ = trained
    assert not any(k.startswith("teacher.") for k in trainer.ema.state_dict())
    weights, _ = ckpt.load(ckpt.latest(run_dir))
    assert set(weights) == set(objective.trainable_state_dict())
    assert not any(k.startswith("teacher.") for k in weights) and "head.weight" in weights
    rebuilt = TeacherStudent({})  # the teacher comes from its own source, not the checkpoint
    rebuilt.load_trainable_state_dict(weights)
    assert torch.equal(rebuilt.head.weight, objective.head.weight)


def test_find_unused_parameters_reaches_ddp():
    from cxrkit.train.loop import make_accelerator

    accelerator = make_accelerator("fp32", cpu=True, find_unused_parameters=True)
    assert accelerator.ddp_handler.to_kwargs() == {"find_unused_parameters": True}
    assert make_accelerator("fp32", cpu=True).ddp_handler is None
