"""The demo: the whole pipeline on small real data that installable packages ship.

Real images with real reports are scarce offline, so the demo pairs real chest
X-rays (16 pediatric JPEGs labelled normal/pneumonia by file name, one adult PA
DICOM) with real Indiana University reports chosen by their MeSH terms to agree
with the image's label: normal images get reports indexed only "normal",
pneumonia images reports indexed with pneumonia, consolidation or airspace
disease (:func:`pick_reports`). The pairs agree in label only: they are not the
images' own reports, and no result on them means anything clinically. A few
deliberately bad inputs show the rejects table.
"""

from __future__ import annotations

import csv
import logging
import random
import shutil
from pathlib import Path

from cxrkit.io import bundled

log = logging.getLogger(__name__)

DISCLAIMER = (
    "demo data: real images paired with real reports of another patient that agree "
    "only in label (normal / pneumonia), n = 16 labelled pediatric images; for "
    "plumbing, not medicine"
)

# Per class: the first TRAIN_PER_CLASS images (sorted by name) train, the rest test.
TRAIN_PER_CLASS = 5


# MeSH major-term headings (the part before the first "/") of a pneumonia image's report:
# the radiographic signs of bacterial pneumonia.
PNEUMONIA_MESH = ("pneumonia", "consolidation", "airspace disease")


def pick_reports(count_normal: int, count_abnormal: int) -> tuple[list, list]:
    """The first real IU reports (archive order) of each label with findings and impression.

    Normal: MeSH major terms exactly ``normal``. Pneumonia: a MeSH major term
    headed by one of :data:`PNEUMONIA_MESH`. Returns (normal, abnormal) lists of
    :class:`cxrkit.io.reports.Report`, possibly shorter than asked when the
    archive runs out. Raises InputError when the archive cannot be read.
    """
    from cxrkit.io.reports import iter_iu_reports

    normal, abnormal = [], []
    for report in iter_iu_reports():
        if not (report.findings and report.impression):
            continue
        headings = {term.split("/")[0].strip().lower() for term in report.mesh}
        if headings == {"normal"} and len(normal) < count_normal:
            normal.append(report)
        elif headings & set(PNEUMONIA_MESH) and len(abnormal) < count_abnormal:
            abnormal.append(report)
        if len(normal) >= count_normal and len(abnormal) >= count_abnormal:
            break
    return normal, abnormal


def build_demo_inputs(directory: Path, image_only: bool = False) -> Path:
    """Lay out the demo's raw inputs in ``directory`` and return its mapping CSV path.

    With ``image_only`` the pediatric images past the first TRAIN_PER_CLASS of
    each class become training rows WITHOUT a report (image-only rows, as
    MMCLIP's unpaired data) instead of test rows.
    Raises InputError (from cxrkit.io.bundled) when a data package is missing.
    """
    # Absolute paths: the mapping CSV's relative paths resolve against its own folder.
    directory = Path(directory).resolve()
    images = directory / "images"
    reports_dir = directory / "reports"
    images.mkdir(parents=True, exist_ok=True)
    reports_dir.mkdir(exist_ok=True)
    pediatric = bundled.pediatric_jpegs()
    normal, abnormal = pick_reports(9, 9)
    rows = []
    seen = {0: 0, 1: 0}
    for path in pediatric:
        label = bundled.pediatric_label(path)
        report = (abnormal if label else normal)[seen[label]]
        split = "train" if seen[label] < TRAIN_PER_CLASS else "test"
        text = report.text
        if image_only and split == "test":
            split, text = "train", ""
        seen[label] += 1
        rows.append(
            {
                "image_path": str(path),
                "report_text": text,
                "patient_id": f"demo-ped-{path.stem}",
                "study_id": f"demo-study-{path.stem}",
                "split": split,
                "Pneumonia": str(label),
            }
        )
    dicoms = bundled.rg1_dicoms()
    for name in ("RG1_UNCR", "RG1_J2KR"):  # same image twice: the second is a duplicate
        rows.append(
            {
                "image_path": str(dicoms[name]),
                "report_text": normal[-1].text,
                "patient_id": "",
                "study_id": "",
                "split": "train",
                "Pneumonia": "",
            }
        )
    for bad in _bad_inputs(images, dicoms["RG1_UNCR"]):
        rows.append(
            {
                "image_path": str(bad),
                "report_text": "",
                "patient_id": "",
                "study_id": "",
                "split": "",
                "Pneumonia": "",
            }
        )
    mapping = directory / "mapping.csv"
    with open(mapping, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return mapping


def _bad_inputs(directory: Path, good_dicom: Path) -> list[Path]:
    """A CT slice (not a chest X-ray), a truncated DICOM and random bytes named .dcm."""
    ct = directory / "ct_small.dcm"
    shutil.copyfile(bundled.pydicom_test_file("CT_small.dcm"), ct)
    truncated = directory / "truncated.dcm"
    data = good_dicom.read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    noise = directory / "noise.dcm"
    noise.write_bytes(random.Random(0).randbytes(4096))  # fixed bytes: reruns stay no-ops
    return [ct, truncated, noise]


DEMO_METHODS = ("mae", "maco", "mmclip", "m3ae")
IMAGE_TEXT_DEMOS = ("maco", "mmclip", "m3ae")
IMAGE_ONLY_ROWS = ("mmclip",)  # methods whose demo data also holds rows without a report
DISPLAY = {"mae": "MAE", "maco": "MaCo", "mmclip": "MMCLIP", "m3ae": "M3AE"}


def run_demo(
    out: Path,
    steps: int | None = None,
    force: bool = False,
    method: str = "mae",
    seed: int | None = None,
) -> list[dict]:
    """Run every built stage on the demo data under ``out``; returns one summary row per stage.

    ``method`` picks the pretraining preset ``demo-<method>``. For image-text
    methods (maco, mmclip; for mmclip the dataset also holds image-only rows) eval scores
    zero-shot and retrieval on the *training* pairs (where a minute of training
    can show that images and reports were aligned; plumbing, not a result) and
    the PaCX distillation (whose student is the MAE checkpoint) is left out.
    ``seed`` (default: the preset's) seeds the pretraining run (model init, masks,
    data order).
    Each stage writes its artifact in ``out/<stage>``; re-running is a no-op per
    stage when nothing changed. Raises ConfigError for an unknown method and the
    stage's CxrkitError on failure.
    """
    from cxrkit.config import resolve
    from cxrkit.errors import ConfigError

    if method not in DEMO_METHODS:
        raise ConfigError(f"demo method {method!r}: choose from {', '.join(DEMO_METHODS)}")
    from cxrkit.stages import annotate, export, ingest, pretrain
    from cxrkit.stages import eval as evaluate

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log.info("%s", DISCLAIMER)
    image_text = method in IMAGE_TEXT_DEMOS
    mapping = build_demo_inputs(out / "inputs", image_only=method in IMAGE_ONLY_ROWS)
    summary = []

    dataset = ingest.run(
        ingest.IngestConfig(
            mapping=str(mapping),
            out=str(out / "dataset"),
            image_size=128,
            salt_file=str(out / "salt.hex"),
        ),
        force=force,
    )
    summary.append(
        _row(
            "ingest",
            dataset,
            f"{dataset.stats['rows']} images, "
            f"{dataset.stats['rejects']} rejected "
            f"({', '.join(f'{k}={v}' for k, v in dataset.stats['rejects_by_reason'].items())})",
        )
    )

    annotations = annotate.run(
        resolve(
            annotate.AnnotateConfig,
            flags={"dataset": str(dataset.path), "out": str(out / "annotations"), "preview": 8},
        ),
        force=force,
    )
    summary.append(_row("annotate", annotations, _annotate_note(annotations.stats)))

    sets = [f"train.max_steps={steps}"] if steps else []
    if seed is not None:
        sets += [f"train.seed={seed}", f"data.seed={seed}"]
    preset = f"demo-{method}"
    checkpoint = pretrain.run(
        resolve(
            pretrain.PretrainConfig,
            preset=preset,
            flags={
                "preset": preset,
                "out": str(out / "checkpoint"),
                "data.dataset": str(dataset.path),
                "data.annotations": str(annotations.path),
            },
            sets=sets,
            stage="pretrain",
        ),
        force=force,
    )
    stats = checkpoint.stats
    summary.append(
        _row(
            "pretrain",
            checkpoint,
            _m3ae_note(checkpoint, dataset)
            if method == "m3ae"
            else f"{DISPLAY[method]} loss {stats.get('first_loss', float('nan')):.3f}"
            f" -> {stats.get('final_loss', float('nan')):.3f} in {stats.get('steps')} steps"
            + (_terms_note(checkpoint.path) if image_text else ""),
        )
    )

    evaluation = evaluate.run(
        resolve(
            evaluate.EvalConfig,
            flags={
                "dataset": str(dataset.path),
                "checkpoint": str(checkpoint.path),
                "annotations": str(annotations.path),
                "out": str(out / "eval"),
                **_eval_protocol(image_text),
                "fractions": [1.0],
                "seeds": [0],
                "bootstrap": 200,
            },
        ),
        force=force,
    )
    summary.append(_row("eval", evaluation, _eval_note(evaluation.path)))

    exported = export.run(
        resolve(
            export.ExportConfig,
            flags={
                "checkpoint": str(checkpoint.path),
                "out": str(out / "export"),
                "eval": str(evaluation.path),
            },
        ),
        force=force,
    )
    summary.append(_row("export", exported, _export_note(exported.stats)))
    if not image_text:  # the distillation's student is the MAE checkpoint
        summary += _demo_distill(out, mapping, dataset, checkpoint, steps, force)
    return summary


def _eval_protocol(image_text: bool) -> dict:
    if not image_text:
        # 16 labelled images: cross-validation scores all of them (the 6-image
        # test split gives no number); zero-shot/retrieval skip with a reason.
        return {"protocol": "cv", "tasks": ["probe", "zeroshot", "retrieval"]}
    # The training rows: retrieval on the training pairs shows the alignment was learnt;
    # zero-shot runs on the labelled training images (plumbing, not a result).
    return {"protocol": "split", "test_split": "train", "tasks": ["zeroshot", "retrieval"]}


TERMS = ("align", "mim", "mlm", "rec", "con")  # MMCLIP's and MaCo's named loss terms


def _terms_note(path: Path, window: int = 2) -> str:
    """Each loss term after the objective's warm-up: mean of the first ``window`` logged rows
    past the warm-up -> mean of the last ``window`` rows."""
    import json
    import math

    config = json.loads((Path(path) / "config.json").read_text())
    warmup = int(config.get("objective_config", {}).get("warmup_steps", 0))
    rows = [json.loads(line) for line in (Path(path) / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["step"] > warmup]
    notes = []
    for term in TERMS:
        values = [r[term] for r in rows if term in r and not math.isnan(r[term])]
        if len(values) >= 2 * window:
            first = sum(values[:window]) / window
            last = sum(values[-window:]) / window
            notes.append(f"{term} {first:.3f} -> {last:.3f}")
    return f"; after the {warmup}-step warm-up: " + ", ".join(notes) if notes else ""


def loss_trajectory(
    checkpoint: Path, names: tuple[str, ...], window: int = 1
) -> dict[str, tuple[float, float]]:
    """Mean of each of ``names`` over the first and over the last ``window`` logged rows
    of a run's metrics.jsonl (a logged row is one step's batch: one row is noisy)."""
    import json

    rows = [
        json.loads(line)
        for line in (Path(checkpoint) / "metrics.jsonl").read_text().splitlines()
        if line
    ]
    window = max(1, min(window, len(rows) // 2 or 1))

    def mean(part: list[dict], name: str) -> float:
        return sum(r[name] for r in part) / len(part)

    return {
        n: (mean(rows[:window], n), mean(rows[-window:], n)) for n in names if rows and n in rows[0]
    }


def _m3ae_note(checkpoint, dataset) -> str:
    """Each M3AE loss first -> last, and ITM accuracy on every (image, report) pair of the
    held-out test split (balanced over matched and mismatched pairs; chance 0.5), over all
    pairs and over the pairs whose image and report differ in label (a normal report
    swapped for another normal one can say the same words: no model can call it a mismatch).
    """
    import torch

    from cxrkit.evaluate.fused import held_pair_accuracy
    from cxrkit.objectives.loading import load_objective

    window = 6  # logged rows: 30 steps at the preset's log_every of 5
    losses = loss_trajectory(checkpoint.path, ("mim", "mlm", "itm"), window)
    parts = [f"{n} {a:.3f} -> {b:.3f}" for n, (a, b) in losses.items()]
    if parts:
        parts[0] = f"mean of the first and last {window} logged steps: " + parts[0]
    objective = load_objective(checkpoint.path)
    section = checkpoint.params.get("data", {}).get("text_section", "both")
    held = held_pair_accuracy(objective, dataset, "test", section, torch.device("cpu"))
    if held:
        note = (
            f"held-out ITM accuracy (balanced, chance 0.50) {held['balanced']:.2f} on all "
            f"{int(held['n']) ** 2} pairs of {int(held['n'])} test images"
        )
        if "cross_balanced" in held:
            note += f", {held['cross_balanced']:.2f} with mismatches of the other label only"
        parts.append(note)
    return "M3AE " + "; ".join(parts)


def _demo_distill(out: Path, mapping: Path, dataset, checkpoint, steps, force: bool) -> list[dict]:
    """ingest-physio + a tiny PaCX distillation on SYNTHETIC pairs (see demo_physio)."""
    from cxrkit.config import resolve
    from cxrkit.stages import distill, physio
    from cxrkit.stages.demo_physio import build_demo_physio

    with open(mapping, newline="") as handle:
        patients = [r["patient_id"] for r in csv.DictReader(handle) if r["patient_id"]]
    files = build_demo_physio(out / "inputs" / "physio", patients)
    physio_artifact = physio.run(
        physio.PhysioConfig(
            out=str(out / "physio"),
            ecg=[str(files["ecg"])],
            ecg_map=str(files["ecg_map"]),
            labs=str(files["labs"]),
            dataset=str(dataset.path),
            salt_file=str(out / "salt.hex"),
        ),
        force=force,
    )
    stats = physio_artifact.stats
    rows = [
        _row(
            "ingest-physio",
            physio_artifact,
            f"{stats['ecgs']} ECGs, {stats['lab_panels']} lab panels (real signals and "
            "serum values, synthetic pairs)",
        )
    ]
    sets = [f"train.max_steps={steps}"] if steps else []
    distilled = distill.run(
        resolve(
            distill.DistillConfig,
            preset="demo-pacx",
            flags={
                "preset": "demo-pacx",
                "out": str(out / "distill"),
                "dataset": str(dataset.path),
                "physio": str(physio_artifact.path),
                "student": str(checkpoint.path),
            },
            sets=sets,
            stage="distill",
        ),
        force=force,
    )
    result = distilled.stats
    coverage = result["coverage"]
    rows.append(
        _row(
            "distill",
            distilled,
            f"SYNTHETIC PAIRS: {coverage['with_ecg']}/{coverage['images']} images with ECG, "
            f"{coverage['with_labs']} with labs; loss {result.get('first_loss', float('nan')):.3f}"
            f" -> {result.get('final_loss', float('nan')):.3f} in {result.get('steps')} steps",
        )
    )
    return rows


def _row(stage: str, artifact, note: str) -> dict:
    return {"stage": stage, "artifact": str(artifact.path), "id": artifact.id[:12], "note": note}


def _annotate_note(stats: dict) -> str:
    quality = stats.get("contour_quality", {})
    contours = ", ".join(f"{k}={v}" for k, v in quality.items())
    return f"{stats.get('entities_per_report', 0):.1f} entities/report; contours {contours}"


def _eval_note(path: Path) -> str:
    import json

    metrics = json.loads((Path(path) / "metrics.json").read_text())
    notes = []
    for task, result in metrics.get("tasks", {}).items():
        if "skipped" in result:
            notes.append(f"{task} skipped")
            continue
        for fraction in result.get("fractions", {}).values():
            for seed in fraction.get("seeds", {}).values():
                auroc = seed.get("macro", {}).get("macro_auroc")
                if auroc:
                    low, high = auroc["ci"]
                    notes.append(f"{task} AUROC {auroc['value']:.2f} [{low:.2f}, {high:.2f}]")
                break
            break
    tasks = metrics.get("tasks", {})
    for variant, result in tasks.get("zeroshot", {}).items():
        auroc = result.get("macro", {}).get("macro_auroc") if isinstance(result, dict) else None
        if auroc:
            notes.append(f"zero-shot ({variant}) AUROC {auroc['value']:.2f}")
    if "image_to_report" in tasks.get("retrieval", {}):
        result = tasks["retrieval"]
        i2r, r2i = result["image_to_report"], result["report_to_image"]
        notes.append(
            f"R@1 image->report {i2r['recall_at_1']['value']:.2f}, report->image "
            f"{r2i['recall_at_1']['value']:.2f} on {result['n']} training pairs (chance "
            f"{result['chance_recall_at_1']:.2f}); median rank {i2r['median_rank']['value']:.0f}"
            f" / {r2i['median_rank']['value']:.0f} (chance {(result['n'] + 1) / 2:.0f})"
        )
    return f"n = {metrics.get('n_scored')} ({metrics.get('protocol')}): " + "; ".join(notes)


def _export_note(stats: dict) -> str:
    formats = stats.get("formats", {})
    if isinstance(formats, dict):
        return ", ".join(
            f"{k}: {v.get('status', v) if isinstance(v, dict) else v}" for k, v in formats.items()
        )
    return str(formats)
