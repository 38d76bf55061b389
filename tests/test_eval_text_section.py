"""`cxrkit eval` scores retrieval on the report section the checkpoint was trained on
(its data.text_section), unless text_section overrides it; metrics.json and the artifact
id say which. Real demo dataset, tiny fused (M3AE) checkpoint."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
import torch
from trust_support import cli

from cxrkit.artifacts import ArtifactWriter, open_artifact
from cxrkit.errors import ArtifactError, ConfigError
from cxrkit.evaluate import fused
from cxrkit.evaluate.features import read_rows
from cxrkit.io.dataset import dataset_shards
from cxrkit.io.fields import TEXT_SECTIONS, compose_text
from cxrkit.objectives.base import build_objective
from cxrkit.objectives.loading import save_objective
from cxrkit.objectives.m3ae import M3AE
from cxrkit.stages import eval as eval_stage
from cxrkit.stages.eval import EvalConfig, metrics_of, resolve_text_section, run


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval-section")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CXRKIT_CACHE", str(path / "cache"))
        yield path


@pytest.fixture(scope="module")
def impression_checkpoint(workdir):
    """A tiny M3AE checkpoint whose manifest says it was trained on impressions."""
    writer = ArtifactWriter(
        workdir / "ckpt", "checkpoint", {"data": {"text_section": "impression"}}
    )
    work = writer.begin()
    torch.manual_seed(0)
    save_objective(build_objective("m3ae", M3AE.tiny_config()), work)
    return writer.publish().path


def _dataset_rows(dataset) -> list[dict]:
    rows: list[dict] = []
    for shard in dataset_shards(open_artifact(dataset)):
        rows += pq.read_table(shard).drop(["pixels"]).to_pylist()
    return rows


def _scored_texts(monkeypatch, cfg: EvalConfig) -> tuple[list[str], object]:
    """Run eval and return the report texts retrieval scored (and the artifact)."""
    seen: list[str] = []
    real = fused.score_rows

    def spy(score, dataset, transform, rows, texts, *args, **kwargs):
        seen.extend(texts)
        return real(score, dataset, transform, rows, texts, *args, **kwargs)

    monkeypatch.setattr(fused, "score_rows", spy)
    return seen, run(cfg)


def _cfg(workdir, checkpoint, dataset, name: str, **extra) -> EvalConfig:
    return EvalConfig(
        dataset=str(dataset),
        checkpoint=str(checkpoint),
        out=str(workdir / name),
        tasks=["retrieval"],
        bootstrap=10,
        protocol="cv",
        plots=False,
        **extra,
    )


def test_eval_sections_are_the_pretrain_ones_plus_auto():
    assert ("auto", *TEXT_SECTIONS) == eval_stage.TEXT_SECTIONS


def test_read_rows_gives_each_row_its_section_with_the_pretrain_fallback(demo_dataset):
    rows = _dataset_rows(demo_dataset)
    both_sections = [r for r in rows if r.get("report_findings") and r.get("report_impression")]
    assert both_sections, "the demo reports should have findings and impressions"
    every = range(len(rows))
    impressions = list(read_rows(open_artifact(demo_dataset), "impression").report_texts(every))
    findings = list(read_rows(open_artifact(demo_dataset), "findings").report_texts(every))
    for row, impression, finding in zip(rows, impressions, findings, strict=True):
        assert impression == compose_text(row, "impression")[0]
        assert finding == compose_text(row, "findings")[0]
        if row.get("report_impression"):
            assert impression == row["report_impression"].strip()
        else:  # an empty section: the whole report, as the training loader does
            assert impression == (row.get("report_text") or "").strip()
    assert any(i != f for i, f in zip(impressions, findings, strict=True))


def test_auto_takes_the_checkpoints_section_and_a_setting_overrides_it():
    checkpoint = SimpleNamespace(path="ckpt", params={"data": {"text_section": "findings"}})
    assert resolve_text_section("auto", checkpoint) == "findings"
    assert resolve_text_section("impression", checkpoint) == "impression"
    assert resolve_text_section("auto", None) == "both"  # open_clip: no training section known
    assert resolve_text_section("auto", SimpleNamespace(path="c", params={"tiny": 1})) == "both"
    bad = SimpleNamespace(path="ckpt", params={"data": {"text_section": "history"}})
    with pytest.raises(ArtifactError, match="ckpt.*history"):
        resolve_text_section("auto", bad)


def test_an_unknown_section_setting_is_a_config_error():
    cfg = EvalConfig(dataset="d", checkpoint="c", text_section="history")
    with pytest.raises(ConfigError, match="text_section 'history'"):
        cfg.validate()


def test_retrieval_reads_the_impressions_a_checkpoint_trained_on_them(
    workdir, impression_checkpoint, demo_dataset, monkeypatch
):
    cfg = _cfg(workdir, impression_checkpoint, demo_dataset, "eval-impression")
    seen, artifact = _scored_texts(monkeypatch, cfg)
    expected = [compose_text(r, "impression")[0] for r in _dataset_rows(demo_dataset)]
    assert seen == [t for t in expected if t]
    assert metrics_of(artifact)["text_section"] == "impression"
    assert artifact.params["text_section"] == "impression"  # the resolved section, not auto


def test_a_text_section_setting_overrides_the_checkpoints_and_changes_the_id(
    workdir, impression_checkpoint, demo_dataset, monkeypatch
):
    auto = run(_cfg(workdir, impression_checkpoint, demo_dataset, "eval-auto"))
    cfg = _cfg(workdir, impression_checkpoint, demo_dataset, "eval-findings")
    cfg.text_section = "findings"
    seen, artifact = _scored_texts(monkeypatch, cfg)
    expected = [compose_text(r, "findings")[0] for r in _dataset_rows(demo_dataset)]
    assert seen == [t for t in expected if t]
    assert metrics_of(artifact)["text_section"] == "findings"
    assert artifact.id != auto.id


def test_the_cli_option_sets_the_section(workdir, impression_checkpoint, demo_dataset):
    args = [impression_checkpoint, demo_dataset, "--out", workdir / "x", "--dry-run"]
    shown = cli("eval", *args, "--text-section", "findings")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["text_section"] == "findings"
    bad = cli("eval", *args, "--text-section", "history")
    assert bad.exit_code == ConfigError.exit_code
    assert "history" in bad.output
