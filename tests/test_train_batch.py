"""The global batch: accumulation derived from train.global_batch and the world size."""

from __future__ import annotations

import pytest

from cxrkit.config import resolve
from cxrkit.errors import ConfigError
from cxrkit.stages.pretrain import PretrainConfig
from cxrkit.train.batch import plan_batch


def test_mae_preset_keeps_4096_on_one_process_and_on_two_nodes_of_four():
    cfg = resolve(PretrainConfig, preset="mae", stage="pretrain")
    one = plan_batch(cfg.data.batch_size, 1, cfg.optim.accumulate, cfg.train.global_batch)
    eight = plan_batch(cfg.data.batch_size, 8, cfg.optim.accumulate, cfg.train.global_batch)
    assert (one.accumulate, one.global_batch) == (16, 4096)  # the preset's 1-process meaning
    assert (eight.accumulate, eight.global_batch) == (2, 4096)  # not 256 x 8 x 16 = 32,768


def test_the_plan_says_how_the_global_batch_is_made():
    plan = plan_batch(64, 8, 1, 4096)
    assert plan.describe() == "global batch 4096 = 64 per process x 8 processes x 8 accumulation"
    assert plan.as_dict() == {
        "global_batch": 4096,
        "per_process_batch": 64,
        "processes": 8,
        "accumulate": 8,
    }


def test_without_a_global_batch_accumulate_is_kept_and_the_batch_grows_with_processes():
    assert plan_batch(8, 2, 3, None).global_batch == 8 * 2 * 3


def test_a_global_batch_that_does_not_divide_names_sizes_that_do():
    with pytest.raises(ConfigError, match=r"not a multiple of .* 96.*fit: .*64"):
        plan_batch(48, 2, 1, 4096)


def test_an_explicit_accumulate_that_contradicts_the_global_batch_is_refused():
    with pytest.raises(ConfigError, match="optim.accumulate 4 contradicts"):
        plan_batch(256, 8, 4, 4096)
    assert plan_batch(256, 8, 2, 4096).accumulate == 2  # agreeing is fine


def test_hd_mae_preset_states_the_papers_1024():
    cfg = resolve(PretrainConfig, preset="hd-mae", stage="pretrain")
    plans = [plan_batch(cfg.data.batch_size, n, cfg.optim.accumulate, 1024) for n in (1, 8)]
    assert cfg.train.global_batch == 1024
    assert [(p.accumulate, p.global_batch) for p in plans] == [(8, 1024), (1, 1024)]
