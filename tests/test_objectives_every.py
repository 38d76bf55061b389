"""Every registered objective, as timm tests every model: build, loss, backward, train, save,
load and export (safetensors, timm, and open_clip where declared). A new method is covered
the moment it registers and gives ``tiny_config()``."""

from __future__ import annotations

import json

import pytest
import torch
from pretrain_support import write_report_dataset

from cxrkit.config import from_dict, resolve
from cxrkit.errors import ConfigError
from cxrkit.io.dataset import dataset_shards
from cxrkit.io.shards import ShardDataset
from cxrkit.objectives.base import (
    Objective,
    _import_builtin,
    available,
    build_objective,
    objective_class,
    register,
)
from cxrkit.objectives.capabilities import OPEN_CLIP, supports
from cxrkit.objectives.loading import load_objective
from cxrkit.stages import export, pretrain
from cxrkit.vision.transforms import EvalTransform


def _builtin() -> list[str]:
    _import_builtin()
    from cxrkit.objectives.base import _REGISTRY

    return [n for n in available() if _REGISTRY[n].__module__.startswith("cxrkit.objectives.")]


BUILTIN = _builtin()


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    return write_report_dataset(tmp_path_factory.mktemp("every"))


def _pretrain_cfg(name: str, reports, out) -> pretrain.PretrainConfig:
    config = objective_class(name).tiny_config()
    model = config["model"]
    dataset, annotations = reports
    return from_dict(
        pretrain.PretrainConfig,
        {
            "out": str(out),
            "data": {
                "dataset": str(dataset.path),
                "annotations": str(annotations.path),
                "image_size": model["image_size"],
                "batch_size": 2,
                "num_workers": 0,
            },
            "model": model,
            "objective": {"name": name, **{k: v for k, v in config.items() if k != "model"}},
            "optim": {"warmup_steps": 0},
            "train": {"max_steps": 2, "precision": "fp32", "log_every": 1},
        },
    )


def test_every_builtin_objective_is_listed():
    assert "mae" in BUILTIN


@pytest.mark.parametrize("name", BUILTIN)
def test_loss_backward_on_a_real_batch(name, reports):
    torch.manual_seed(0)
    objective = build_objective(name, objective_class(name).tiny_config())
    dataset, annotations = reports
    data = ShardDataset(
        dataset_shards(dataset),
        transform=EvalTransform(objective.cfg.model.image_size),
        batch_size=2,
        needs=objective.needs,
        annotations=annotations.path / "annotations.parquet",
        shuffle=False,
        loop=False,
    )
    objective.on_dataset_fields(data.dataset_fields())
    data.sample_transform = objective.sample_transform()
    batch = next(iter(data))
    losses = objective.train().loss(batch, 0)
    assert losses["loss"].ndim == 0 and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    trained = [p for _, p in objective.named_parameters() if p.requires_grad]
    assert trained and any(p.grad is not None and p.grad.abs().sum() > 0 for p in trained)
    frozen = [p for m in objective.frozen_modules().values() for p in m.parameters()]
    assert all(p.grad is None for p in frozen)


@pytest.mark.parametrize("name", BUILTIN)
def test_train_save_load_export(name, reports, tmp_path):
    cfg = _pretrain_cfg(name, reports, tmp_path / "ckpt")
    checkpoint = pretrain.run(cfg)
    rows = [json.loads(r) for r in (checkpoint.path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["loss"] == r["loss"] for r in rows)
    loaded = load_objective(checkpoint.path)
    again = load_objective(checkpoint.path)
    state = loaded.trainable_state_dict()
    assert all(torch.equal(v, again.trainable_state_dict()[k]) for k, v in state.items())
    formats = ["safetensors", "timm"] + (["open_clip"] if supports(loaded, OPEN_CLIP) else [])
    artifact = export.run(
        export.ExportConfig(
            checkpoint=str(checkpoint.path), out=str(tmp_path / "exp"), formats=formats
        )
    )
    stats = artifact.manifest["stats"]
    assert stats["formats"] == {fmt: "ok" for fmt in formats}, stats


# ------------------------------------------------------------------ config typing and declarations
@pytest.mark.parametrize("name", BUILTIN)
def test_a_decoder_width_that_cannot_split_is_a_config_error(name):
    config = objective_class(name).tiny_config()
    if "decoder_dim" not in config:
        pytest.skip(f"{name} has no MAE-style decoder")
    config.update(decoder_dim=30, decoder_heads=4)  # 30 splits into neither 4 heads nor 4 quarters
    with pytest.raises(ConfigError, match=r"decoder_dim 30 must be divisible.*sin-cos"):
        build_objective(name, config)


def test_a_typo_in_the_objective_table_is_a_config_error_with_a_did_you_mean():
    with pytest.raises(ConfigError, match=r"objective.mask_ration.*did you mean 'mask_ratio'"):
        resolve(pretrain.PretrainConfig, preset="demo-mae", sets=["objective.mask_ration=0.5"])


def test_the_resolved_objective_table_shows_every_default():
    cfg = resolve(pretrain.PretrainConfig, sets=["objective.name=mae"])
    assert cfg.objective["mask_ratio"] == 0.75 and cfg.objective["decoder_depth"] == 8
    assert cfg.objective["name"] == "mae" and "model" not in cfg.objective


def test_an_unknown_objective_name_suggests_the_close_one():
    with pytest.raises(ConfigError, match="did you mean 'mae'"):
        resolve(pretrain.PretrainConfig, sets=["objective.name=mea"])


def test_an_unknown_batch_field_in_needs_is_a_config_error():
    @register("test-needs-typo")
    class NeedsTypo(Objective):
        needs = frozenset({"image", "txt"})

        def image_encoder(self):
            return torch.nn.Identity()

        def loss(self, batch, step=0):
            return {"loss": torch.zeros(())}

    with pytest.raises(ConfigError, match="unknown batch field 'txt'.*did you mean 'text'"):
        build_objective("test-needs-typo", {})


def test_declaring_a_capability_without_its_methods_fails_at_registration():
    with pytest.raises(TypeError, match="encode_text"):

        @register("test-half-declared")
        class HalfDeclared(Objective):
            capabilities = frozenset({"image_text"})

            def image_encoder(self):
                return torch.nn.Identity()

            def loss(self, batch, step=0):
                return {"loss": torch.zeros(())}

            def encode_image(self, images):
                return images
