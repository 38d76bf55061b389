"""The light commands start fast: `cxrkit --help`, `show`, `verify` and `presets`
never import the heavy libraries (torch, spaCy, timm, open_clip, transformers).

Guarded by the import graph, not by a timer (shared machines are noisy): each
command runs in a fresh interpreter and the test reads ``sys.modules`` after it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cxrkit.artifacts import ArtifactWriter

HEAVY = ("torch", "spacy", "thinc", "timm", "open_clip", "transformers", "scipy", "sklearn")

PROBE = """
import json, sys, importlib
for name in json.loads(sys.argv[3]):
    importlib.import_module(name)
from typer.testing import CliRunner
import cxrkit.cli
result = CliRunner().invoke(cxrkit.cli.app, json.loads(sys.argv[1]))
heavy = [m for m in json.loads(sys.argv[2]) if m in sys.modules]
print(json.dumps({"exit_code": result.exit_code, "heavy": heavy}))
"""


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    # "pairs": a kind without required files (a "dataset" must hold rejects.parquet)
    writer = ArtifactWriter(tmp_path_factory.mktemp("startup") / "art", "pairs", {"n": 1}, [])
    work = writer.begin()
    (work / "data.txt").write_text("x")
    return writer.publish().path


def run_probe(args: list[str], preload: tuple[str, ...] = ()) -> dict:
    """Run ``cxrkit ARGS`` in a fresh interpreter; return its exit code and heavy modules."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY), json.dumps(preload)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "args",
    [["--help"], ["show", "{art}"], ["verify", "{art}"], ["presets"]],
    ids=["help", "show", "verify", "presets"],
)
def test_light_command_imports_no_heavy_library(args, artifact):
    result = run_probe([a.replace("{art}", str(artifact)) for a in args])
    assert result["exit_code"] == 0
    assert result["heavy"] == [], f"cxrkit {args[0]} imported {result['heavy']}"


def test_probe_sees_a_heavy_import_when_there_is_one():
    # The checker itself: a command run after `import timm` must report timm and torch.
    result = run_probe(["--help"], preload=("timm",))
    assert {"timm", "torch"} <= set(result["heavy"])
