"""`cxrkit eval ARTIFACT...`: positional artifacts are routed by their manifest's kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxrkit.artifacts import ArtifactWriter
from cxrkit.errors import ConfigError
from cxrkit.stages.eval import inputs_by_kind


def _artifact(root: Path, kind: str) -> Path:
    writer = ArtifactWriter(root / kind, kind, {"kind": kind})
    writer.begin()
    return writer.publish().path


def test_artifacts_are_routed_by_kind_in_any_order(tmp_path):
    paths = {kind: _artifact(tmp_path, kind) for kind in ("annotations", "dataset", "checkpoint")}
    routed = inputs_by_kind([paths["annotations"], paths["dataset"], paths["checkpoint"]])
    assert routed == {kind: str(path) for kind, path in paths.items()}


def test_a_kind_given_twice_is_a_config_error(tmp_path):
    dataset = _artifact(tmp_path, "dataset")
    with pytest.raises(ConfigError, match="two dataset artifacts"):
        inputs_by_kind([dataset, dataset])


def test_an_artifact_eval_does_not_read_is_a_config_error(tmp_path):
    export = _artifact(tmp_path, "export")
    with pytest.raises(ConfigError, match="a export artifact; eval takes"):
        inputs_by_kind([export])
