"""MMCLIP end to end on real data: real IU reports with real pediatric images plus image-only
rows; the losses fall after the warm-up, retrieval on the training pairs beats chance."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pretrain_support import pediatric_images

from cxrkit.artifacts import ArtifactWriter
from cxrkit.config import resolve
from cxrkit.io.schema import DATASET_SCHEMA, REJECTS_SCHEMA
from cxrkit.stages import pretrain

PAIRED, IMAGE_ONLY = 8, 4


def _dataset(root: Path):
    """8 real reports on real pediatric images, 4 more images without a report; annotated."""
    from cxrkit.io.reports import iter_iu_reports
    from cxrkit.stages.annotate import AnnotateConfig, run

    reports = [r for r in itertools.islice(iter_iu_reports(), 80) if r.findings and r.impression]
    writer = ArtifactWriter(root / "dataset", "dataset", {"test": "mmclip", "n": 12})
    work = writer.begin()
    rows = []
    for index, (_, pixels, _) in enumerate(pediatric_images(48)[: PAIRED + IMAGE_ONLY]):
        report = reports[index].columns() if index < PAIRED else {}
        rows.append({name: None for name in DATASET_SCHEMA.names} | report | {
            "image_id": f"img-{index}", "study_id": f"st-{index}", "patient_id": f"pt-{index}",
            "view": "PA", "pixels": pixels.tobytes(), "dtype": "uint8",
            "height": pixels.shape[0], "width": pixels.shape[1], "split": "train"})  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows, schema=DATASET_SCHEMA), work / "shard-00000.parquet")
    pq.write_table(REJECTS_SCHEMA.empty_table(), work / "rejects.parquet")
    dataset = writer.publish(stats={"rows": len(rows)})
    annotations = run(AnnotateConfig(dataset=str(dataset.path), out=str(root / "ann")))
    return dataset, annotations


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return _dataset(tmp_path_factory.mktemp("mmclip"))


def test_mmclip_pretrains_on_pairs_and_image_only_rows_with_falling_losses(artifacts, tmp_path):
    dataset, annotations = artifacts
    cfg = resolve(
        pretrain.PretrainConfig,
        preset="demo-mmclip",
        flags={
            "out": str(tmp_path / "ckpt"),
            "data.dataset": str(dataset.path),
            "data.annotations": str(annotations.path),
        },
        sets=[
            "train.max_steps=30",
            "train.log_every=1",
            "objective.warmup_steps=5",
            "data.batch_size=6",
            "model.depth=2",
            "objective.text.layers=1",
            "optim.warmup_steps=3",
        ],
        stage="pretrain",
    )
    checkpoint = pretrain.run(cfg)
    rows = [json.loads(r) for r in (checkpoint.path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 30 and all(math.isfinite(r["loss"]) for r in rows)
    assert any(0 < r["paired_fraction"] < 1 for r in rows)  # batches mix both kinds of rows
    after = [r for r in rows if r["step"] > 5]
    for term in ("align", "mim", "mlm"):
        values = [r[term] for r in after if math.isfinite(r[term])]
        assert len(values) >= 20, term
        assert _mean(values[-6:]) < _mean(values[:6]), (term, values)


def test_a_second_dataset_joins_every_batch_as_image_only_rows(artifacts, tmp_path):
    from pretrain_support import write_dataset

    dataset, annotations = artifacts
    images = write_dataset(tmp_path / "padchest-like")  # has report text: it gets blanked
    cfg = resolve(
        pretrain.PretrainConfig,
        preset="demo-mmclip",
        flags={
            "out": str(tmp_path / "ckpt"),
            "data.dataset": str(dataset.path),
            "data.annotations": str(annotations.path),
            "data.unpaired": str(images.path),
        },
        sets=[
            "train.max_steps=3",
            "train.log_every=1",
            "data.batch_size=6",
            "data.unpaired_per_batch=2",
            "model.depth=1",
        ],  # fmt: skip
        stage="pretrain",
    )
    checkpoint = pretrain.run(cfg)
    rows = [json.loads(r) for r in (checkpoint.path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:  # 4 rows of the paired dataset (some image-only) + 2 blanked ones
        assert row["paired_fraction"] <= 4 / 6 + 1e-6 and math.isfinite(row["mim_unpaired"])
    assert images.id in {i["id"] for i in checkpoint.manifest["inputs"]}


def test_the_batch_mix_must_fit_the_batch():
    from cxrkit.errors import ConfigError

    with pytest.raises(ConfigError, match="unpaired_per_batch"):
        resolve(
            pretrain.PretrainConfig,
            preset="demo-mmclip",
            sets=["data.unpaired=x", "data.unpaired_per_batch=8"],
            stage="pretrain",
        )


@pytest.mark.slow
def test_the_mmclip_demo_aligns_the_training_pairs_and_runs_zero_shot(tmp_path):
    from typer.testing import CliRunner

    from cxrkit.cli import app

    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--method", "mmclip", "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    retrieval = metrics["tasks"]["retrieval"]
    assert retrieval["n"] == 11  # the paired training rows; the 6 image-only rows have no report
    directions = [retrieval["image_to_report"], retrieval["report_to_image"]]
    # 11 pairs, 150 steps: single R@1 values are noisy; both median ranks and the mean
    # R@1 must beat what random embeddings give (median rank (n + 1) / 2, R@1 1 / n).
    assert all(d["median_rank"]["value"] < (retrieval["n"] + 1) / 2 for d in directions)
    mean_r1 = sum(d["recall_at_1"]["value"] for d in directions) / 2
    assert mean_r1 > retrieval["chance_recall_at_1"]
    zeroshot = metrics["tasks"]["zeroshot"]["maco"]["macro"]
    assert zeroshot["status"] == "ok" and 0.0 <= zeroshot["macro_auroc"]["value"] <= 1.0
    rows = [json.loads(r) for r in (out / "checkpoint" / "metrics.jsonl").read_text().splitlines()]
    after = [r for r in rows if r["step"] > 20]
    for term in ("align", "mim", "mlm"):
        assert _mean([r[term] for r in after[-3:]]) < _mean([r[term] for r in after[:3]]), term
    assert "R@1" in result.output and "chance" in result.output
