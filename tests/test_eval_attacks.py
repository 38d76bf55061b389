"""`cxrkit eval` against misuse: an --out that is one of its inputs, bad inputs that leave
nothing behind, error messages that name options the command has."""

from __future__ import annotations

import shutil

import pytest
import torch
from eval_support import tiny_mae_checkpoint

from cxrkit.artifacts import read_manifest
from cxrkit.errors import InputError, OutputError
from cxrkit.stages.eval import EvalConfig, run


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random-init MAE checkpoint artifact (image-only)."""
    return tiny_mae_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRKIT_CACHE", str(tmp_path / "cache"))


def _cfg(checkpoint, dataset, out, **extra) -> EvalConfig:
    return EvalConfig(
        dataset=str(dataset), checkpoint=str(checkpoint), out=str(out), tasks=["probe"],
        protocol="cv", fractions=[1.0], seeds=[0], bootstrap=20, plots=False, **extra,
    )  # fmt: skip


@pytest.mark.parametrize("which", ["dataset", "checkpoint"])
def test_out_naming_an_input_artifact_is_refused_even_with_force(
    checkpoint, demo_dataset, tmp_path, which
):
    dataset = shutil.copytree(demo_dataset, tmp_path / "ds")
    model = shutil.copytree(checkpoint, tmp_path / "ckpt")
    target = dataset if which == "dataset" else model
    with pytest.raises(OutputError, match=f"is an input of this run \\(the {which}"):
        run(_cfg(model, dataset, target), force=True)
    assert read_manifest(target)["kind"] == which  # the input is still there, untouched
    assert not list(tmp_path.glob("*.tmp-*"))


@pytest.fixture(scope="module")
def unlabelled_dataset(tmp_path_factory, salt_file):
    """Four real pediatric JPEGs with reports and splits but no label column."""
    from cxrkit.io.bundled import pediatric_jpegs
    from cxrkit.stages.ingest import IngestConfig
    from cxrkit.stages.ingest import run as ingest

    root = tmp_path_factory.mktemp("unlabelled")
    lines = ["image_path,report_text,patient_id,split"]
    for i, path in enumerate(pediatric_jpegs()[:4]):
        lines.append(f"{path},No acute findings.,P{i},{'test' if i % 2 else 'train'}")
    (root / "map.csv").write_text("\n".join(lines) + "\n")
    config = IngestConfig(
        mapping=str(root / "map.csv"), out=str(root / "ds"), image_size=64,
        salt_file=str(salt_file),
    )  # fmt: skip
    return ingest(config).path


def test_a_dataset_without_labels_is_refused_and_leaves_no_temp_dir(
    checkpoint, unlabelled_dataset, tmp_path
):
    with pytest.raises(InputError, match="no labels"):
        run(_cfg(checkpoint, unlabelled_dataset, tmp_path / "ev"))
    assert not (tmp_path / "ev").exists()
    assert not list(tmp_path.glob("ev.tmp-*"))


def test_no_labels_error_names_how_this_cli_takes_annotations(
    checkpoint, unlabelled_dataset, tmp_path
):
    from typer.testing import CliRunner

    from cxrkit.cli import app

    args = ["eval", str(checkpoint), str(unlabelled_dataset), "--out", str(tmp_path / "ev")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3, result.output
    assert "no labels" in result.output
    assert "--annotations" not in result.output  # eval has no such option
    assert "ANNOTATIONS" in result.output and "--labels FILE" in result.output


def test_annotations_of_another_dataset_are_named_as_such(
    checkpoint, unlabelled_dataset, salt_file, tmp_path
):
    from cxrkit.io.bundled import pediatric_jpegs
    from cxrkit.stages.annotate import AnnotateConfig
    from cxrkit.stages.annotate import run as annotate
    from cxrkit.stages.ingest import IngestConfig
    from cxrkit.stages.ingest import run as ingest

    lines = ["image_path,report_text,patient_id"]
    lines += [f"{p},No pneumothorax.,Q{i}" for i, p in enumerate(pediatric_jpegs()[8:12])]
    (tmp_path / "map.csv").write_text("\n".join(lines) + "\n")
    config = IngestConfig(
        mapping=str(tmp_path / "map.csv"), out=str(tmp_path / "other"), image_size=64,
        salt_file=str(salt_file),
    )  # fmt: skip
    other = ingest(config).path
    notes = annotate(AnnotateConfig(dataset=str(other), out=str(tmp_path / "ann"))).path
    with pytest.raises(InputError, match=r"none of the 4 images .* is in the annotations"):
        run(_cfg(checkpoint, unlabelled_dataset, tmp_path / "ev", annotations=str(notes)))
    assert not list(tmp_path.glob("ev.tmp-*"))


@pytest.mark.parametrize("name", ["gpu", "cuda:x", ""])
def test_an_unknown_device_is_a_config_error(name):
    from cxrkit.errors import ConfigError

    cfg = EvalConfig(dataset="ds", checkpoint="ckpt", out="ev", device=name)
    with pytest.raises(ConfigError, match="device"):
        cfg.validate()


def test_cuda_without_a_cuda_device_is_a_config_error(monkeypatch):
    from cxrkit.errors import ConfigError
    from cxrkit.stages.eval import _device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA device"):
        _device("cuda")
    assert _device("auto").type == "cpu"


def test_out_inside_an_input_artifact_is_refused(checkpoint, demo_dataset, tmp_path):
    from cxrkit.artifacts import verify

    dataset = shutil.copytree(demo_dataset, tmp_path / "ds")
    with pytest.raises(OutputError, match="inside an input of this run"):
        run(_cfg(checkpoint, dataset, dataset / "ev"))
    assert not verify(dataset)  # no stray file makes the dataset fail its integrity check


@pytest.mark.parametrize("flag", ["labels", "prompts"])
def test_a_missing_labels_or_prompts_file_is_an_input_error_naming_it(
    checkpoint, demo_dataset, tmp_path, flag
):
    missing = tmp_path / f"no-such-{flag}.json"
    extra = {"prompts": str(missing)} if flag == "prompts" else {
        "labels": str(missing), "labels_format": "chexpert"}  # fmt: skip
    with pytest.raises(InputError, match=f"no-such-{flag}.json: --{flag} file not found"):
        run(_cfg(checkpoint, demo_dataset, tmp_path / "ev", **extra))
    assert not (tmp_path / "ev").exists()
