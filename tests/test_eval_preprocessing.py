"""`cxrkit eval` says when the dataset was prepared differently from the checkpoint's
training data: stored smaller than the model's input (upsampled), another intensity window."""

from __future__ import annotations

import pytest
from eval_support import tiny_mae_checkpoint

from cxrkit.artifacts import open_artifact
from cxrkit.stages.eval import EvalConfig, metrics_of, run


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, demo_dataset):
    """The tiny MAE checkpoint, trained (in its lineage) on the demo dataset."""
    return tiny_mae_checkpoint(tmp_path_factory.mktemp("ckpt"), [open_artifact(demo_dataset)])


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRKIT_CACHE", str(tmp_path / "cache"))


def _warnings(checkpoint, dataset, out) -> list[str]:
    cfg = EvalConfig(
        dataset=str(dataset), checkpoint=str(checkpoint), out=str(out), tasks=["probe"],
        protocol="cv", fractions=[1.0], seeds=[0], bootstrap=20, plots=False,
    )  # fmt: skip
    return metrics_of(run(cfg))["warnings"]


def test_a_dataset_stored_smaller_with_another_window_is_named_in_the_warnings(
    checkpoint, demo_inputs, salt_file, tmp_path
):
    from cxrkit.stages.ingest import IngestConfig
    from cxrkit.stages.ingest import run as ingest

    other = ingest(
        IngestConfig(
            mapping=str(demo_inputs), out=str(tmp_path / "ds32"), image_size=32,
            window_low_pct=2.0, window_high_pct=98.0, salt_file=str(salt_file),
        )
    ).path  # fmt: skip
    found = " | ".join(_warnings(checkpoint, other, tmp_path / "ev"))
    assert "stores images at 32 px" in found and "input is 64 px" in found
    assert "window 2-98 %" in found and "0.5-99.5 %" in found


def test_the_training_dataset_itself_gives_no_preprocessing_warning(
    checkpoint, demo_dataset, tmp_path
):
    found = " | ".join(_warnings(checkpoint, demo_dataset, tmp_path / "ev"))
    assert "px" not in found and "window" not in found
