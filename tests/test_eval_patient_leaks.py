"""A label file that knows patients (NIH's "Patient ID") over a dataset ingested without
them (a flat image folder: one pseudo-patient per image, split per image): eval groups by
the file's patients and says how many sit in more than one split, never silently."""

from __future__ import annotations

import pytest
from eval_support import tiny_mae_checkpoint

from cxrkit.stages.eval import EvalConfig, metrics_of, run


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random-init MAE checkpoint artifact (image-only)."""
    return tiny_mae_checkpoint(tmp_path_factory.mktemp("ckpt"))


def test_label_file_patients_in_two_splits_are_counted_and_group_the_bootstrap(
    checkpoint, salt_file, tmp_path, monkeypatch
):
    from cxrkit.io.bundled import pediatric_jpegs, pediatric_label
    from cxrkit.stages.ingest import IngestConfig
    from cxrkit.stages.ingest import run as ingest

    monkeypatch.setenv("CXRKIT_CACHE", str(tmp_path / "cache"))
    jpegs = pediatric_jpegs()  # 16 real images; no patient ids in the mapping
    lines = ["image_path,report_text,split"]
    lines += [f"{p},Report.,{'train' if i % 2 else 'test'}" for i, p in enumerate(jpegs)]
    (tmp_path / "map.csv").write_text("\n".join(lines) + "\n")
    dataset = ingest(
        IngestConfig(mapping=str(tmp_path / "map.csv"), out=str(tmp_path / "ds"), image_size=64,
                     salt_file=str(salt_file), keep_paths=True)
    ).path  # fmt: skip
    # NIH-format labels: images 0-1, 2-3 and 4-5 are one patient each (train and test)
    patient = {i: f"{i // 2 + 1}" if i < 6 else f"{100 + i}" for i in range(len(jpegs))}
    rows = ["Image Index,Finding Labels,Patient ID"]
    rows += [
        f"{p.name},{'Pneumonia' if pediatric_label(p) else 'No Finding'},{patient[i]}"
        for i, p in enumerate(jpegs)
    ]
    (tmp_path / "nih.csv").write_text("\n".join(rows) + "\n")
    cfg = EvalConfig(
        dataset=str(dataset), checkpoint=str(checkpoint), out=str(tmp_path / "ev"),
        labels=str(tmp_path / "nih.csv"), labels_format="nih", classes=["Pneumonia"],
        tasks=["probe"], fractions=[1.0], seeds=[0], bootstrap=20, plots=False, min_count=2,
    )  # fmt: skip
    metrics = metrics_of(run(cfg))
    leaks = [w for w in metrics["warnings"] if "more than one split" in w]
    assert len(leaks) == 1 and leaks[0].startswith("3 patients of the label file")
    report = metrics["tasks"]["probe"]["fractions"]["1"]["seeds"]["0"]["classes"]["Pneumonia"]
    assert report["ci_resampling"] == "patient"
