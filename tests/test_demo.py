"""`cxrkit demo`: the whole pipeline end to end on the real demo data (short pretraining)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cxrkit.artifacts import lineage, verify


def test_demo_runs_every_stage_and_chains_the_lineage(tmp_path, monkeypatch):
    from cxrkit.cli import app

    monkeypatch.chdir(tmp_path)  # a relative --out, as in the README command
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", "demo", "--steps", "10"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("demo")
    for stage in ("dataset", "annotations", "checkpoint", "eval", "export"):
        assert verify(out / stage) == [], stage
    kinds = [row["kind"] for row in lineage(out / "export")]
    assert kinds[:2] == ["export", "checkpoint"]
    assert {"dataset", "annotations", "raw"} <= set(kinds)
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["n_scored"] == 16
    probe = metrics["tasks"]["probe"]["fractions"]["1"]["seeds"]["0"]["classes"]["Pneumonia"]
    assert probe["status"] == "ok" and 0.0 <= probe["auroc"]["value"] <= 1.0
    assert "skipped" in metrics["tasks"]["zeroshot"]
    assert (out / "export" / "README.md").is_file()
    # the tiny distillation on synthetic pairs, said so on the terminal
    assert verify(out / "physio") == [] and verify(out / "distill") == []
    assert "distill: SYNTHETIC pairs (real ECG/labs assigned to demo patients)" in result.output
    distilled = json.loads((out / "distill" / "config.json").read_text())
    assert distilled["objective"] == "mae"  # image-only, LoRA merged


def _maco_demo(tmp_path, steps: int | None):
    from cxrkit.cli import app

    args = ["demo", "--method", "maco", "--out", str(tmp_path / "demo")]
    result = CliRunner().invoke(app, args + (["--steps", str(steps)] if steps else []))
    assert result.exit_code == 0, result.output
    out = tmp_path / "demo"
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    checkpoint = json.loads((out / "checkpoint" / "manifest.json").read_text())
    export = json.loads((out / "export" / "manifest.json").read_text())
    return result, metrics, checkpoint["stats"], export["stats"]


def test_maco_demo_scores_zero_shot_retrieval_and_exports_open_clip(tmp_path):
    """Two steps (~20 s, up to 90 s on a busy CPU): the plumbing of every stage.

    The full preset run (loss falls, retrieval above chance) is the slow test below.
    """
    result, metrics, stats, export = _maco_demo(tmp_path, steps=2)
    assert stats["steps"] == 2
    zeroshot = metrics["tasks"]["zeroshot"]
    for variant in ("maco", "maco_code", "clip"):
        assert variant in zeroshot, variant
    assert zeroshot["maco_code"]["classes"]["Pneumonia"]["status"] == "ok"
    retrieval = metrics["tasks"]["retrieval"]
    assert retrieval["n"] == 11 and retrieval["chance_recall_at_1"] == 1 / 11
    assert export["formats"]["open_clip"] == "ok"
    assert "chance" in result.output and "MaCo loss" in result.output


@pytest.mark.slow
def test_maco_demo_loss_falls_and_retrieval_beats_chance(tmp_path):
    _, metrics, stats, export = _maco_demo(tmp_path, steps=None)
    assert stats["final_loss"] < stats["first_loss"]
    retrieval = metrics["tasks"]["retrieval"]
    assert retrieval["image_to_report"]["recall_at_1"]["value"] > retrieval["chance_recall_at_1"]
    assert export["formats"]["open_clip"] == "ok"


def test_demo_seed_seeds_the_pretraining_run(tmp_path, monkeypatch):
    """`cxrkit demo --seed 7` trains with train.seed = data.seed = 7 (the preset's otherwise)."""
    from cxrkit.cli import app
    from cxrkit.stages import pretrain

    seen = []

    class Stop(Exception):
        pass

    def stop(cfg, force=False, accelerator=None):  # the config, not the minutes of training
        seen.append((cfg.train.seed, cfg.data.seed))
        raise Stop

    monkeypatch.setattr(pretrain, "run", stop)
    for extra in ([], ["--seed", "7"]):
        result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo"), *extra])
        assert isinstance(result.exception, Stop), result.output
    assert seen[1] == (7, 7) and seen[0] != (7, 7)
