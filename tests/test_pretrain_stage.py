"""The pretrain stage and CLI on the real demo dataset: presets, a falling MAE loss, the
published checkpoint artifact, re-runs, resume choices and the --slurm script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pretrain_support import write_annotations
from typer.testing import CliRunner

from cxrkit.artifacts import open_artifact, verify
from cxrkit.config import load_preset, preset_names, resolve
from cxrkit.errors import InputError
from cxrkit.stages import pretrain
from cxrkit.stages.pretrain import PretrainConfig
from cxrkit.train import checkpoint as ckpt

TINY = [
    "model.depth=2",
    "objective.decoder_depth=1",
    "objective.decoder_dim=64",
    "data.batch_size=4",
    "train.log_every=1",
    "optim.warmup_steps=5",
]


def _cfg(dataset: Path, out: Path, *sets: str, preset: str = "demo-mae") -> PretrainConfig:
    return resolve(
        PretrainConfig,
        preset=preset,
        flags={"data.dataset": str(dataset), "out": str(out)},
        sets=[*TINY, *sets],
        stage="pretrain",
    )


def _pretrain_presets() -> list[str]:
    return [n for n in preset_names() if load_preset(n).get("stage") == "pretrain"]


@pytest.mark.parametrize("name", _pretrain_presets())
def test_every_shipped_pretrain_preset_resolves_and_builds_its_objective(name):
    full = resolve(PretrainConfig, preset=name, stage="pretrain")  # as shipped
    # The batch comes at the encoder's size, or at the reconstruction target's (MaCo: 448 for 224).
    target = full.objective.get("target_size")
    assert full.objective["name"] and full.data.image_size == (target or full.model.image_size)
    side = 2 * full.model.patch_size  # shrink to 2x2 patches and a narrow encoder/decoder
    sizes = [f"data.image_size={side}"]
    if target:
        sizes = [f"data.image_size={2 * side}", f"objective.target_size={2 * side}"]
    tiny = resolve(
        PretrainConfig,
        preset=name,
        stage="pretrain",
        sets=[
            f"model.image_size={side}",
            *sizes,
            "model.depth=1",
            "model.embed_dim=32",
            "model.num_heads=2",
            "objective.decoder_dim=32",
            "objective.decoder_depth=1",
            "objective.decoder_heads=2",
        ],
    )
    objective = pretrain.build(tiny)
    assert objective.name == full.objective["name"]
    assert {"image"} <= set(objective.needs)


@pytest.fixture(scope="module")
def trained(demo_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "mae"
    return pretrain.run(_cfg(demo_dataset, out, "train.max_steps=40", "train.checkpoint_every=20"))


def test_mae_loss_falls_on_the_real_demo_images(trained):
    losses = [
        json.loads(r)["loss"] for r in (trained.path / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(losses) == 40
    # measured over seeds 0-2: first five ~1.0-1.3, last five ~0.35-0.40
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    assert trained.stats["first_loss"] == losses[0] and trained.stats["final_loss"] == losses[-1]


def test_published_checkpoint_has_the_contract_files_and_lineage(trained, demo_dataset):
    names = {f["path"] for f in trained.manifest["files"]}
    assert names == {
        "model.safetensors",
        "config.json",
        "metrics.jsonl",
        "trainer_state.pt",
        "reconstruction.png",
    }
    assert not verify(trained.path)
    assert trained.kind == "checkpoint"
    assert [i["id"] for i in trained.manifest["inputs"]] == [open_artifact(demo_dataset).id]
    for key in ("first_loss", "final_loss", "steps", "img_per_s", "wall_s"):
        assert key in trained.stats
    config = json.loads((trained.path / "config.json").read_text())
    assert config["objective"] == "mae" and config["preprocessing"]["mean"] == 0.5
    state = torch.load(trained.path / "trainer_state.pt", weights_only=True)
    assert state["step"] == 40


def test_reconstruction_preview_is_a_png_of_three_columns(trained):
    from PIL import Image

    with Image.open(trained.path / "reconstruction.png") as image:
        width, height = image.size
        assert image.mode == "L"
    assert width == 3 * 64 + 2 * 2 and height == 4 * 64 + 3 * 2  # 4 rows x (orig|masked|recon)


def test_checkpoint_loads_back_into_the_objective(trained):
    from cxrkit.objectives.loading import load_objective

    objective = load_objective(trained.path)
    images = torch.zeros(2, 1, 64, 64)
    assert objective.loss({"image": images})["loss"].isfinite()


def test_same_command_again_is_a_no_op(trained, demo_dataset):
    before = (trained.path / "model.safetensors").stat().st_mtime_ns
    again = pretrain.run(
        _cfg(demo_dataset, trained.path, "train.max_steps=40", "train.checkpoint_every=20")
    )
    assert again.id == trained.id
    assert (trained.path / "model.safetensors").stat().st_mtime_ns == before


def test_contour_masking_trains_from_an_annotations_artifact(demo_dataset, tmp_path):
    annotations = write_annotations(tmp_path / "ann", open_artifact(demo_dataset))
    cfg = _cfg(
        demo_dataset,
        tmp_path / "hd",
        "train.max_steps=2",
        "objective.masking=contour",
        "objective.mask_ratio_inside=0.9",
        "objective.mask_ratio_outside=0.5",
    )
    with pytest.raises(InputError, match="annotate"):
        pretrain.run(cfg)
    cfg.data.annotations = str(annotations.path)
    artifact = pretrain.run(cfg)
    rows = [json.loads(r) for r in (artifact.path / "metrics.jsonl").read_text().splitlines()]
    assert "mask_ratio_inside_actual" in rows[0]
    assert len(artifact.manifest["inputs"]) == 2


def test_resume_never_discards_checkpoints_and_auto_picks_the_latest(tmp_path):
    for step in (3, 6):
        directory = ckpt.step_dir(tmp_path, step)
        directory.mkdir(parents=True)
        (directory / ckpt.MODEL_FILE).write_bytes(b"x")
        (directory / ckpt.STATE_FILE).write_bytes(b"x")
    assert pretrain._resume_point("auto", tmp_path, True) == ckpt.step_dir(tmp_path, 6)
    assert pretrain._resume_point("never", tmp_path, True) is None
    assert not (tmp_path / ckpt.CHECKPOINTS).exists()
    (tmp_path / ckpt.STATE_FILE).write_bytes(b"x")  # finished, killed before publishing
    assert pretrain._resume_point("auto", tmp_path, True) == tmp_path


def test_cli_slurm_writes_the_sbatch_next_to_out(demo_dataset, tmp_path):
    from cxrkit.cli import app

    out = tmp_path / "runs" / "mae"
    result = CliRunner().invoke(
        app,
        [
            "pretrain",
            str(demo_dataset),
            "--out",
            str(out),
            "--preset",
            "demo-mae",
            "--set",
            "optim.lr=1e-4",
            "--max-steps",
            "50",
            "--slurm",
            "--nodes",
            "2",
            "--gpus-per-node",
            "4",
            "--time",
            "02:00:00",
            "--partition",
            "gpu",
        ],
    )
    assert result.exit_code == 0, result.output
    script = (tmp_path / "runs" / "mae.sbatch").read_text()
    config = tmp_path / "runs" / "mae.pretrain.json"
    assert f"pretrain {demo_dataset.resolve()} --out {out.resolve()} --config {config}'" in script
    resolved = json.loads(config.read_text())  # the job runs the config checked here
    assert resolved["optim"]["lr"] == 1e-4 and resolved["train"]["max_steps"] == 50
    assert resolved["preset"] == "demo-mae" and resolved["train"]["resume"] == "auto"
    assert "#SBATCH --nodes=2" in script and "--num_processes $((SLURM_NNODES * 4))" in script
    srun = next(line for line in script.splitlines() if line.strip().startswith("srun "))
    assert "--slurm" not in srun and "--nodes" not in srun and not out.exists()
    assert "global batch 64 = 8 per process x 8 processes x 1 accumulation" in result.output


def _slurm(*args: str):
    from cxrkit.cli import app

    return CliRunner().invoke(app, ["pretrain", *args, "--slurm", "--nodes", "2"])


@pytest.mark.parametrize(
    ("args", "code", "reason"),
    [
        (["{missing}", "--preset", "demo-mae"], 4, "nope: not a cxrkit artifact"),
        (["{dataset}", "--preset", "hd-mae"], 3, "annotations"),
        (["{dataset}", "--preset", "demo-mae", "--set", "objective.name=nope"], 2, "nope"),
        (["{dataset}", "--preset", "demo-mae", "--set", "optim.lr=-1"], 2, "optim.lr"),
        (["{dataset}", "--preset", "demo-mae", "--set", "data.split=val"], 3, "split"),
        (["{dataset}", "--preset", "mae", "--batch-size", "48"], 2, "global_batch"),
        (["{dataset}", "--preset", "demo-mae", "--partition", "gpu\nrm -rf ~"], 2, "partition"),
        (["{dataset}", "--preset", "demo-mae", "--time", "soon"], 2, "--time"),
    ],
)
def test_cli_slurm_refuses_a_job_that_would_fail_and_writes_nothing(
    demo_dataset, tmp_path, args, code, reason
):
    import re

    out = tmp_path / "o"
    fill = {"{missing}": str(tmp_path / "nope"), "{dataset}": str(demo_dataset)}
    result = _slurm(*[fill.get(a, a) for a in args], "--out", str(out))
    assert result.exit_code == code, result.output
    assert re.search(reason, result.output, re.IGNORECASE), result.output
    assert not list(tmp_path.glob("o.*")), "a script or config was written"


def test_cli_slurm_submit_without_sbatch_exits_with_input_error(
    demo_dataset, tmp_path, monkeypatch
):
    from cxrkit.cli import app

    monkeypatch.setenv("PATH", str(tmp_path))
    result = CliRunner().invoke(
        app,
        [
            "pretrain",
            str(demo_dataset),
            "--out",
            str(tmp_path / "o"),
            "--preset",
            "demo-mae",
            "--slurm",
            "--submit",
        ],
    )
    assert result.exit_code == InputError.exit_code
    assert (tmp_path / "o.sbatch").is_file()


def test_cli_dry_run_prints_the_resolved_config(demo_dataset, tmp_path):
    from cxrkit.cli import app

    result = CliRunner().invoke(
        app,
        [
            "pretrain",
            str(demo_dataset),
            "--out",
            str(tmp_path / "o"),
            "--preset",
            "demo-mae",
            "--batch-size",
            "3",
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, result.output
    resolved = json.loads(result.stdout)
    assert resolved["data"]["batch_size"] == 3 and resolved["objective"]["name"] == "mae"
    assert resolved["data"]["dataset"] == str(demo_dataset)


@pytest.mark.slow
def test_demo_preset_loss_falls_over_200_steps(demo_dataset, tmp_path):
    cfg = resolve(
        PretrainConfig,
        preset="demo-mae",
        stage="pretrain",
        flags={"data.dataset": str(demo_dataset), "out": str(tmp_path / "demo")},
    )
    artifact = pretrain.run(cfg)
    rows = [json.loads(r) for r in (artifact.path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 200
    assert artifact.stats["final_loss"] < 0.5 * artifact.stats["first_loss"]
    assert (artifact.path / "reconstruction.png").is_file()


def test_ema_run_publishes_averaged_weights_and_keeps_the_raw_ones(demo_dataset, tmp_path):
    from safetensors.torch import load_file

    artifact = pretrain.run(
        _cfg(demo_dataset, tmp_path / "ema", "train.max_steps=2", "optim.ema_decay=0.5")
    )
    names = {f["path"] for f in artifact.manifest["files"]}
    assert {"model.safetensors", "model_raw.safetensors"} <= names
    averaged = load_file(str(artifact.path / "model.safetensors"))
    raw = load_file(str(artifact.path / "model_raw.safetensors"))
    key = "encoder.patch_embed.proj.weight"
    assert not torch.equal(averaged[key], raw[key])
    ema = torch.load(artifact.path / "trainer_state.pt", weights_only=True)["ema"]
    assert torch.equal(ema[key], averaged[key])
