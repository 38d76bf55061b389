"""Teachers and their cached embeddings (the `distill --stage teachers` part).

- :func:`train` : physio artifact -> ``teachers`` artifact (``ecg.safetensors``,
  ``lab.safetensors``, ``teachers.json``): the ECG encoder and the lab
  denoising autoencoder of :mod:`cxrkit.models.physio`, trained here on the
  physio artifact (the lab DAE only on panels that fit the scaling, i.e. of
  training patients). A teachers artifact made elsewhere is loaded the same way.
- :func:`embed` : teachers + physio -> ``embeddings`` artifact (``ecg.npy``,
  ``lab.npy``, ``ids.json``): every ECG and lab panel encoded once by the frozen
  teachers; its id is keyed by the teachers' and the physio artifact's ids.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from cxrkit.artifacts import Artifact, ArtifactWriter, open_artifact
from cxrkit.config import from_dict, to_dict
from cxrkit.errors import ArtifactError, InputError
from cxrkit.io.physio_files import ECG_EMB, IDS_JSON, LAB_EMB, EmbeddingSet
from cxrkit.models.physio import ECGEncoder, LabDAE, TeacherConfig
from cxrkit.stages.physio import load_ecgs, load_labs

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
ECG_WEIGHTS = "ecg.safetensors"
LAB_WEIGHTS = "lab.safetensors"
TEACHERS_JSON = "teachers.json"


def _batches(count: int, size: int, generator: torch.Generator):
    order = torch.randperm(count, generator=generator)
    for start in range(0, count, size):
        yield order[start : start + size]


def train(
    physio_dir: str | Path, out: str | Path, cfg: TeacherConfig, force: bool = False
) -> Artifact:
    """Train both teachers on a physio artifact; publish the teachers artifact at ``out``.

    Raises InputError when the physio artifact has no ECG or no lab panel to train on.
    """
    from safetensors.torch import save_file

    physio = open_artifact(physio_dir, kind="physio")
    writer = ArtifactWriter(Path(out), "teachers", to_dict(cfg), [physio], SCHEMA_VERSION, force)
    if (done := writer.up_to_date()) is not None:
        return done
    signals, ecg_rows = load_ecgs(physio)
    panels = [p for p in load_labs(physio) if p["fit"]]
    if not ecg_rows or not panels:
        raise InputError(
            f"{physio.path}: teachers need ECGs and lab panels of training patients "
            f"(has {len(ecg_rows)} ECGs, {len(panels)} fitting panels)"
        )
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    ecg_model = ECGEncoder(cfg.ecg_dim, cfg.ecg_width)
    ecg = torch.from_numpy(np.array(signals, dtype=np.float32))
    leads = torch.tensor([r["lead_mask"] for r in ecg_rows], dtype=torch.float32)
    ecg_losses = _fit(
        ecg_model,
        len(ecg_rows),
        cfg,
        generator,
        lambda idx: ecg_model.reconstruction_loss(ecg[idx], leads[idx], generator),
    )
    tests = len(panels[0]["values"])
    lab_model = LabDAE(tests, cfg.lab_dim, cfg.lab_hidden)
    values = torch.tensor([p["values"] for p in panels], dtype=torch.float32)
    flags = torch.tensor([p["flags"] for p in panels], dtype=torch.float32)
    lab_losses = _fit(
        lab_model,
        len(panels),
        cfg,
        generator,
        lambda idx: lab_model.denoising_loss(values[idx], flags[idx], cfg.corruption, generator),
    )
    work = writer.begin()
    save_file({k: v.contiguous() for k, v in ecg_model.state_dict().items()}, work / ECG_WEIGHTS)
    save_file({k: v.contiguous() for k, v in lab_model.state_dict().items()}, work / LAB_WEIGHTS)
    info = {"config": to_dict(cfg), "lab_tests": tests, "lab_test_names": lab_test_names(physio)}
    (work / TEACHERS_JSON).write_text(json.dumps(info))
    stats = {
        "ecg_records": len(ecg_rows),
        "lab_panels": len(panels),
        "ecg_loss_first": round(ecg_losses[0], 5),
        "ecg_loss_final": round(ecg_losses[-1], 5),
        "lab_loss_first": round(lab_losses[0], 5),
        "lab_loss_final": round(lab_losses[-1], 5),
    }
    return writer.publish(schema={"ecg_dim": cfg.ecg_dim, "lab_dim": cfg.lab_dim}, stats=stats)


def _fit(model, count: int, cfg: TeacherConfig, generator, step_loss) -> list[float]:
    """AdamW over ``cfg.epochs`` epochs; returns the mean loss of each epoch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    history = []
    for _ in range(cfg.epochs):
        total, n = 0.0, 0
        for idx in _batches(count, cfg.batch_size, generator):
            if len(idx) < 2 and count >= 2:  # BatchNorm needs two samples
                continue
            loss = step_loss(idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, n = total + float(loss.detach()) * len(idx), n + len(idx)
        history.append(total / max(n, 1))
    return history


def load_teachers(teachers: Artifact) -> tuple[ECGEncoder, LabDAE]:
    """The two frozen teachers of a teachers artifact, in eval mode.

    Raises ArtifactError when a file is missing or the weights do not fit.
    """
    from safetensors.torch import load_file

    try:
        info = json.loads((teachers.path / TEACHERS_JSON).read_text())
        cfg = from_dict(TeacherConfig, info["config"])
        ecg_model = ECGEncoder(cfg.ecg_dim, cfg.ecg_width)
        lab_model = LabDAE(int(info["lab_tests"]), cfg.lab_dim, cfg.lab_hidden)
        ecg_model.load_state_dict(load_file(teachers.path / ECG_WEIGHTS))
        lab_model.load_state_dict(load_file(teachers.path / LAB_WEIGHTS))
    except (OSError, KeyError, RuntimeError, ValueError) as exc:
        raise ArtifactError(f"{teachers.path}: not a usable teachers artifact ({exc})") from exc
    for model in (ecg_model, lab_model):
        model.requires_grad_(False)
        model.eval()
    return ecg_model, lab_model


@torch.no_grad()
def embed(
    teachers_dir: str | Path, physio_dir: str | Path, out: str | Path, force: bool = False
) -> Artifact:
    """Encode every ECG and lab panel once; publish the embeddings artifact at ``out``.

    Raises InputError when the teachers were trained on other lab tests than the physio
    artifact holds (:func:`check_lab_tests`), ArtifactError for unusable artifacts.
    """
    teachers = open_artifact(teachers_dir, kind="teachers")
    physio = open_artifact(physio_dir, kind="physio")
    writer = ArtifactWriter(Path(out), "embeddings", {}, [teachers, physio], SCHEMA_VERSION, force)
    if (done := writer.up_to_date()) is not None:
        return done
    check_lab_tests(teachers, physio)
    ecg_model, lab_model = load_teachers(teachers)
    signals, ecg_rows = load_ecgs(physio)
    panels = load_labs(physio)
    ecg_out = np.zeros((len(ecg_rows), ecg_model.dim), np.float32)
    for start in range(0, len(ecg_rows), 64):
        chunk = torch.from_numpy(np.array(signals[start : start + 64], dtype=np.float32))
        leads = torch.tensor([r["lead_mask"] for r in ecg_rows[start : start + 64]]).float()
        ecg_out[start : start + 64] = ecg_model(chunk, leads).numpy()
    lab_out = np.zeros((len(panels), lab_model.dim), np.float32)
    if panels:
        values = torch.tensor([p["values"] for p in panels], dtype=torch.float32)
        flags = torch.tensor([p["flags"] for p in panels], dtype=torch.float32)
        lab_out = lab_model(values, flags).numpy()
    work = writer.begin()
    np.save(work / ECG_EMB, ecg_out)
    np.save(work / LAB_EMB, lab_out)
    ids = {"ecg": [r["ecg_id"] for r in ecg_rows], "lab": [p["lab_id"] for p in panels]}
    (work / IDS_JSON).write_text(json.dumps(ids))
    schema = {"ecg_dim": int(ecg_model.dim), "lab_dim": int(lab_model.dim)}
    return writer.publish(schema=schema, stats={"ecgs": len(ecg_rows), "lab_panels": len(panels)})


def lab_test_names(physio: Artifact) -> list[str] | None:
    """The lab tests of a physio artifact's panels, in value order (None when unrecorded)."""
    from cxrkit.io.physio_files import LABS_INFO

    try:
        tests = json.loads((physio.path / LABS_INFO).read_text())["tests"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [str(t) for t in tests] if isinstance(tests, list) else None


def check_lab_tests(teachers: Artifact, physio: Artifact) -> None:
    """InputError when the teachers' lab autoencoder was trained on other lab tests (or the
    same in another order) than the physio artifact's panels hold: it would read each value
    as another analyte. Teachers recorded before the names were kept are checked by count."""
    try:
        info = json.loads((teachers.path / TEACHERS_JSON).read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{teachers.path}: unreadable {TEACHERS_JSON} ({exc})") from exc
    theirs, here = info.get("lab_test_names"), lab_test_names(physio)
    if here is None:
        return
    if theirs is None:
        if int(info.get("lab_tests", len(here))) == len(here):
            return
        theirs = [f"{info.get('lab_tests')} tests"]
    if list(theirs) != here:
        differ = [f"{a}/{b}" for a, b in zip(theirs, here, strict=False) if a != b]
        raise InputError(
            f"teachers {teachers.path} were trained on lab tests {', '.join(map(str, theirs))}; "
            f"physio {physio.path} holds {', '.join(here)}"
            + (f" (first difference {differ[0]})" if differ else "")
            + ": train the teachers on this physio artifact (leave out --teachers)"
        )


def load_embeddings(embeddings: Artifact) -> tuple[EmbeddingSet, EmbeddingSet]:
    """(ECG, lab) embedding sets of an embeddings artifact."""
    from cxrkit.io.physio_files import load_embeddings as read

    return read(embeddings.path)
