"""The checkpoint file format: one typed reader of config.json, layers that import one way."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import cxrkit
from cxrkit.errors import ArtifactError
from cxrkit.models.checkpoint import (
    CheckpointConfig,
    Preprocessing,
    read_checkpoint_config,
    write_checkpoint,
)

TINY_VIT = {"arch": "vit_tiny_patch16_224", "image_size": 32, "patch_size": 8, "depth": 1}


def _config(**changes) -> CheckpointConfig:
    base = {
        "objective": "mae",
        "objective_config": {"model": TINY_VIT, "mask_ratio": 0.75},
        "image_encoder_prefix": "encoder.",
        "preprocessing": Preprocessing(image_size=32),
    }
    return CheckpointConfig(**{**base, **changes})


def test_config_json_round_trips_through_the_typed_reader(tmp_path):
    write_checkpoint(tmp_path, _config(), {})
    assert read_checkpoint_config(tmp_path) == _config()


def test_config_json_keeps_its_key_order(tmp_path):
    write_checkpoint(tmp_path, _config(), {})
    raw = json.loads((tmp_path / "config.json").read_text())
    assert list(raw) == ["objective", "objective_config", "image_encoder_prefix", "preprocessing"]
    assert list(raw["preprocessing"]) == ["image_size", "in_chans", "mean", "std", "photometric"]
    assert raw["preprocessing"]["mean"] == 0.5 and raw["preprocessing"]["std"] == 0.5


def test_image_size_falls_back_to_the_model_table():
    config = _config(preprocessing=Preprocessing())
    assert config.image_size == 32 and config.vision_config().patch_size == 8


def test_exported_encoder_config_is_not_a_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model": TINY_VIT}))
    with pytest.raises(ArtifactError, match="not a cxrkit checkpoint"):
        read_checkpoint_config(tmp_path)


def test_unknown_preprocessing_key_is_an_artifact_error(tmp_path):
    raw = _config().to_dict()
    raw["preprocessing"]["gamma"] = 2.2
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="preprocessing"):
        read_checkpoint_config(tmp_path)


def test_checkpoint_format_imports_neither_objectives_nor_export():
    code = (
        "import sys, cxrkit.models.checkpoint; "
        "print(sorted(m for m in sys.modules if m.startswith(('cxrkit.objectives', 'cxrkit.export'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _cxrkit_imports(path: Path) -> set[str]:
    """Every cxrkit module a file imports, lazy imports inside functions included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cxrkit"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("cxrkit"))
    return found


def test_models_never_import_objectives_or_export_even_lazily():
    package = Path(cxrkit.__file__).parent
    upward = {
        f"{path.relative_to(package)}: {module}"
        for path in (package / "models").glob("*.py")
        for module in _cxrkit_imports(path)
        if module.startswith(("cxrkit.objectives", "cxrkit.export", "cxrkit.stages"))
    }
    assert upward == set()
