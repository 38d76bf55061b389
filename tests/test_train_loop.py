"""The trainer loop in one process: resume is bitwise, stops checkpoint first, metrics are logged."""

from __future__ import annotations

import json

import pytest
import torch
from pretrain_support import SquareTransform, TinyObjective, write_dataset

from cxrkit.errors import Interrupted, Preempted
from cxrkit.io.dataset import dataset_shards
from cxrkit.io.shards import ShardDataset, make_loader
from cxrkit.train import checkpoint as ckpt
from cxrkit.train.config import OptimConfig, TrainConfig
from cxrkit.train.loop import Trainer
from cxrkit.train.signals import StopFlag

BATCH = 4


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("loop") / "ds", size=40)


def _run(
    dataset, run_dir, steps=10, stop_at=None, reason="preempted", resume=None, accumulate=1, ema=0.0
):
    torch.manual_seed(0)
    objective = TinyObjective({"model": {"image_size": 32}})
    trainer = Trainer(
        objective,
        OptimConfig(lr=2e-3, warmup_steps=2, accumulate=accumulate, ema_decay=ema),
        TrainConfig(max_steps=steps, checkpoint_every=3, log_every=1),
    )
    data = ShardDataset(
        dataset_shards(dataset),
        transform=SquareTransform(32),
        batch_size=BATCH,
        seed=3,
        shuffle_buffer=4,
    )
    flag = StopFlag()
    if stop_at is not None:
        step = trainer.train_step

        def step_then_flag(micro):
            out = step(micro)
            if trainer.step == stop_at:
                flag.set(reason)
            return out

        trainer.train_step = step_then_flag
    run_dir.mkdir(exist_ok=True)
    result = trainer.fit(
        lambda start: iter(make_loader(data, 1, start)),
        run_dir=run_dir,
        batch_size=BATCH,
        samples_per_epoch=data.samples_per_rank,
        resume_from=resume,
        stop=flag,
    )
    return result, trainer


def test_resume_after_a_stop_reaches_bitwise_the_same_weights(dataset, tmp_path):
    _, straight = _run(dataset, tmp_path / "straight", ema=0.9)
    with pytest.raises(Preempted, match="step 5"):
        _run(dataset, tmp_path / "split", stop_at=5, ema=0.9)
    result, resumed = _run(
        dataset, tmp_path / "split", resume=ckpt.latest(tmp_path / "split"), ema=0.9
    )
    assert result.resumed_from == 5 and result.steps == 10
    a, b = straight.objective.state_dict(), resumed.objective.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(straight.ema.shadow[k], resumed.ema.shadow[k]) for k in a)
    rows_a = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    rows_b = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    losses = [[json.loads(r)["loss"] for r in rows] for rows in (rows_a, rows_b)]
    assert losses[0] == losses[1] and len(losses[0]) == 10


def test_resume_drops_a_metrics_row_torn_by_a_kill_mid_write(dataset, tmp_path):
    with pytest.raises(Preempted, match="step 5"):
        _run(dataset, tmp_path, stop_at=5)
    metrics = tmp_path / "metrics.jsonl"
    whole = metrics.read_text()
    with metrics.open("a") as handle:  # killed (or out of disk) while writing step 6's row
        handle.write('{"step": 6, "loss": 0.12')
    result, _ = _run(dataset, tmp_path, resume=ckpt.latest(tmp_path))
    assert result.resumed_from == 5 and result.steps == 10
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 11))
    assert metrics.read_text().startswith(whole)


def test_stop_saves_a_checkpoint_before_raising(dataset, tmp_path):
    with pytest.raises(Interrupted):
        _run(dataset, tmp_path, stop_at=2, reason="interrupted")
    latest = ckpt.latest(tmp_path)
    assert latest.name == "step-00000002"
    weights, state = ckpt.load(latest)
    assert state["step"] == 2 and state["loader"]["consumed"] == 2 * BATCH
    assert set(weights) == set(TinyObjective({"model": {"image_size": 32}}).state_dict())


def test_metrics_rows_carry_step_losses_lr_throughput_and_grad_norm(dataset, tmp_path):
    result, _ = _run(dataset, tmp_path, steps=3)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in ("loss", "visible_mse", "lr", "img_per_s", "grad_norm", "epoch"):
        assert key in rows[0]
    assert rows[0]["lr"] == pytest.approx(1e-3)  # warmup: step 0 of 2 -> lr * 1/2
    assert result.first_loss == rows[0]["loss"] and result.final_loss == rows[-1]["loss"]


def test_accumulation_takes_that_many_micro_batches_per_step(dataset, tmp_path):
    _, trainer = _run(dataset, tmp_path, steps=3, accumulate=2)
    _, state = ckpt.load(ckpt.latest(tmp_path))
    assert state["step"] == 3 and state["loader"]["consumed"] == 3 * 2 * BATCH


def test_only_the_latest_complete_checkpoint_is_kept(dataset, tmp_path):
    _run(dataset, tmp_path, steps=7)  # saves at 3, 6 and the final 7
    (tmp_path / "checkpoints" / ".step-00000009.tmp").mkdir()  # a save killed half-way
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-00000007"]


def test_trainer_state_loads_without_pickle(dataset, tmp_path):
    _run(dataset, tmp_path, steps=2)
    state = torch.load(ckpt.latest(tmp_path) / ckpt.STATE_FILE, weights_only=True)
    assert state["step"] == 2 and "optimizer" in state and "rng" in state
