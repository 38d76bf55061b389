"""Artifacts given together must belong together: a stage refuses, before any heavy work and
in one line naming both artifacts and what differs, another dataset's annotations, an
annotations artifact of another version of the dataset where it would read pixels, a
checkpoint of another run as the point to resume from, and physiology pseudonymised
with another salt; where partial overlap is legitimate it warns with counts.
"""

from __future__ import annotations

import logging

import pytest
from physio_support import serum_long_table, write_wfdb
from pretrain_support import write_annotations, write_dataset
from trust_support import cli

from cxrkit.artifacts import open_artifact
from cxrkit.errors import InputError
from cxrkit.io import linkage

TINY = ["model.depth=1", "objective.decoder_depth=1", "objective.decoder_dim=32",
        "objective.decoder_heads=2", "data.batch_size=4", "data.num_workers=0",
        "train.max_steps=1"]  # fmt: skip
CONTOUR = ["objective.masking=contour", "objective.mask_ratio_inside=0.9",
           "objective.mask_ratio_outside=0.5"]  # fmt: skip


def _pretrain(dataset, out, *sets, annotations=None, preset="demo-mae"):
    args = ["pretrain", dataset, "--out", out] + (["--preset", preset] if preset else [])
    if annotations is not None:
        args += ["--annotations", annotations]
    for item in [*TINY, *sets]:
        args += ["--set", item]
    return cli(*args)


def _error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    """One dataset in two versions (stored at 48 and 40 px: same image ids, other pixels)
    and the annotations of the first."""
    root = tmp_path_factory.mktemp("versions")
    old = write_dataset(root / "v48", size=48)
    new = write_dataset(root / "v40", size=40)
    return old, new, write_annotations(root / "ann48", old)


def test_pretrain_refuses_the_annotations_of_another_dataset(demo_dataset, versions, tmp_path):
    _, _, foreign = versions  # image ids img-00.. never appear in the demo dataset
    result = _pretrain(demo_dataset, tmp_path / "ck", *CONTOUR, annotations=foreign.path)
    assert result.exit_code == InputError.exit_code
    line = _error_line(result)
    assert str(foreign.path) in line and str(demo_dataset) in line
    assert open_artifact(demo_dataset).id[:12] in line and "no image in common" in line
    assert not list(tmp_path.glob("ck*"))  # refused before a run directory was made


def test_pretrain_refuses_contours_of_another_version_of_the_dataset(versions, tmp_path):
    old, new, annotations = versions
    result = _pretrain(new.path, tmp_path / "ck", *CONTOUR, annotations=annotations.path)
    assert result.exit_code == InputError.exit_code
    line = _error_line(result)
    assert old.id[:12] in line and new.id[:12] in line
    assert "size 48 -> 40" in line and "16 of 16 images in common" in line
    assert not list(tmp_path.glob("ck*"))


def test_labels_of_another_version_are_a_warning_with_counts(versions, tmp_path):
    old, new, annotations = versions
    assert linkage.check_annotations(annotations, old, {"labels"}) is None
    said = linkage.check_annotations(annotations, new, {"labels"}, split="train")
    assert said is not None and "16 of 16 images have annotations, 0 are read" in said
    assert "size 48 -> 40" in said


def test_pretrain_logs_the_labels_warning(versions, tmp_path, caplog):
    _, new, annotations = versions
    with caplog.at_level(logging.WARNING, logger="cxrkit"):
        result = _pretrain(new.path, tmp_path / "ck", annotations=annotations.path)
    assert result.exit_code == 0, result.output
    assert "were made from dataset" in result.output + caplog.text


@pytest.fixture(scope="module")
def finished_run(versions, tmp_path_factory):
    """A one-step MAE checkpoint trained on the 48-px version."""
    old, _, _ = versions
    out = tmp_path_factory.mktemp("run") / "ck"
    assert _pretrain(old.path, out).exit_code == 0
    return out


def test_resume_from_a_checkpoint_of_another_dataset_is_refused(versions, finished_run, tmp_path):
    old, new, _ = versions
    result = _pretrain(new.path, tmp_path / "ck", "train.max_steps=2",
                       f"train.resume={finished_run}")  # fmt: skip
    assert result.exit_code == InputError.exit_code
    line = _error_line(result)
    assert "another run" in line and old.id[:12] in line and new.id[:12] in line
    assert not list(tmp_path.glob("ck*"))  # nothing published under the new run's id


def test_resume_from_a_run_with_other_settings_names_the_setting(versions, finished_run, tmp_path):
    old, _, _ = versions
    result = _pretrain(old.path, tmp_path / "ck", "train.max_steps=2", "optim.lr=0.5",
                       f"train.resume={finished_run}")  # fmt: skip
    assert result.exit_code == InputError.exit_code
    assert "optim.lr" in _error_line(result) and "0.5" in _error_line(result)


def test_resume_from_the_same_run_continues_it(versions, finished_run, tmp_path):
    old, _, _ = versions
    result = _pretrain(old.path, tmp_path / "ck", "train.max_steps=2",
                       f"train.resume={finished_run}")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert open_artifact(tmp_path / "ck").stats["resumed_from_step"] == 1


@pytest.fixture(scope="module")
def other_salt_physio(tmp_path_factory):
    """A physio artifact pseudonymised with another salt than the demo dataset's."""
    root = tmp_path_factory.mktemp("other-salt")
    salt = root / "salt.hex"
    salt.write_text("11" * 32)
    salt.chmod(0o600)
    record = write_wfdb(root / "ecg", "rec", patient="p1")
    labs = root / "labs.csv"
    serum_long_table(["p1", "p2"]).to_csv(labs, index=False)
    result = cli("ingest-physio", "--ecg", record.with_suffix(".hea"), "--labs", labs,
                 "--out", root / "physio", "--salt-file", salt)  # fmt: skip
    assert result.exit_code == 0, result.output
    return root / "physio", salt


def test_distill_refuses_physiology_pseudonymised_with_another_salt(
    demo_dataset, other_salt_physio, tmp_path
):
    physio, _ = other_salt_physio
    result = cli("distill", demo_dataset, "--physio", physio, "--out", tmp_path / "student",
                 "--stage", "pairs")  # fmt: skip
    assert result.exit_code == InputError.exit_code
    line = _error_line(result)
    assert str(physio) in line and str(demo_dataset) in line and "salt" in line
    assert not list(tmp_path.glob("student.work/pairs*"))


def test_ingest_physio_refuses_a_dataset_ingested_with_another_salt(
    demo_dataset, other_salt_physio, tmp_path
):
    _, salt = other_salt_physio
    record = write_wfdb(tmp_path / "ecg", "rec", patient="p1")
    result = cli("ingest-physio", "--ecg", record.with_suffix(".hea"), "--dataset", demo_dataset,
                 "--out", tmp_path / "physio", "--salt-file", salt)  # fmt: skip
    assert result.exit_code == InputError.exit_code
    assert "salt" in _error_line(result) and str(demo_dataset) in _error_line(result)
    assert not list(tmp_path.glob("physio*"))


def test_eval_warns_about_labels_of_another_version_of_the_dataset(
    versions, finished_run, tmp_path, monkeypatch
):
    import importlib.resources
    import json

    from cxrkit.stages.eval import EvalConfig, run

    monkeypatch.setenv("CXRKIT_CACHE", str(tmp_path / "cache"))
    old, new, annotations = versions
    cfg = EvalConfig(dataset=str(new.path), checkpoint=str(finished_run), out=str(tmp_path / "ev"),
                     annotations=str(annotations.path), tasks=["probe"], protocol="cv",
                     fractions=[1.0], seeds=[0], bootstrap=20, plots=False, label_source="annotations",
                     prompts=str(importlib.resources.files("cxrkit.presets") / "prompts-default.json"))  # fmt: skip
    done = run(cfg)
    warnings = json.loads((done.path / "metrics.json").read_text())["warnings"]
    said = [w for w in warnings if "were made from dataset" in w]
    assert len(said) == 1 and old.id[:12] in said[0] and new.id[:12] in said[0]
    assert "16 of 16 images have annotations" in said[0]


@pytest.fixture(scope="module")
def pacx_inputs(versions, other_salt_physio, tmp_path_factory):
    """Pairs of the 48-px version (no salt recorded there) with a physio artifact, and an
    embeddings artifact of that physio artifact (its files are never read by the checks)."""
    from cxrkit.artifacts import ArtifactWriter
    from cxrkit.stages import pairs

    old, _, _ = versions
    physio = open_artifact(other_salt_physio[0])
    root = tmp_path_factory.mktemp("pacx")
    paired = pairs.run(old.path, physio.path, root / "pairs", pairs.PairsConfig())

    def embeddings(name, made_from):
        writer = ArtifactWriter(root / name, "embeddings", {}, [made_from])
        (writer.begin() / "note.txt").write_text("x")
        return writer.publish(schema={"ecg_dim": 4, "lab_dim": 4})

    other = {"kind": "physio", "id": "f" * 64, "path": "elsewhere"}
    return paired, embeddings("emb", physio), embeddings("emb-other", other)


def _pacx(dataset, out, student, paired, embeddings):
    return _pretrain(dataset, out, "objective.name=pacx", f"objective.student={student}",
                     f"objective.pairs={paired.path}", f"objective.embeddings={embeddings.path}",
                     "objective.ecg_dim=4", "objective.lab_dim=4", "data.image_size=64",
                     "model.image_size=64", "model.patch_size=8", "model.arch=vit_tiny_patch16_224",
                     preset=None)  # fmt: skip


def test_pacx_refuses_pairs_of_another_dataset(demo_dataset, finished_run, pacx_inputs, tmp_path):
    paired, embeddings, _ = pacx_inputs
    result = _pacx(demo_dataset, tmp_path / "ck", finished_run, paired, embeddings)
    assert result.exit_code == InputError.exit_code, result.output
    line = _error_line(result)
    assert str(paired.path) in line and "no image in common" in line
    assert open_artifact(demo_dataset).id[:12] in line


def test_pacx_refuses_embeddings_of_another_physio_than_the_pairs(
    versions, finished_run, pacx_inputs, tmp_path
):
    old, _, _ = versions
    paired, _, foreign = pacx_inputs
    result = _pacx(old.path, tmp_path / "ck", finished_run, paired, foreign)
    assert result.exit_code == InputError.exit_code
    assert str(foreign.path) in _error_line(result) and "ffffffffffff" in _error_line(result)


def _physio_with_tests(root, salt, rename=None):
    """A physio artifact of two patients' ECG and serum panels; ``rename`` maps test names
    (the same number of tests, other analytes)."""
    root.mkdir(parents=True, exist_ok=True)
    records = [write_wfdb(root / "ecg", f"rec{i}", patient=p) for i, p in enumerate(["p1", "p2"])]
    table = serum_long_table(["p1", "p2"])
    if rename:
        table["test"] = table["test"].replace(rename)
    table.to_csv(root / "labs.csv", index=False)
    args = ["ingest-physio", "--labs", root / "labs.csv", "--out", root / "physio",
            "--salt-file", salt]  # fmt: skip
    for record in records:
        args += ["--ecg", record.with_suffix(".hea")]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return open_artifact(root / "physio")


def test_teachers_of_a_physio_with_other_lab_tests_are_refused(other_salt_physio, tmp_path):
    from cxrkit.models.physio import TeacherConfig
    from cxrkit.stages import teachers

    _, salt = other_salt_physio
    first = _physio_with_tests(tmp_path / "a", salt)
    second = _physio_with_tests(tmp_path / "b", salt, rename={"s1": "troponin"})
    cfg = TeacherConfig(ecg_dim=8, ecg_width=4, lab_dim=4, lab_hidden=8, epochs=1, batch_size=2)
    trained = teachers.train(first.path, tmp_path / "teachers", cfg)
    with pytest.raises(InputError, match=r"lab tests .*troponin") as caught:
        teachers.embed(trained.path, second.path, tmp_path / "emb")
    assert str(trained.path) in str(caught.value) and str(second.path) in str(caught.value)
    assert not (tmp_path / "emb").exists()
    assert teachers.embed(trained.path, first.path, tmp_path / "emb-same").kind == "embeddings"
