"""The light commands start fast: `cxrkit --help`, `show`, `verify`, `presets` and
`models` never import the heavy libraries (torch, spaCy, timm, open_clip, transformers),
and a no-op re-run of `cxrkit annotate` decides it has nothing to do before importing
spaCy or torch (its artifact id is computed from the config and the input ids alone).

Guarded by the import graph, not by a timer (shared machines are noisy): each
command runs in a fresh interpreter and the test reads ``sys.modules`` after it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cxrkit.artifacts import ArtifactWriter

HEAVY = ("torch", "spacy", "thinc", "scispacy", "timm", "open_clip", "transformers", "scipy",
         "sklearn")  # fmt: skip

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
    [["--help"], ["show", "{art}"], ["verify", "{art}"], ["presets"], ["models"],
     ["models", "tiny-clip"], ["models", "--json"]],
    ids=["help", "show", "verify", "presets", "models", "models-one", "models-json"],
)  # fmt: skip
def test_light_command_imports_no_heavy_library(args, artifact):
    result = run_probe([a.replace("{art}", str(artifact)) for a in args])
    assert result["exit_code"] == 0
    assert result["heavy"] == [], f"cxrkit {args[0]} imported {result['heavy']}"


def test_probe_sees_a_heavy_import_when_there_is_one():
    # The checker itself: a command run after `import timm` must report timm and torch.
    result = run_probe(["--help"], preload=("timm",))
    assert {"timm", "torch"} <= set(result["heavy"])


# ---------------------------------------------------------------- annotate: the no-op re-run


@pytest.fixture(scope="module")
def annotated(demo_dataset, tmp_path_factory):
    """The real demo dataset annotated by a real run in this process (spaCy loaded)."""
    from cxrkit.stages.annotate import AnnotateConfig, run

    out = tmp_path_factory.mktemp("startup-annotate") / "annotations"
    run(AnnotateConfig(dataset=str(demo_dataset), out=str(out)))
    return out


def test_annotate_noop_rerun_imports_no_spacy_or_torch(annotated, demo_dataset):
    before = (annotated / "manifest.json").read_bytes()
    result = run_probe(["annotate", str(demo_dataset), "--out", str(annotated)])
    assert result["exit_code"] == 0
    assert result["heavy"] == [], f"a no-op annotate imported {result['heavy']}"
    # Nothing was rebuilt: the id computed without spaCy is the real run's id.
    assert (annotated / "manifest.json").read_bytes() == before


def test_annotate_rerun_with_another_setting_is_not_a_noop(annotated, demo_dataset):
    """The check that makes the no-op test mean something: a changed setting gives
    another id, and the same cheap path says the artifact is not up to date."""
    from cxrkit.artifacts import ArtifactWriter, open_artifact
    from cxrkit.io.schema import ANNOTATIONS_SCHEMA_VERSION
    from cxrkit.stages.annotate import AnnotateConfig, _id_params
    from cxrkit.text.prompts import load_prompts

    dataset = open_artifact(demo_dataset, kind="dataset")
    same, other = (
        ArtifactWriter(annotated, "annotations", _id_params(cfg, load_prompts(None)), [dataset],
                       schema_version=ANNOTATIONS_SCHEMA_VERSION, lock=False)
        for cfg in (AnnotateConfig(dataset=str(demo_dataset), out=str(annotated)),
                    AnnotateConfig(dataset=str(demo_dataset), out=str(annotated), contours=False))
    )  # fmt: skip
    assert same.is_current() and not other.is_current()


FINGERPRINT = """
import json, sys
from cxrkit.stages.annotate import labeler_fingerprint
lean = labeler_fingerprint()
loaded = [m for m in ("spacy", "thinc", "torch") if m in sys.modules]
import cxrkit.text.entities  # the spaCy pipeline, as a real annotate worker has it
print(json.dumps({"lean": lean, "loaded": loaded, "full": labeler_fingerprint()}))
"""


def test_labeler_fingerprint_is_the_same_with_and_without_spacy_loaded():
    out = subprocess.run([sys.executable, "-c", FINGERPRINT], capture_output=True, text=True,
                         check=True, timeout=120)  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    assert result["lean"] == result["full"] and len(result["lean"]) == 64


WORKER = """
import sys
from cxrkit.config import to_dict
from cxrkit.stages.annotate import AnnotateConfig, _init_worker
_init_worker(to_dict(AnnotateConfig(dataset=sys.argv[1], out="unused")), sys.argv[1])
print([m for m in ("spacy", "torch", "timm", "open_clip") if m in sys.modules])
"""


def test_annotate_worker_with_the_model_free_pipeline_imports_no_torch(demo_dataset):
    out = subprocess.run([sys.executable, "-c", WORKER, str(demo_dataset)], capture_output=True,
                         text=True, check=True, timeout=120)  # fmt: skip
    assert out.stdout.strip().splitlines()[-1] == "['spacy']"
