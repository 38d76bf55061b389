"""`cxrkit demo`: the whole pipeline end to end on the real demo data (short pretraining)."""

from __future__ import annotations

import json

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
