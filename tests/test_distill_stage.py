"""`cxrkit distill` end to end on CPU: real images, real ECG and real serum values (synthetic pairs)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from cxrkit.artifacts import open_artifact
from cxrkit.config import resolve
from cxrkit.io.dataset import dataset_shards
from cxrkit.stages import distill, physio, pretrain
from cxrkit.stages.demo_physio import build_demo_physio

TINY_MAE = [
    "model.depth=2",
    "objective.decoder_depth=1",
    "objective.decoder_dim=64",
    "objective.decoder_heads=2",
    "train.max_steps=2",
    "data.batch_size=4",
]
TINY_DISTILL = [
    "teacher.ecg_dim=32",
    "teacher.ecg_width=8",
    "teacher.lab_dim=16",
    "teacher.lab_hidden=32",
    "teacher.epochs=10",
    "teacher.lr=3e-3",
    "teacher.batch_size=4",
    "pairs.undated=latest",
    "data.batch_size=8",
    "data.num_workers=0",
    "data.augment.scale_min=1.0",
    "objective.shared_dim=16",
    "objective.mae_weight=0.0",
    "objective.head_dropout=0.0",
    "optim.lr=3e-3",
    "optim.warmup_steps=0",
    "train.max_steps=30",
    "train.log_every=1",
    "train.checkpoint_every=10",
    "train.precision=fp32",
]


@pytest.fixture(scope="module")
def student(demo_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("student") / "mae"
    cfg = resolve(
        pretrain.PretrainConfig,
        preset="demo-mae",
        flags={"out": str(out), "data.dataset": str(demo_dataset)},
        sets=TINY_MAE,
        stage="pretrain",
    )
    return pretrain.run(cfg)


@pytest.fixture(scope="module")
def physio_artifact(demo_inputs, demo_dataset, salt_file, tmp_path_factory):
    with open(demo_inputs) as handle:
        patients = [r["patient_id"] for r in csv.DictReader(handle) if r["patient_id"]]
    files = build_demo_physio(tmp_path_factory.mktemp("physio-raw"), patients)
    cfg = physio.PhysioConfig(
        out=str(tmp_path_factory.mktemp("physio") / "physio"),
        ecg=[str(files["ecg"])],
        ecg_map=str(files["ecg_map"]),
        labs=str(files["labs"]),
        dataset=str(demo_dataset),
        salt_file=str(salt_file),
    )
    return physio.run(cfg)


@pytest.fixture(scope="module")
def distilled(demo_dataset, student, physio_artifact, tmp_path_factory):
    out = tmp_path_factory.mktemp("distill") / "pacx"
    cfg = resolve(
        distill.DistillConfig,
        flags={
            "out": str(out),
            "dataset": str(demo_dataset),
            "physio": str(physio_artifact.path),
            "student": str(student.path),
            "synthetic_pairs": True,
        },
        sets=TINY_DISTILL,
    )
    return cfg, distill.run(cfg)


def test_physio_of_the_demo_joins_the_dataset_patients(physio_artifact):
    stats = physio_artifact.stats
    assert stats["ecgs"] == 13 and stats["lab_panels"] == 12 and stats["rejects"] == 0


def _pair_with_physio(files, demo_dataset, salt_file, tmp_path, caplog):
    """ingest-physio of ``files`` (build_demo_physio's), then pairs with the demo dataset,
    the pairing's warnings captured. Returns (physio artifact, pairs artifact)."""
    from cxrkit.stages import pairs

    cfg = physio.PhysioConfig(out=str(tmp_path / "physio"), ecg=[str(files["ecg"])],
                              ecg_map=str(files["ecg_map"]), labs=str(files["labs"]),
                              salt_file=str(salt_file))  # fmt: skip
    made = physio.run(cfg)
    with caplog.at_level("WARNING", logger="cxrkit.stages.pairs"):
        return made, pairs.run(demo_dataset, made.path, tmp_path / "pairs", pairs.PairsConfig())


def test_physiology_sharing_no_patient_with_the_images_is_warned_about(
    demo_inputs, demo_dataset, salt_file, tmp_path, caplog
):
    with open(demo_inputs) as handle:
        patients = [r["patient_id"] for r in csv.DictReader(handle) if r["patient_id"]]
    # The ids as another table writes them (MIMIC-IV: 10000032 for folder p10000032).
    files = build_demo_physio(tmp_path / "raw", [f"x{p}" for p in patients])
    made, paired = _pair_with_physio(files, demo_dataset, salt_file, tmp_path, caplog)
    assert paired.stats["coverage"]["none"] == paired.stats["coverage"]["images"]
    warned = [r.getMessage() for r in caplog.records if r.name == "cxrkit.stages.pairs"]
    assert len(warned) == 1 and "every image is unpaired" in warned[0]
    assert "p10000032" in warned[0] and "--salt-file" in warned[0]


def test_physiology_sharing_few_patients_with_the_images_is_warned_about(
    demo_inputs, demo_dataset, salt_file, tmp_path, caplog
):
    """One patient keyed as ingest keys it, the others as another table writes them:
    some images pair, so no 'every image is unpaired', but a warning with the counts."""
    with open(demo_inputs) as handle:
        patients = sorted({r["patient_id"] for r in csv.DictReader(handle) if r["patient_id"]})
    assert len(patients) > 5  # one of them is under FEW_SHARED of the image patients
    files = build_demo_physio(tmp_path / "raw", patients[:1] + [f"x{p}" for p in patients[1:]])
    made, paired = _pair_with_physio(files, demo_dataset, salt_file, tmp_path, caplog)
    assert paired.stats["coverage"]["images"] == 17
    warned = [r.getMessage() for r in caplog.records if r.name == "cxrkit.stages.pairs"]
    assert not any("every image is unpaired" in w for w in warned)
    shards = dataset_shards(open_artifact(demo_dataset))
    images = {r["patient_id"] for f in shards for r in pq.read_table(f).to_pylist()}
    for name, rows in (("ECG", physio.load_ecgs(made)[1]), ("lab", physio.load_labs(made))):
        (said,) = [w for w in warned if f"images and {name} records" in w]
        assert f"1 of the {len(images)} image patients" in said
        assert f"1 of its {len({r['patient_id'] for r in rows})} {name} patients" in said


def test_pairs_cover_the_patients_with_physiology(distilled):
    cfg, _ = distilled
    pairs = distill.work_dir(cfg) / "pairs"
    coverage = json.loads((pairs / "manifest.json").read_text())["stats"]["coverage"]
    assert coverage["images"] == 17  # 16 pediatric + 1 adult DICOM
    assert coverage["with_ecg"] == 13 and coverage["with_labs"] == 12
    assert coverage["none"] >= 1  # the adult DICOM's patient has no physiology


def test_the_teachers_trained_here_learn(distilled):
    cfg, _ = distilled
    stats = json.loads((distill.work_dir(cfg) / "teachers" / "manifest.json").read_text())["stats"]
    assert stats["ecg_loss_final"] < stats["ecg_loss_first"]
    assert stats["lab_loss_final"] < stats["lab_loss_first"]
    assert stats["lab_panels"] < 12  # the lab scaling and DAE see training patients only


def test_distillation_loss_falls(distilled):
    cfg, artifact = distilled
    rows = [json.loads(r) for r in (artifact.path / "metrics.jsonl").read_text().splitlines()]
    first = sum(r["loss"] for r in rows[:5]) / 5
    last = sum(r["loss"] for r in rows[-5:]) / 5
    assert last < first, (first, last)
    assert {"clip_ecg", "clip_lab", "reg_ecg", "reg_lab"} <= set(rows[0])


def test_output_is_an_image_only_mae_checkpoint_with_lora_merged(distilled):
    from cxrkit.models.checkpoint import load_image_encoder
    from cxrkit.objectives.loading import load_objective

    cfg, artifact = distilled
    config = json.loads((artifact.path / "config.json").read_text())
    assert config["objective"] == "mae" and artifact.stats["note"] == distill.SYNTHETIC_NOTE
    # the MAE term and the output keep the student's settings (demo-mae: raw-pixel targets)
    assert config["objective_config"]["norm_pix_loss"] is False
    student = load_objective(artifact.path)
    run = load_objective(distill.work_dir(cfg) / "run")
    images = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        trained = run.eval().mae.encoder(images)
        assert torch.allclose(student.encoder(images), trained, atol=1e-5)
        encoder, _ = load_image_encoder(artifact.path)
        assert torch.allclose(encoder(images), trained, atol=1e-5)
    # distillation changed the student
    before = load_objective(cfg.student)
    with torch.no_grad():
        assert not torch.allclose(before.encoder(images), trained, atol=1e-4)


def test_exported_encoder_runs_in_timm_and_onnx_runtime_without_physiology(distilled, tmp_path):
    from cxrkit.stages import export

    _, artifact = distilled
    formats = ["safetensors", "timm", "onnx"]
    exported = export.run(
        export.ExportConfig(
            checkpoint=str(artifact.path), out=str(tmp_path / "exp"), formats=formats
        )
    )
    assert exported.stats["formats"] == {fmt: "ok" for fmt in formats}, exported.stats


def test_eval_takes_the_distilled_checkpoint_like_any_other(distilled, demo_dataset, tmp_path):
    from cxrkit.artifacts import lineage
    from cxrkit.stages import eval as evaluate

    _, artifact = distilled
    result = evaluate.run(
        resolve(
            evaluate.EvalConfig,
            flags={
                "dataset": str(demo_dataset),
                "checkpoint": str(artifact.path),
                "out": str(tmp_path / "ev"),
                "protocol": "cv",
                "tasks": ["probe"],
                "fractions": [1.0],
                "seeds": [0],
                "bootstrap": 50,
            },
        )
    )
    metrics = json.loads((result.path / "metrics.json").read_text())
    probe = metrics["tasks"]["probe"]["fractions"]["1"]["seeds"]["0"]["classes"]["Pneumonia"]
    assert probe["status"] == "ok"
    kinds = {row["kind"] for row in lineage(artifact.path)}
    assert {"pairs", "embeddings", "teachers", "physio", "dataset"} <= kinds


def test_same_command_again_is_a_no_op(distilled):
    cfg, artifact = distilled
    assert distill.run(cfg).id == artifact.id


def test_teachers_loaded_from_a_local_artifact_give_the_same_embeddings(distilled, tmp_path):
    import dataclasses

    cfg, _ = distilled
    trained = distill.work_dir(cfg) / "teachers"
    again = dataclasses.replace(
        cfg, teachers=str(trained), work=str(tmp_path / "w"), stage="teachers"
    )
    parts = distill.prepare(again)
    original = json.loads((distill.work_dir(cfg) / "embeddings" / "manifest.json").read_text())
    assert parts["embeddings"].id == original["id"]
    assert not (tmp_path / "w" / "teachers").exists()  # loaded, not trained


def test_the_run_counts_its_intermediate_artifacts_by_id_not_path(distilled):
    cfg, _ = distilled
    run = json.loads((distill.work_dir(cfg) / "run" / "manifest.json").read_text())
    assert {"student", "pairs", "embeddings"}.isdisjoint(run["params"]["objective"])
    by_kind = {i["kind"]: i["id"] for i in run["inputs"]}
    for part in ("pairs", "embeddings"):
        part_manifest = json.loads((distill.work_dir(cfg) / part / "manifest.json").read_text())
        assert by_kind[part] == part_manifest["id"]
    student = json.loads((Path(cfg.student) / "manifest.json").read_text())
    assert by_kind["checkpoint"] == student["id"]


def test_moving_the_work_directory_retrains_nothing(distilled, tmp_path, monkeypatch):
    import dataclasses
    import shutil

    from cxrkit.train.loop import Trainer

    cfg, artifact = distilled
    moved = tmp_path / "elsewhere" / "work"
    shutil.copytree(distill.work_dir(cfg), moved)  # what `mv OUT.work elsewhere/` leaves
    before = (moved / "run" / "manifest.json").read_bytes()

    def no_training(*args, **kwargs):
        raise AssertionError("the moved run was trained again")

    monkeypatch.setattr(Trainer, "fit", no_training)
    again = distill.run(dataclasses.replace(cfg, work=str(moved)))
    assert again.id == artifact.id
    assert (moved / "run" / "manifest.json").read_bytes() == before  # not republished


def test_the_run_rebuilds_and_publishes_with_the_student_moved_away(
    distilled, tmp_path, monkeypatch
):
    """OUT.work/run's config names no student path (its weights are in the run), so OUT is
    published from a moved run directory while the student sits elsewhere; before, this
    ended in exit 4 "cannot rebuild objective 'pacx' (...student: no such checkpoint...)"."""
    import dataclasses
    import os
    import shutil

    from cxrkit.train.loop import Trainer

    cfg, artifact = distilled
    run_config = json.loads((distill.work_dir(cfg) / "run" / "config.json").read_text())
    assert run_config["objective_config"]["student"] is None
    student = shutil.copytree(cfg.student, tmp_path / "student")  # the same artifact elsewhere
    work = shutil.copytree(distill.work_dir(cfg), tmp_path / "work")
    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: pytest.fail("trained again"))
    away = Path(cfg.student).with_name("away")
    os.rename(cfg.student, away)
    try:
        moved = dataclasses.replace(
            cfg, student=str(student), work=str(work), out=str(tmp_path / "pacx")
        )
        again = distill.run(moved)
    finally:
        os.rename(away, cfg.student)
    assert again.id == artifact.id
