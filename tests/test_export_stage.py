"""The export stage end to end: real data -> checkpoint -> export, card, lineage, tampering, CLI."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file
from test_export_helpers import (
    TINY_MAE,
    TINY_VIT,
    ingest_real_dataset,
    make_checkpoint,
    make_eval,
    pretrain_real_checkpoint,
)
from typer.testing import CliRunner

import cxrkit
from cxrkit.artifacts import open_artifact, verify
from cxrkit.cli import app
from cxrkit.errors import ArtifactError, ConfigError
from cxrkit.export import native
from cxrkit.export.open_clip_format import load_open_clip
from cxrkit.models.checkpoint import load_image_encoder
from cxrkit.stages.export import ExportConfig, run

# shaped like `cxrkit eval`'s metrics.json: context keys, warnings, nested task results
_SCORED = {
    "classes": {
        "Pneumonia": {
            "status": "ok",
            "n_pos": 6,
            "n_neg": 6,
            "auroc": {"value": 0.71, "ci": [0.5, 0.9]},
            "auprc": {"value": 0.6, "ci": [0.4, 0.8]},
        },
        "Edema": {"status": "too_few", "n_pos": 1, "n_neg": 11},
    },
    "macro": {},
}
METRICS = {
    "model": "checkpoint ckpt (objective mae)",
    "dataset": {"path": "/home/someone/secret-site/dataset", "id": "abc"},
    "warnings": ["n = 3 scored images (< 100): a smoke test"],
    "n_scored": 3,
    "protocol": "cv",
    "tasks": {
        "probe": {"fractions": {"1.0": {"seeds": {"0": _SCORED}, "over_seeds": {}}}},
        "retrieval": {"skipped": "no text"},
    },
}


@pytest.fixture(autouse=True)
def _detach_cli_log_handlers():
    # The CLI attaches a handler to CliRunner's temporary stderr; drop it so later
    # library logging does not write to a closed stream.
    yield
    logging.getLogger("cxrkit").handlers.clear()
    logging.getLogger("cxrkit").propagate = True


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """ingest (3 real JPEGs) -> pretrain (2 MAE steps) -> eval -> export in all formats."""
    root = tmp_path_factory.mktemp("export")
    dataset = ingest_real_dataset(root / "dataset", root)
    checkpoint = pretrain_real_checkpoint(root / "ckpt", dataset)
    evaluation = make_eval(root / "eval", checkpoint, METRICS)
    export = run(
        ExportConfig(
            checkpoint=str(checkpoint.path), out=str(root / "export"), eval=str(evaluation.path)
        )
    )
    return {
        "root": root,
        "dataset": dataset,
        "checkpoint": checkpoint,
        "eval": evaluation,
        "export": export,
    }


def test_every_format_loads_back_within_tolerance(pipeline):
    stats = pipeline["export"].stats
    for name in ("safetensors", "timm", "onnx"):
        print(f"export {name}: max abs diff {stats[name + '_max_abs_diff']:.3g}")
    assert stats["formats"] == {
        "safetensors": "ok",
        "timm": "ok",
        "open_clip": "skipped",
        "onnx": "ok",
    }
    assert stats["safetensors_max_abs_diff"] <= 1e-5 and stats["timm_max_abs_diff"] <= 1e-5
    assert stats["onnx_max_abs_diff"] <= 1e-4


def test_timm_check_records_one_channel_facts(pipeline):
    meta = json.loads((pipeline["export"].path / "metadata.json").read_text())
    timm_check = meta["formats"]["timm"]
    assert timm_check["adapt_input_conv_noop"] and timm_check["weights_identical"]
    assert timm_check["in_chans"] == 1


def test_open_clip_is_skipped_for_image_only_mae(pipeline):
    stats = pipeline["export"].stats
    assert stats["formats"]["open_clip"] == "skipped"
    assert "image-only" in stats["open_clip_skip_reason"]
    assert pipeline["export"].stats["formats_skipped"] == 1
    assert not (pipeline["export"].path / "open_clip").exists()


def test_export_verifies_and_records_its_inputs(pipeline):
    export = pipeline["export"]
    assert verify(export.path) == []
    assert [i["id"] for i in export.manifest["inputs"]] == [
        pipeline["checkpoint"].id,
        pipeline["eval"].id,
    ]
    names = {f["path"] for f in export.manifest["files"]}
    assert {
        "README.md",
        "metadata.json",
        "image_encoder/model.safetensors",
        "image_encoder/config.json",
        "onnx/image_encoder.onnx",
    } <= names
    assert not [n for n in names if n.endswith((".pt", ".pth", ".pkl", ".bin"))]


def test_model_card_states_data_lineage_eval_and_use(pipeline):
    text = (pipeline["export"].path / "README.md").read_text()
    dataset = pipeline["dataset"]
    raw_id = dataset.manifest["inputs"][0]["id"]
    assert dataset.id[:16] in text and raw_id[:16] in text
    assert "| dataset |" in text and "| 3 |" in text  # 3 real images in the training data
    assert (
        "| probe 100% labels (seed 0) | 1 of 2 | 0.710 [0.500, 0.900] | 0.600 [0.400, 0.800] |"
        in text
    )
    assert "| retrieval | skipped | no text |" in text
    assert "> warning: n = 3 scored images" in text
    assert "n = 3 scored images, protocol cv." in text
    assert "tasks." not in text and "| None |" not in text  # a summary, not raw keys
    assert "not for diagnosis" in text and "MONOCHROME1" in text
    assert "objective: `mae`, preset:" in text
    assert "- steps: 2" in text  # the trainer's stats travel into the card
    assert "timm.create_model('vit_tiny_patch16_224'" in text


def test_metadata_describes_inputs_outputs_and_preprocessing(pipeline):
    meta = json.loads((pipeline["export"].path / "metadata.json").read_text())
    assert meta["inputs"]["image"]["spatial_shape"] == [64, 64]
    assert meta["inputs"]["image"]["num_channels"] == 1
    assert meta["outputs"]["embedding"]["shape"] == ["batch", 192]
    assert meta["outputs"]["tokens"]["shape"] == ["batch", 17, 192]
    assert meta["preprocessing"]["mean"] == 0.5 and meta["preprocessing"]["std"] == 0.5
    assert [row["kind"] for row in meta["lineage"]] == ["checkpoint", "dataset", "raw"]
    assert meta["training_data"][0]["rows"] == 3
    assert meta["eval"]["metrics"]["tasks"] == METRICS["tasks"]
    assert meta["eval"]["metrics"]["dataset"]["path"] == "dataset"  # no local path travels


@torch.no_grad()
def test_exported_encoder_loads_into_cxrkit_with_identical_features(pipeline):
    encoder, cfg = native.load_exported_encoder(pipeline["export"].path)
    reference, _ = load_image_encoder(pipeline["checkpoint"].path)
    images = native.normalise(native.probe_images(64), {"mean": 0.5, "std": 0.5})
    assert native.max_abs_diff(encoder(images), reference(images)) == 0.0
    assert cfg.image_size == 64
    via_load = cxrkit.load(pipeline["export"].path)  # the one-liner in the card
    assert native.max_abs_diff(via_load(images), reference(images)) == 0.0


def test_tampered_weights_fail_verify(pipeline, tmp_path):
    copy = tmp_path / "tampered"
    shutil.copytree(pipeline["export"].path, copy)
    weights = copy / "image_encoder" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of the last weight
    weights.write_bytes(bytes(data))
    problems = verify(copy)
    assert problems == ["changed file image_encoder/model.safetensors (sha256 mismatch)"]
    with pytest.raises(ArtifactError, match="failed verification"):
        native.load_exported_encoder(copy)
    with pytest.raises(ArtifactError, match="failed verification"):
        cxrkit.load(copy)
    result = CliRunner().invoke(app, ["verify", str(copy)])
    assert result.exit_code == ArtifactError.exit_code
    assert "image_encoder/model.safetensors" in result.output


def test_rerun_with_same_inputs_is_a_noop(pipeline):
    export = pipeline["export"]
    again = run(
        ExportConfig(
            checkpoint=str(pipeline["checkpoint"].path),
            out=str(export.path),
            eval=str(pipeline["eval"].path),
        )
    )
    assert again.id == export.id
    assert again.manifest["created"] == export.manifest["created"]


NOOP_PROBE = """
import json, sys
from typer.testing import CliRunner
from cxrkit.cli import app
result = CliRunner().invoke(app, json.loads(sys.argv[1]))
heavy = [m for m in ("torch", "timm", "open_clip", "onnx", "onnxruntime") if m in sys.modules]
print(json.dumps({"exit_code": result.exit_code, "heavy": heavy}))
"""


def test_noop_rerun_imports_no_torch(pipeline):
    import subprocess
    import sys

    export = pipeline["export"]
    manifest = (export.path / "manifest.json").read_bytes()
    args = ["export", str(pipeline["checkpoint"].path), "--out", str(export.path),
            "--eval", str(pipeline["eval"].path)]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", NOOP_PROBE, json.dumps(args)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"exit_code": 0, "heavy": []}
    assert (export.path / "manifest.json").read_bytes() == manifest  # a no-op, same id


def test_format_names_and_opset_written_out_for_start_up_match_the_format_modules():
    from cxrkit.export import onnx_format
    from cxrkit.export.formats import FORMATS
    from cxrkit.stages.export import FORMAT_NAMES, ONNX_OPSET

    assert tuple(FORMATS) == FORMAT_NAMES
    assert onnx_format.OPSET == ONNX_OPSET


def test_eval_of_another_checkpoint_is_refused(pipeline):
    root = pipeline["root"]
    other_cfg = {**TINY_MAE, "mask_ratio": 0.5}  # another config -> another checkpoint id
    other = make_checkpoint(root / "other-ckpt", "mae", other_cfg, [pipeline["dataset"]])
    with pytest.raises(ConfigError, match="did not evaluate"):
        run(
            ExportConfig(
                checkpoint=str(other.path),
                out=str(root / "other-export"),
                eval=str(pipeline["eval"].path),
            )
        )


@pytest.fixture(scope="module")
def clip_export(pipeline):
    """A tiny image-text checkpoint exported as safetensors + open_clip."""
    root = pipeline["root"]
    checkpoint = make_checkpoint(
        root / "clip-ckpt", "test-tiny-clip", {"model": TINY_VIT}, [pipeline["dataset"]]
    )
    cfg = ExportConfig(
        checkpoint=str(checkpoint.path),
        out=str(root / "clip-export"),
        formats=["safetensors", "open_clip"],
    )
    return checkpoint, run(cfg)


def test_image_text_checkpoint_exports_open_clip(clip_export):
    _, export = clip_export
    result = json.loads((export.path / "metadata.json").read_text())["formats"]["open_clip"]
    print(
        f"export open_clip: image {result['max_abs_diff_image']:.3g}, "
        f"text {result['max_abs_diff_text']:.3g}"
    )
    assert result["status"] == "ok" and result["max_abs_diff"] <= 1e-5
    model, _, tokenizer = load_open_clip(export.path / "open_clip")
    assert model.encode_text(tokenizer(["effusion"])).shape == (1, 16)
    assert export.stats["formats"] == {"safetensors": "ok", "open_clip": "ok"}


def test_text_tower_is_exported_beside_the_image_encoder(clip_export):
    checkpoint, export = clip_export
    meta = json.loads((export.path / "metadata.json").read_text())
    text = meta["formats"]["safetensors"]["other_encoders"]["text"]
    weights = load_file(str(export.path / "text_encoder" / "model.safetensors"))
    full = load_file(str(checkpoint.path / "model.safetensors"))
    text_keys = [k for k in full if k.startswith("text.")]  # the tower's share of the objective
    assert text == {"status": "ok", "path": "text_encoder/model.safetensors", "tensors": 17}
    assert sorted(weights) == sorted(k[len("text.") :] for k in text_keys)
    assert torch.equal(weights["token_embedding.weight"], full["text.token_embedding.weight"])


def test_cli_export_writes_chosen_formats_and_prints_json(pipeline):
    root = pipeline["root"]
    out = root / "cli-export"
    result = CliRunner().invoke(
        app,
        [
            "export",
            str(pipeline["checkpoint"].path),
            "--out",
            str(out),
            "--format",
            "safetensors,onnx",
            "--onnx-uint8",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["stats"]["formats"] == {"safetensors": "ok", "onnx": "ok"}
    assert manifest["params"]["onnx_input_dtype"] == "uint8"
    assert open_artifact(out, kind="export").id == manifest["id"]


def test_cli_unknown_format_is_a_usage_error(pipeline, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "export",
            str(pipeline["checkpoint"].path),
            "--out",
            str(tmp_path / "x"),
            "--format",
            "safetensors,pickle",
        ],
    )
    assert result.exit_code == ConfigError.exit_code
    assert "pickle" in result.output


def test_format_that_does_not_load_back_faithfully_stops_the_export(pipeline):
    root = pipeline["root"]
    out = root / "strict-export"
    # a tolerance far below float rounding (ORT differs by ~1e-6): refuse, do not publish
    cfg = ExportConfig(
        checkpoint=str(pipeline["checkpoint"].path),
        out=str(out),
        formats=["onnx"],
        onnx_tolerance=1e-12,
    )
    with pytest.raises(ArtifactError, match="not faithful"):
        run(cfg)
    assert not out.exists()
    assert not list(root.glob("strict-export.tmp-*"))


# ---------------------------------------------------------------- honest card and files
def test_card_states_the_exact_transform_onnx_size_and_precision(pipeline):
    text = (pipeline["export"].path / "README.md").read_text()
    assert "clip to the 0.5 and 99.5 percentiles" in text
    assert "centre-pad to 64 x 64 with black (letterbox, no crop)" in text
    assert "round to uint8" in text and "downscale the long side to 64 px" in text
    assert "(batch, 1, 64, 64)" in text and ", S, S)" not in text
    assert "- precision: fp32" in text and "precision: no" not in text
    assert "from preprocess import preprocess, transform_config" in text


def test_card_and_metadata_carry_no_local_paths(pipeline):
    root = str(pipeline["root"])
    for name in ("README.md", "metadata.json", "image_encoder/config.json"):
        body = (pipeline["export"].path / name).read_text()
        assert root not in body, name
        assert "/home/someone" not in body, name


def test_timm_pretrained_cfg_letterboxes_and_says_how_it_differs(pipeline):
    config = json.loads((pipeline["export"].path / "image_encoder/config.json").read_text())
    cfg = config["pretrained_cfg"]
    assert cfg["crop_mode"] == "border" and cfg["crop_pct"] == 1.0
    assert "percentile window" in cfg["notes"][0] and "preprocess.py" in cfg["notes"][0]
    assert config["cxrkit"]["transform"]["ingest_settings"].startswith("dataset ")


def test_export_files_have_one_mode(pipeline):
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    modes = {
        f["path"]: stat.S_IMODE((pipeline["export"].path / f["path"]).stat().st_mode)
        for f in pipeline["export"].manifest["files"]
    }
    assert modes["image_encoder/model.safetensors"] == 0o666 & ~umask
    assert len(set(modes.values())) == 1, modes


def test_hosting_files_do_not_break_load_or_verify(pipeline, tmp_path):
    copy = tmp_path / "hub-copy"
    shutil.copytree(pipeline["export"].path, copy)
    (copy / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    (copy / ".git" / "objects").mkdir(parents=True)
    (copy / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    assert verify(copy) == []
    encoder = cxrkit.load(copy)
    images = native.normalise(native.probe_images(64), {"mean": 0.5, "std": 0.5})
    reference, _ = load_image_encoder(pipeline["checkpoint"].path)
    with torch.no_grad():
        assert native.max_abs_diff(encoder(images), reference(images)) == 0.0


@torch.no_grad()
def test_following_the_card_reproduces_cxrkit_features(pipeline):
    """preprocess.py (shipped) + timm on the real JPEGs == cxrkit's ingest + eval transform."""
    import importlib.util

    import numpy as np
    import pyarrow.parquet as pq
    import timm

    from cxrkit.io import bundled
    from cxrkit.io.dataset import dataset_shards
    from cxrkit.vision.transforms import EvalTransform

    export = pipeline["export"].path
    spec = importlib.util.spec_from_file_location("shipped_preprocess", export / "preprocess.py")
    shipped = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shipped)
    transform = shipped.transform_config(export)
    assert transform["low_pct"] == 0.5 and transform["high_pct"] == 99.5
    assert transform["store_size"] == 64 and transform["image_size"] == 64

    model = timm.create_model(f"local-dir:{export / 'image_encoder'}", pretrained=True).eval()
    rows = {
        r["source_sha256"]: r
        for f in dataset_shards(pipeline["dataset"])
        for r in pq.read_table(f).to_pylist()
    }
    ours, naive_timm = [], []
    for path in bundled.pediatric_jpegs()[:3]:
        import hashlib

        row = rows[hashlib.sha256(path.read_bytes()).hexdigest()]
        stored = np.frombuffer(row["pixels"], row["dtype"]).reshape(row["height"], row["width"])
        expected = model(EvalTransform(64)(stored.copy())[0][None])  # (1, D)
        got = model(shipped.preprocess(path, **transform))
        ours.append(torch.nn.functional.cosine_similarity(got, expected).item())
        # timm's own transform from the pretrained_cfg (what a timm user would do)
        config = timm.data.resolve_data_config({}, model=model)
        from PIL import Image

        timm_input = timm.data.create_transform(**config)(Image.open(path).convert("L"))
        naive = model(timm_input[None])
        naive_timm.append(torch.nn.functional.cosine_similarity(naive, expected).item())
    print(f"cosine card route {min(ours):.6f}; timm create_transform {min(naive_timm):.4f}")
    assert min(ours) >= 0.9999


@torch.no_grad()
def test_shipped_preprocess_gives_the_model_input_cxrkit_trained_on(pipeline):
    """Ingest decodes a large JPEG at a reduced DCT scale (decode_reduce, default lossy);
    preprocess.py must do the same, so its input equals EvalTransform on the stored row."""
    import hashlib
    import importlib.util

    import numpy as np
    import pyarrow.parquet as pq

    from cxrkit.io import bundled
    from cxrkit.io.dataset import dataset_shards
    from cxrkit.vision.transforms import EvalTransform

    export = pipeline["export"].path
    spec = importlib.util.spec_from_file_location("shipped_preprocess_2", export / "preprocess.py")
    shipped = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shipped)
    transform = shipped.transform_config(export)
    assert pipeline["dataset"].params["decode_reduce"] == transform["decode_reduce"] == "lossy"
    rows = {
        r["source_sha256"]: r
        for f in dataset_shards(pipeline["dataset"])
        for r in pq.read_table(f).to_pylist()
    }
    for path in bundled.pediatric_jpegs()[:3]:
        row = rows[hashlib.sha256(path.read_bytes()).hexdigest()]
        assert max(row["orig_height"], row["orig_width"]) >= 8 * 64  # the 1/8 scale applies
        stored = np.frombuffer(row["pixels"], row["dtype"]).reshape(row["height"], row["width"])
        expected = EvalTransform(64)(stored.copy())[0][None]  # (1, 1, 64, 64)
        got = shipped.preprocess(path, **transform)
        assert got.shape == expected.shape
        assert native.max_abs_diff(got, expected) <= 1e-6, path.name
    assert "DCT scale" in (export / "README.md").read_text()


@pytest.fixture(scope="module")
def maco_export(pipeline):
    """A tiny MaCo checkpoint (Hugging Face text tower) exported as open_clip."""
    from cxrkit.objectives.maco import MaCo

    root = pipeline["root"]
    checkpoint = make_checkpoint(
        root / "maco-ckpt", "maco", MaCo.tiny_config(), [pipeline["dataset"]]
    )
    cfg = ExportConfig(
        checkpoint=str(checkpoint.path), out=str(root / "maco-export"), formats=["open_clip"]
    )
    return checkpoint, run(cfg)


@torch.no_grad()
def test_the_cards_open_clip_snippet_gives_the_trained_on_embeddings(maco_export, pipeline):
    """Run the card's open_clip code as written, in a fresh process, on a real JPEG: the image
    embedding must be the one cxrkit computes on its trained-on input, the text one equal."""
    import hashlib
    import os
    import re
    import subprocess
    import sys

    import numpy as np
    import pyarrow.parquet as pq

    from cxrkit.io import bundled
    from cxrkit.io.dataset import dataset_shards
    from cxrkit.objectives.loading import load_objective
    from cxrkit.vision.transforms import EvalTransform

    checkpoint, export = maco_export
    card = (export.path / "README.md").read_text()
    code = re.search(r"### Load with open_clip\n\n```python\n(.*?)```", card, re.S).group(1)
    jpeg = bundled.pediatric_jpegs()[0]
    prelude = f"from PIL import Image\npil_image = Image.open({str(jpeg)!r})\n"
    code = code.replace("'image.jpg'", repr(str(jpeg)))
    saved = export.path.parent / "maco-snippet.pt"
    epilogue = f"\nimport torch\ntorch.save([image_embedding, text_embedding], {str(saved)!r})\n"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", prelude + code + epilogue],
        cwd=export.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    image_embedding, text_embedding = torch.load(saved)

    objective = load_objective(checkpoint.path).eval()
    rows = {
        r["source_sha256"]: r
        for f in dataset_shards(pipeline["dataset"])
        for r in pq.read_table(f).to_pylist()
    }
    row = rows[hashlib.sha256(jpeg.read_bytes()).hexdigest()]
    stored = np.frombuffer(row["pixels"], row["dtype"]).reshape(row["height"], row["width"])
    image = EvalTransform(32)(stored.copy())[0][None]  # (1, 1, 32, 32) as cxrkit trains
    expected = objective.encode_image(image)
    assert native.max_abs_diff(image_embedding, expected) <= 1e-4
    texts = objective.tokenize(["There is pneumonia."])
    assert native.max_abs_diff(text_embedding, objective.encode_text(texts)) <= 1e-4


def test_card_says_which_image_features_eval_used(pipeline, maco_export):
    """MaCo's eval features are the projected mean of the patch tokens, not the ViT's
    class-token `embedding` the image encoder folder gives; the card must not imply they
    are the same. For MAE they are the same."""
    _, export = maco_export
    maco_card = (export.path / "README.md").read_text()
    assert "eval features: `encode_image` of objective `maco`" in maco_card
    assert "mean of all patch tokens" in maco_card
    mae_card = (pipeline["export"].path / "README.md").read_text()
    assert "eval features: `embedding` above" in mae_card


def test_card_of_a_distilled_checkpoint_states_the_distillation_recipe(pipeline):
    """`cxrkit distill` publishes the merged student with params {synthetic_pairs} only; the
    recipe (PaCX settings, preset, optimiser, steps) lies in the training run it lists as
    its input checkpoint. The card must state that recipe, not "preset: not recorded"."""
    from cxrkit.artifacts import ArtifactWriter
    from cxrkit.objectives.loading import save_objective

    root = pipeline["root"]
    run_params = {
        "preset": "demo-pacx",
        "objective": {"name": "pacx", "tuning": "lora", "lora_r": 8, "clip_weight": 1.0},
        "optim": {"optimizer": "adamw", "lr": 0.001},
        "train": {"max_steps": 4},
        "data": {"image_size": 64, "augment": {"hflip": False}},
    }
    writer = ArtifactWriter(root / "distill-run", "checkpoint", run_params, [pipeline["dataset"]])
    work = writer.begin()
    (work / "metrics.jsonl").write_text("")
    training_run = writer.publish(stats={"steps": 4})
    student = load_objective_of(pipeline["checkpoint"])
    writer = ArtifactWriter(
        root / "distilled", "checkpoint", {"synthetic_pairs": True}, [training_run]
    )
    work = writer.begin()
    save_objective(student, work)
    (work / "metrics.jsonl").write_text("")
    distilled = writer.publish(stats={"distilled_from": "pacx", "steps": 4, "tuning": "lora"})

    export = run(
        ExportConfig(
            checkpoint=str(distilled.path), out=str(root / "distilled-export"), formats=["timm"]
        )
    )
    meta = json.loads((export.path / "metadata.json").read_text())["method"]
    assert meta["objective"] == "mae" and meta["preset"] == "demo-pacx"
    assert meta["training_objective"] == run_params["objective"]
    assert meta["optim"] == run_params["optim"] and meta["train"] == run_params["train"]
    card = (export.path / "README.md").read_text()
    assert "preset: demo-pacx" in card and '"lora_r": 8' in card


def load_objective_of(checkpoint):
    from cxrkit.objectives.loading import load_objective

    return load_objective(checkpoint.path)


def test_the_cards_timm_code_gives_a_model_whose_data_config_is_the_exports(pipeline, monkeypatch):
    """timm users call resolve_data_config + create_transform on the model the card builds:
    it must carry the export's 1-channel mean/std and letterbox, not the architecture's RGB
    defaults (a grey image crashed Normalize, and the transform centre-cropped, bicubic)."""
    import re

    import timm
    from PIL import Image

    from cxrkit.io import bundled

    export = pipeline["export"].path
    monkeypatch.chdir(export)
    code = re.search(
        r"### Load with timm\n\n```python\n(.*?)```", (export / "README.md").read_text(), re.S
    ).group(1)
    namespace: dict = {}
    exec(code, namespace)  # the card's code as written
    model = namespace["model"]
    local = timm.create_model("local-dir:image_encoder", pretrained=True)
    ours = timm.data.resolve_data_config({}, model=model)
    expected = timm.data.resolve_data_config({}, model=local)
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in ours.items()} == {
        k: tuple(v) if isinstance(v, list) else v for k, v in expected.items()
    }
    image = Image.open(bundled.pediatric_jpegs()[0]).convert("L")
    x = timm.data.create_transform(**ours)(image)
    assert x.shape == (1, 64, 64)
    with torch.no_grad():
        assert model(x[None]).shape == (1, 192)
