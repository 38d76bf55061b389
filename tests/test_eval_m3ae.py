"""`cxrkit eval` on a fused model (M3AE): zero-shot and retrieval score pairs with the ITM head
and say so; the probe and fine-tuning use the image tower alone. Real demo dataset."""

from __future__ import annotations

import json

import pytest
import torch

from cxrkit.artifacts import ArtifactWriter
from cxrkit.evaluate import fused
from cxrkit.objectives.base import build_objective
from cxrkit.objectives.loading import load_objective, save_objective
from cxrkit.objectives.m3ae import M3AE
from cxrkit.stages.eval import EvalConfig, metrics_of, run


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval-m3ae")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CXRKIT_CACHE", str(path / "cache"))
        yield path


@pytest.fixture(scope="module")
def m3ae_checkpoint(workdir):
    writer = ArtifactWriter(workdir / "ckpt", "checkpoint", {"tiny": "m3ae"})
    work = writer.begin()
    torch.manual_seed(0)
    save_objective(build_objective("m3ae", M3AE.tiny_config()), work)
    return writer.publish().path


@pytest.fixture(scope="module")
def m3ae_eval(workdir, m3ae_checkpoint, demo_dataset):
    prompts = workdir / "prompts.json"
    prompts.write_text(
        json.dumps({"Pneumonia": {"positive": ["pneumonia"], "negative": ["clear lungs"]}})
    )
    cfg = EvalConfig(
        dataset=str(demo_dataset),
        checkpoint=str(m3ae_checkpoint),
        prompts=str(prompts),
        out=str(workdir / "eval"),
        tasks=["zeroshot", "retrieval", "probe", "finetune"],
        bootstrap=50,
        seeds=[0],
        finetune_seeds=[0],
        finetune_epochs=1,
        protocol="cv",
    )
    return run(cfg)


def test_zero_shot_and_retrieval_use_the_itm_head_and_say_so(m3ae_eval):
    tasks = metrics_of(m3ae_eval)["tasks"]
    assert tasks["zeroshot"]["scoring"] == fused.ITM_SCORING
    assert tasks["retrieval"]["scoring"] == fused.ITM_SCORING
    pneumonia = tasks["zeroshot"]["maco"]["classes"]["Pneumonia"]
    assert pneumonia["status"] == "ok" and 0.0 <= pneumonia["auroc"]["value"] <= 1.0
    assert tasks["retrieval"]["n"] >= 16
    assert 0.0 <= tasks["retrieval"]["image_to_report"]["recall_at_1"]["value"] <= 1.0


def test_probe_and_fine_tuning_run_on_the_image_tower(m3ae_eval):
    tasks = metrics_of(m3ae_eval)["tasks"]
    assert "skipped" not in tasks["probe"] and "skipped" not in tasks["finetune"]
    assert tasks["finetune"]["fractions"]["1"]["seeds"]["0"]["classes"]["Pneumonia"]["n_pos"] == 8


def test_the_checkpoint_rebuilds_the_whole_fused_model(m3ae_checkpoint):
    torch.manual_seed(0)
    original = build_objective("m3ae", M3AE.tiny_config()).eval()
    loaded = load_objective(m3ae_checkpoint)
    images = torch.randn(2, 1, 32, 32)
    tokens = loaded.tokenize(["No acute disease.", "Right lower lobe pneumonia."])
    assert torch.allclose(loaded.score_pairs(images, tokens), original.score_pairs(images, tokens))


def test_export_writes_the_image_tower_and_the_whole_fused_model(m3ae_checkpoint, workdir):
    from cxrkit.export.formats import FUSED_DIR
    from cxrkit.stages import export

    artifact = export.run(
        export.ExportConfig(
            checkpoint=str(m3ae_checkpoint),
            out=str(workdir / "export"),
            formats=["safetensors", "timm", "onnx", "open_clip"],
        )
    )
    stats = artifact.manifest["stats"]
    expected = {"safetensors": "ok", "timm": "ok", "onnx": "ok", "open_clip": "skipped"}
    assert stats["formats"] == expected
    reason = artifact.manifest["stats"]
    assert "fuses image and text" in json.dumps(reason)
    rebuilt = load_objective(artifact.path / FUSED_DIR)
    original = load_objective(m3ae_checkpoint)
    state = original.trainable_state_dict()
    assert all(torch.equal(v, rebuilt.trainable_state_dict()[k]) for k, v in state.items())
    assert "load_objective('fused_model')" in (artifact.path / "README.md").read_text()
