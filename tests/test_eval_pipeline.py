"""`cxrkit eval` end to end on the real demo dataset (16 pediatric JPEGs + the adult DICOM).

Models are made here: a tiny MAE checkpoint artifact (image-only) and a tiny
open_clip image-text model built from a JSON config (random init, no hub).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from cxrkit.artifacts import ArtifactWriter, open_artifact
from cxrkit.stages.eval import EvalConfig, metrics_of, run

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}
FAST = {"bootstrap": 100, "seeds": [0, 1], "protocol": "cv"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CXRKIT_CACHE", str(path / "cache"))
        yield path


@pytest.fixture(scope="module")
def mae_checkpoint(workdir):
    """A checkpoint artifact of a tiny random-init MAE, written as the trainer writes one."""
    from cxrkit.objectives.base import build_objective
    from cxrkit.objectives.loading import save_objective

    config = {
        "model": {"arch": "vit_tiny_patch16_224", "image_size": 64, "patch_size": 16, "depth": 2},
        "decoder_dim": 32,
        "decoder_depth": 1,
        "decoder_heads": 2,
    }
    writer = ArtifactWriter(workdir / "ckpt", "checkpoint", {"tiny": config})
    work = writer.begin()
    torch.manual_seed(0)
    save_objective(build_objective("mae", config), work)
    return writer.publish().path


@pytest.fixture(scope="module")
def clip_config(workdir):
    path = workdir / "tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    return path


@pytest.fixture(scope="module")
def mae_eval(workdir, mae_checkpoint, demo_dataset):
    cfg = EvalConfig(
        dataset=str(demo_dataset),
        checkpoint=str(mae_checkpoint),
        out=str(workdir / "eval-mae"),
        tasks=["zeroshot", "probe", "retrieval"],
        **FAST,
    )
    return run(cfg)


@pytest.fixture(scope="module")
def clip_eval(workdir, clip_config, demo_dataset):
    prompts = workdir / "prompts.json"
    prompts.write_text(
        json.dumps(
            {"Pneumonia": {"positive": ["pneumonia"], "negative": ["no pneumonia", "clear lungs"]}}
        )
    )
    cfg = EvalConfig(
        dataset=str(demo_dataset),
        open_clip_config=str(clip_config),
        prompts=str(prompts),
        out=str(workdir / "eval-clip"),
        tasks=["zeroshot", "retrieval", "finetune"],
        **FAST,
    )
    return run(cfg)


def test_probe_runs_end_to_end_on_the_real_pediatric_set(mae_eval):
    metrics = metrics_of(mae_eval)
    assert metrics["rows_by_format"]["jpeg"] == 16  # the pediatric JPEGs, labelled
    assert metrics["rows_by_format"]["dicom"] >= 1  # the adult DICOM rides along, unlabelled
    assert metrics["n_scored"] == 16
    full = metrics["tasks"]["probe"]["fractions"]["1"]["seeds"]["0"]["classes"]["Pneumonia"]
    assert (full["n_pos"], full["n_neg"], full["status"]) == (8, 8, "ok")
    low, high = full["auroc"]["ci"]
    assert 0.0 <= low <= full["auroc"]["value"] <= high <= 1.0
    assert any("n = 16" in note for note in metrics["warnings"])


def test_rerun_of_a_checkpoint_eval_is_a_noop_that_loads_no_model(
    mae_eval, mae_checkpoint, demo_dataset, monkeypatch
):
    import cxrkit.stages.eval as eval_stage

    def no_model(*args):
        raise AssertionError("a no-op re-run loaded the model")

    monkeypatch.setattr(eval_stage, "_load_model", no_model)
    manifest = (mae_eval.path / "manifest.json").read_bytes()
    cfg = EvalConfig(dataset=str(demo_dataset), checkpoint=str(mae_checkpoint),
                     out=str(mae_eval.path), tasks=["zeroshot", "probe", "retrieval"], **FAST)  # fmt: skip
    again = run(cfg)  # the same id as the real run, decided without the model
    assert again.id == mae_eval.id
    assert (mae_eval.path / "manifest.json").read_bytes() == manifest


NOOP_PROBE = """
import json, sys
from typer.testing import CliRunner
from cxrkit.cli import app
result = CliRunner().invoke(app, json.loads(sys.argv[1]))
heavy = [m for m in ("torch", "timm", "open_clip", "scipy", "sklearn") if m in sys.modules]
print(json.dumps({"exit_code": result.exit_code, "heavy": heavy}))
"""


def test_noop_rerun_of_a_checkpoint_eval_imports_no_torch(mae_eval, mae_checkpoint, demo_dataset):
    import subprocess
    import sys

    manifest = (mae_eval.path / "manifest.json").read_bytes()
    args = ["eval", str(mae_checkpoint), str(demo_dataset), "--out", str(mae_eval.path),
            "--task", "zeroshot,probe,retrieval", "--protocol", "cv",
            "--set", "bootstrap=100", "--set", "seeds=[0, 1]"]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", NOOP_PROBE, json.dumps(args)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"exit_code": 0, "heavy": []}
    assert (mae_eval.path / "manifest.json").read_bytes() == manifest  # a no-op, same id


def test_task_names_written_out_for_start_up_are_the_registry_in_its_order():
    from cxrkit.evaluate.tasks import TASKS
    from cxrkit.stages.eval import ALL_TASKS

    assert tuple(TASKS) == ALL_TASKS


def test_zero_shot_and_retrieval_are_skipped_for_an_image_only_checkpoint(mae_eval):
    tasks = metrics_of(mae_eval)["tasks"]
    assert "no text encoder" in tasks["zeroshot"]["skipped"]
    assert "no text encoder" in tasks["retrieval"]["skipped"]


def test_eval_artifact_holds_roc_reliability_and_reconstruction_pngs(mae_eval):
    plots = metrics_of(mae_eval)["plots"]
    assert {"roc-probe-1.png", "reliability-probe-1.png", "reconstruction.png"} <= set(plots)
    for name in plots:
        assert mae_eval.file(name).read_bytes()[:8] == PNG_MAGIC


def test_predictions_hold_one_row_per_image_and_class_per_variant(mae_eval):
    table = pq.read_table(mae_eval.file("predictions.parquet")).to_pylist()
    full = [r for r in table if r["task"] == "probe" and r["variant"] == "1/seed0"]
    assert len(full) == 16
    assert {r["label"] for r in full} == {0.0, 1.0}
    assert all(0.0 <= r["score"] <= 1.0 for r in full)


def test_open_clip_zero_shot_and_retrieval_run_end_to_end(clip_eval):
    tasks = metrics_of(clip_eval)["tasks"]
    maco = tasks["zeroshot"]["maco"]["classes"]["Pneumonia"]
    assert maco["status"] == "ok" and maco["n_pos"] == 8
    assert "prompts.json" in tasks["zeroshot"]["prompts_source"]
    assert "2 classes" in tasks["zeroshot"]["clip"]["skipped"]
    retrieval = tasks["retrieval"]
    assert retrieval["n"] == metrics_of(clip_eval)["n_rows"]  # every demo row has a report
    recall = retrieval["image_to_report"]["recall_at_10"]["value"]
    assert 0.0 <= recall <= 1.0
    assert "trainable image encoder" in tasks["finetune"]["skipped"]
    assert "roc-zeroshot-maco.png" in metrics_of(clip_eval)["plots"]


def test_fixed_seed_run_is_bit_for_bit_reproducible(workdir, mae_checkpoint, demo_dataset):
    def once(name: str) -> bytes:
        cfg = EvalConfig(
            dataset=str(demo_dataset),
            checkpoint=str(mae_checkpoint),
            out=str(workdir / name),
            tasks=["probe", "finetune"],
            fractions=[0.5, 1.0],
            finetune_epochs=1,
            cache=False,
            plots=False,
            **FAST,
        )
        return run(cfg).file("metrics.json").read_bytes()

    first, second = once("repro-a"), once("repro-b")
    assert first == second
    finetune = json.loads(first)["tasks"]["finetune"]["fractions"]["1"]["seeds"]["0"]
    assert finetune["classes"]["Pneumonia"]["status"] == "ok"
    # one image subset per fraction and seed, the same for the probe and fine-tuning
    tasks = json.loads(first)["tasks"]
    half = [tasks[t]["fractions"]["0.5"]["seeds"]["0"]["train_images"]["folds"]
            for t in ("probe", "finetune")]  # fmt: skip
    assert [f["images"] for f in half[0]] == [f["images"] for f in half[1]]
    for fold, full in zip(half[0], tasks["probe"]["fractions"]["1"]["seeds"]["0"]
                          ["train_images"]["folds"], strict=True):  # fmt: skip
        assert fold["images"] == round(0.5 * full["images"])
        assert fold["classes"]["Pneumonia"]["C"] in (0.01, 0.1, 1.0, 10.0, None)


def test_split_protocol_with_few_test_positives_reports_too_few(
    workdir, mae_checkpoint, demo_dataset
):
    cfg = EvalConfig(
        dataset=str(demo_dataset),
        checkpoint=str(mae_checkpoint),
        out=str(workdir / "eval-split"),
        tasks=["probe"],
        fractions=[1.0],
        seeds=[0],
        bootstrap=50,
        plots=False,
    )
    report = metrics_of(run(cfg))["tasks"]["probe"]["fractions"]["1"]["seeds"]["0"]
    pneumonia = report["classes"]["Pneumonia"]
    assert pneumonia["status"] == "too_few" and "auroc" not in pneumonia
    assert pneumonia["n_pos"] == 3 and pneumonia["n_neg"] == 3  # the demo's test split


def test_features_are_cached_per_model_and_dataset(workdir, demo_dataset):
    from cxrkit.evaluate.features import cache_path, extract_features, read_rows
    from cxrkit.vision.transforms import EvalTransform

    dataset = open_artifact(demo_dataset)
    rows = read_rows(dataset)
    calls = []

    def encode(batch: torch.Tensor) -> torch.Tensor:
        calls.append(batch.shape[0])
        return batch.mean(dim=(2, 3))  # (B, 1)

    first = extract_features(encode, dataset, rows, EvalTransform(32), 4, "cpu", "test-model")
    assert sum(calls) == len(rows) and max(calls) == 4  # batched
    assert cache_path("test-model", dataset.id).is_file()
    assert str(cache_path("test-model", dataset.id)).startswith(str(workdir / "cache"))

    def fail(batch: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the cache should have answered")

    second = extract_features(fail, dataset, rows, EvalTransform(32), 4, "cpu", "test-model")
    np.testing.assert_array_equal(first, second)


def test_cli_eval_prints_metrics_json_on_stdout(workdir, mae_checkpoint, demo_dataset):
    from typer.testing import CliRunner

    from cxrkit.cli import app

    out = workdir / "eval-cli"
    args = ["eval", str(mae_checkpoint), str(demo_dataset), "--out", str(out)]
    args += ["--task", "probe", "--protocol", "cv", "--set", "bootstrap=50", "--json"]
    args += ["--set", "seeds=[0]", "--set", "fractions=[1.0]"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed == json.loads((Path(out) / "metrics.json").read_text())
    assert "AUROC" in result.stderr and "n = 16" in result.stderr


def test_finetune_runs_for_image_text_checkpoints_and_skips_only_without_an_encoder():
    from types import SimpleNamespace

    from torch import nn

    from cxrkit.evaluate import tasks
    from cxrkit.evaluate.encoders import EvalModel

    def model(encoder):
        return EvalModel(
            key="k",
            description="image-text",
            image_size=32,
            encode_images=lambda x: x,
            encode_texts=lambda texts: texts,  # an image-text model
            image_encoder=encoder,
        )

    no_rows = SimpleNamespace(train=np.array([], dtype=int))
    with pytest.raises(tasks.Skip, match="trainable image encoder"):
        tasks.run_finetune(SimpleNamespace(model=model(None), folds=[no_rows]))
    # With an image tower the text tower does not stop it: it goes on to the data check.
    with pytest.raises(tasks.Skip, match="no labelled training rows"):
        tasks.run_finetune(SimpleNamespace(model=model(nn.Identity()), folds=[no_rows]))
