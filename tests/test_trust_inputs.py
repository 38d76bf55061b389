"""Bad input ends in one clear line and a distinct exit code, never a traceback: malicious
pickles (exit 4, nothing unpickled), unusable salt files (exit 3), bad settings (exit 2).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil

import pytest
import torch
from trust_support import cli, ingest_args, tiny_mapping

from cxrkit.errors import ArtifactError, ConfigError, InputError
from cxrkit.io.deid import load_or_create_salt
from cxrkit.train import checkpoint as ckpt

RAN = "cxrkit-trust-pickle-ran"


class _Payload:
    """Unpickling this would call os.system; the test proves it is never called."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious(path, marker) -> None:
    torch.save({"step": 1, "payload": _Payload(marker)}, path)


def _one_line_error(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


# ---------------------------------------------------------------- malicious pickles
def test_malicious_trainer_state_is_refused_with_exit_4(demo_dataset, tmp_path):
    from cxrkit.objectives.base import build_objective

    resume = tmp_path / "resume"
    resume.mkdir()
    mae = build_objective("mae", {"model": {"depth": 1, "image_size": 64}})
    ckpt.write_model(resume, mae.state_dict(), step=1)
    marker = tmp_path / RAN
    _malicious(resume / ckpt.STATE_FILE, marker)
    with pytest.raises(ArtifactError, match="refused"):
        ckpt.load(resume)
    result = cli(
        "pretrain", demo_dataset, "--out", tmp_path / "ck", "--preset", "demo-mae",
        "--set", f"train.resume={resume}", "--set", "model.depth=1",
    )  # fmt: skip
    assert result.exit_code == ArtifactError.exit_code
    assert "refused" in _one_line_error(result) and ckpt.STATE_FILE in result.output
    assert not marker.exists()


def test_malicious_rank_rng_file_is_refused(tmp_path):
    _malicious(tmp_path / "rng-rank1.pt", tmp_path / RAN)
    with pytest.raises(ArtifactError, match="refused"):
        ckpt.load_rank_rng(tmp_path, 1)
    assert not (tmp_path / RAN).exists()


def test_malicious_open_clip_weights_are_refused_with_exit_4(tmp_path):
    from cxrkit.evaluate.encoders import load_open_clip_model

    config = tmp_path / "clip.json"
    config.write_text(
        json.dumps(
            {
                "embed_dim": 32,
                "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
                "text_cfg": {
                    "context_length": 77,
                    "vocab_size": 49408,
                    "width": 64,
                    "heads": 2,
                    "layers": 1,
                },
            }  # fmt: skip
        )
    )
    weights = tmp_path / "evil.pt"
    _malicious(weights, tmp_path / RAN)
    with pytest.raises(ArtifactError, match="refused") as info:
        load_open_clip_model(config, weights, torch.device("cpu"), seed=0)
    assert info.value.exit_code == 4
    assert not (tmp_path / RAN).exists()


def test_a_plain_pickle_is_never_unpickled(tmp_path):
    path = tmp_path / ckpt.STATE_FILE
    path.write_bytes(pickle.dumps(_Payload(tmp_path / RAN)))
    with pytest.raises(ArtifactError):
        ckpt._load_state(path)
    assert not (tmp_path / RAN).exists()


# ---------------------------------------------------------------- salt
def test_salt_path_that_is_a_fifo_or_a_folder_is_a_clear_input_error(tmp_path):
    fifo = tmp_path / "salt.fifo"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        load_or_create_salt(fifo)  # would block forever if read
    with pytest.raises(InputError, match="not a regular file"):
        load_or_create_salt(tmp_path)


def test_salt_path_that_cannot_be_created_is_a_clear_input_error(tmp_path, salt_file):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot create the salt file"):
        load_or_create_salt(blocker / "salt.hex")
    result = cli(*ingest_args(tiny_mapping(tmp_path / "in"), tmp_path / "ds", blocker / "s"))
    assert result.exit_code == InputError.exit_code
    assert "salt" in _one_line_error(result)


def test_salt_readable_by_others_warns(tmp_path, caplog):
    path = tmp_path / "salt.hex"
    path.write_text("ab" * 32)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="cxrkit"):
        load_or_create_salt(path)
    assert any("can be read by other users" in r.getMessage() for r in caplog.records)
    caplog.clear()
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="cxrkit"):
        load_or_create_salt(path)
    assert not caplog.records


# ---------------------------------------------------------------- settings: exit 2
@pytest.mark.parametrize(
    ("extra", "env", "says"),
    [
        ([], {"SLURM_ARRAY_TASK_ID": "abc", "SLURM_ARRAY_TASK_COUNT": "4"}, "not an integer"),
        ([], {"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "4"}, "outside the array"),
        (["--workers", "-3"], {}, "--workers"),
        (["--num-shards", "0"], {}, "--num-shards"),
        (["--shard-index", "-1", "--num-shards", "2"], {}, "--shard-index"),
    ],
)
def test_bad_partition_and_worker_settings_exit_2(tmp_path, salt_file, extra, env, says):
    mapping = tiny_mapping(tmp_path / "in", count=1)
    result = cli(*ingest_args(mapping, tmp_path / "ds", salt_file), *extra, env=env)
    assert result.exit_code == ConfigError.exit_code, result.output
    assert says in result.output and "Traceback" not in result.output
    assert not (tmp_path / "ds").exists()


def test_a_json_config_that_is_a_list_exits_2(tmp_path, salt_file):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps([{"image_size": 64}]))
    mapping = tiny_mapping(tmp_path / "in", count=1)
    result = cli(*ingest_args(mapping, tmp_path / "ds", salt_file), "--config", config)
    assert result.exit_code == ConfigError.exit_code
    assert "not a list" in _one_line_error(result)


def test_malicious_checkpoint_dir_as_a_model_source_exits_4(tmp_path):
    """A checkpoint artifact's weights that are not safetensors are refused, not unpickled."""
    folder = tmp_path / "ck"
    folder.mkdir()
    _malicious(folder / "model.safetensors", tmp_path / RAN)
    shutil.copy(folder / "model.safetensors", folder / ckpt.STATE_FILE)
    with pytest.raises(ArtifactError):
        ckpt.load(folder)
    assert not (tmp_path / RAN).exists()
