"""Assemble the evaluation context, run the chosen tasks, and write the eval files.

Called by :func:`cxrkit.stages.eval.run` inside the artifact's temp dir.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cxrkit.artifacts import Artifact
from cxrkit.artifacts.files import write_json_atomic
from cxrkit.errors import ConfigError, InputError
from cxrkit.evaluate import labels as label_sources
from cxrkit.evaluate import plots, protocol
from cxrkit.evaluate.features import EvalRows, extract_features, read_rows
from cxrkit.evaluate.tasks import TASKS, Context, Skip, TaskResult
from cxrkit.objectives.capabilities import RECONSTRUCTION, supports
from cxrkit.text.prompts import default_class_prompts, load_class_prompts

log = logging.getLogger(__name__)

PREDICTIONS_SCHEMA = pa.schema(
    [
        ("task", pa.string()),
        ("variant", pa.string()),
        ("fraction", pa.float64()),
        ("seed", pa.int64()),
        ("class", pa.string()),
        ("image_id", pa.string()),
        ("patient_id", pa.string()),
        ("split", pa.string()),
        ("label", pa.float64()),
        ("score", pa.float64()),
        ("threshold", pa.float64()),
        ("rank", pa.int64()),
    ]
)


MIN_RELIABILITY_N = 10  # (image, class) predictions below which no reliability diagram is drawn


def resolve_labels(cfg, rows: EvalRows, annotations: Artifact | None) -> label_sources.LabelTable:
    """Pick the label source (see EvalConfig.label_source). Raises InputError when none has labels."""
    source = cfg.label_source
    if source == "auto":
        if cfg.labels:
            source = "file"
        elif any(rows.labels_json):
            source = "dataset"
        elif annotations is not None:
            source = "annotations"
        else:
            raise InputError(
                f"{cfg.dataset}: no labels: the dataset's labels column is empty; give an "
                "annotations artifact (`cxrkit eval CHECKPOINT DATASET ANNOTATIONS`) or "
                "--labels FILE --labels-format FMT"
            )
    if source == "file":
        if not cfg.labels:
            raise ConfigError("label_source = file needs --labels FILE --labels-format FMT")
        parsed = label_sources.read_label_file(Path(cfg.labels), cfg.labels_format)
        return label_sources.match_by_name(parsed, rows.source_paths, str(cfg.labels))
    if source == "annotations":
        if annotations is None:
            raise ConfigError(
                "label_source = annotations needs an annotations artifact "
                "(`cxrkit eval CHECKPOINT DATASET ANNOTATIONS`)"
            )
        table = label_sources.from_annotations(annotations.path, rows.image_ids)
        if table.matched == 0 and len(rows):
            made_from = [r.get("id", "")[:12] for r in annotations.manifest.get("inputs", [])]
            raise InputError(
                f"none of the {len(rows)} images of {cfg.dataset} (id {dataset_id(rows)}) is "
                f"in the annotations {annotations.path} (made from dataset "
                f"{', '.join(made_from) or 'unknown'}): give the annotations of this dataset"
            )
        return table
    return label_sources.from_dataset_column(rows.labels_json)


def dataset_id(rows: EvalRows) -> str:
    """The short id of the rows' dataset artifact ("unknown" without one)."""
    return rows.dataset.id[:12] if rows.dataset is not None else "unknown"


def select_classes(table: label_sources.LabelTable, wanted: list[str]) -> list[int]:
    """Column indices of the wanted classes (all with any known label when empty)."""
    if wanted:
        missing = [c for c in wanted if c not in table.classes]
        if missing:
            raise ConfigError(f"classes {missing} not in the labels ({', '.join(table.classes)})")
        return [table.classes.index(c) for c in wanted]
    return [j for j in range(len(table.classes)) if not np.all(np.isnan(table.values[:, j]))]


def class_counts(labels: np.ndarray, raw: np.ndarray, classes: list[str]) -> dict:
    """Per class: positives, negatives, uncertain (before policy) and unknown rows."""
    return {
        name: {
            "positive": int(np.sum(labels[:, c] == 1)),
            "negative": int(np.sum(labels[:, c] == 0)),
            "uncertain": int(np.sum(raw[:, c] == -1)),
            "unknown": int(np.sum(np.isnan(raw[:, c]))),
        }
        for c, name in enumerate(classes)
    }


def resolve_prompts(cfg, annotations: Artifact | None, classes: list[str]) -> tuple[dict, str]:
    """Prompts per class and where they came from (file, annotations, cxrkit's shipped set)."""
    found: dict = {}
    if cfg.prompts:
        found, source = load_class_prompts(cfg.prompts), f"--prompts {cfg.prompts}"
    elif annotations is not None and (annotations.path / "prompts.json").is_file():
        found = load_class_prompts(annotations.file("prompts.json"))
        source = f"annotations {annotations.path}/prompts.json"
    else:
        source = "cxrkit default prompt set (stages/prompts-default.json)"
    missing = [c for c in classes if c not in found]
    if missing:
        shipped = default_class_prompts(missing)
        found = {**{c: shipped[c] for c in missing}, **found}
        if cfg.prompts or annotations is not None:
            source += f"; default prompt set for {', '.join(missing)}"
    return found, source


def _folds(cfg, rows: EvalRows, labels: np.ndarray) -> list[protocol.Fold]:
    if cfg.protocol == "cv":
        return protocol.cv_folds(labels, rows.patient_groups(), cfg.folds, cfg.seed)
    return protocol.split_folds(rows.splits, labels, cfg.train_split, cfg.val_split, cfg.test_split)


def build_context(cfg, model, dataset: Artifact, annotations, device) -> tuple[Context, dict]:
    """The shared task context plus the label summary for metrics.json."""
    from cxrkit.vision.transforms import EvalTransform

    rows = read_rows(dataset, cfg.text_section)
    table = resolve_labels(cfg, rows, annotations)
    columns = select_classes(table, list(cfg.classes))
    if not columns:
        raise InputError(f"{table.source}: no class has any known label in {cfg.dataset}")
    classes = [table.classes[j] for j in columns]
    raw = table.values[:, columns].copy()
    view_summary = _filter_views(rows, raw, list(getattr(cfg, "views", []) or []))
    labels = label_sources.binarise(raw, cfg.uncertain)
    if table.patients is not None:
        rows.label_patients = list(table.patients)
    transform = EvalTransform(model.image_size)
    cache: dict = {}

    def features() -> np.ndarray:
        if "features" not in cache:
            key = model.key if cfg.cache else None
            cache["features"] = extract_features(
                model.encode_images, dataset, rows, transform, cfg.batch_size, device, key
            )
        return cache["features"]

    prompts, prompts_source = resolve_prompts(cfg, annotations, classes)
    ctx = Context(
        model=model,
        dataset=dataset,
        rows=rows,
        classes=classes,
        labels=labels,
        folds=_folds(cfg, rows, labels),
        protocol=cfg.protocol,
        stats=protocol.Stats(cfg.min_count, cfg.bootstrap, cfg.ci_level, cfg.seed, cfg.threshold),
        transform=transform,
        device=device,
        features=features,
        prompts=prompts,
        prompts_source=prompts_source,
        options={
            "fractions": list(cfg.fractions),
            "seeds": list(cfg.seeds),
            "probe_c": cfg.probe_c,
            "probe_c_grid": list(cfg.probe_c_grid),
            "probe_max_iter": cfg.probe_max_iter,
            "finetune_epochs": cfg.finetune_epochs,
            "finetune_lr": cfg.finetune_lr,
            "finetune_batch_size": cfg.finetune_batch_size,
            "finetune_seeds": list(cfg.finetune_seeds),
            "retrieval_split": cfg.test_split,
            "zeroshot_scoring": list(cfg.zeroshot_scoring),
        },
        notes=_lineage_notes(annotations, dataset, table),
    )
    summary = {
        "label_source": table.source,
        "rows_with_labels": table.matched,
        "uncertain_policy": cfg.uncertain,
        "classes": class_counts(labels, raw, classes),
        **view_summary,
    }
    return ctx, summary


def _filter_views(rows: EvalRows, raw: np.ndarray, views: list[str]) -> dict:
    """Drop rows of other views from scoring: their labels become unknown and their split
    empty (features are still computed for every row, so the cache stays shared).

    Returns the summary for metrics.json (empty without a filter). Raises ConfigError for
    an empty filter, InputError when no row has a kept view.
    """
    if not views:
        return {}
    from cxrkit.io.layouts import expand_views

    try:
        keep = expand_views(views)
    except ValueError as exc:
        raise ConfigError(f"views: {exc}") from exc
    kept = np.array([(v or "UNKNOWN").upper() in keep for v in rows.views], dtype=bool)
    if not kept.any():
        found = sorted({str(v) for v in rows.views})
        raise InputError(
            f"no image has a view in {', '.join(views)}; views in the dataset: {', '.join(found)}"
        )
    raw[~kept] = np.nan
    rows.splits = [s if k else None for s, k in zip(rows.splits, kept, strict=True)]
    return {"views": sorted(keep), "rows_in_views": int(kept.sum())}


def _lineage_notes(
    annotations: Artifact | None, dataset: Artifact, table: label_sources.LabelTable
) -> list[str]:
    """A warning when the labels come from annotations of another version of the dataset
    (:func:`cxrkit.io.linkage.check_annotations`), with the images they cover."""
    from cxrkit.io.linkage import check_annotations

    if annotations is None or not table.source.startswith("annotations"):
        return []
    said = check_annotations(annotations, dataset, {"labels"})
    return [said] if said else []


def _warnings(ctx: Context, small_n: int) -> list[str]:
    from cxrkit.evaluate.compat import preprocessing_warnings

    scored = int(ctx.test_rows().size)
    checkpoint = next(
        (a for a in ctx.model.inputs if isinstance(a, Artifact) and a.kind == "checkpoint"), None
    )
    notes = [*ctx.notes, *preprocessing_warnings(checkpoint, ctx.dataset, ctx.model.image_size)]
    if scored < small_n:
        notes.append(
            f"n = {scored} scored images (< {small_n}): confidence intervals are wide and "
            "the numbers are a smoke test, not a performance estimate"
        )
    if ctx.rows.patient_groups() is None:
        notes.append("no patient ids: bootstrap resamples images, not patients")
    elif ctx.protocol == "split":
        fold = ctx.folds[0]
        count, example = protocol.patients_in_several_splits(
            ctx.rows.patient_groups(), {"train": fold.train, "val": fold.val, "test": fold.test}
        )
        if count:
            whose = " of the label file" if ctx.rows.label_patients is not None else ""
            notes.append(
                f"{count} patients{whose} have images in more than one split (e.g. "
                f"{example}): probe and fine-tuning are scored on patients they trained on; "
                "re-ingest with patient ids (a mapping CSV's patient_id) to split by patient"
            )
    return notes


def _write_plots(ctx: Context, results: dict[str, TaskResult], work: Path) -> list[str]:
    written = []
    for result in results.values():
        for name, curves in result.curves.items():
            simple = {c: (y, s) for c, (y, s, _) in curves.items()}
            reports = {c: r for c, (_, _, r) in curves.items()}
            # A ROC curve needs both labels among the scored images; without one, no plot.
            if any(y.size and y.min() != y.max() for y, _ in simple.values()):
                written.append(
                    plots.roc_plot(work / f"roc-{name}.png", f"ROC: {name}", simple, reports)
                )
            y = np.concatenate([y for y, _ in simple.values()]) if simple else np.zeros(0)
            s = np.concatenate([s for _, s in simple.values()]) if simple else np.zeros(0)
            # Calibration over a handful of predictions is noise, not an ECE.
            if y.size >= MIN_RELIABILITY_N:
                written.append(plots.reliability_plot(work / f"reliability-{name}.png", name, y, s))
    objective = ctx.model.objective
    if objective is not None and supports(objective, RECONSTRUCTION):
        from cxrkit.evaluate.features import image_batches

        batch = next(image_batches(ctx.dataset, ctx.transform, 8), None)
        if batch is not None:
            written.append(
                plots.reconstruction_figure(
                    work / "reconstruction.png", objective, batch.to(ctx.device), ctx.stats.seed
                )
            )
    return [p.name for p in written]


def _headline(metrics: dict) -> dict:
    """Flat one-line numbers for the manifest stats (the CLI table reads metrics.json)."""
    stats: dict = {"n_rows": metrics["n_rows"], "n_scored": metrics["n_scored"]}
    for task, result in metrics["tasks"].items():
        if "skipped" in result:
            stats[f"{task}"] = f"skipped: {result['skipped']}"
    return stats


def evaluate(cfg, model, dataset: Artifact, annotations, device, work: Path) -> dict:
    """Run the tasks of ``cfg`` and write metrics.json, predictions.parquet and plots into ``work``.

    Returns the manifest stats (with the list of written files under ``_files``).
    """
    ctx, label_summary = build_context(cfg, model, dataset, annotations, device)
    metrics: dict = {
        "model": model.description,
        "dataset": {"path": str(dataset.path), "id": dataset.id},
        "n_rows": len(ctx.rows),
        "rows_by_format": _counts(ctx.rows.source_formats),
        "n_scored": int(ctx.test_rows().size),
        "protocol": cfg.protocol if cfg.protocol == "cv" else f"split ({cfg.test_split} scored)",
        "labels": label_summary,
        "text_section": cfg.text_section,
        "warnings": _warnings(ctx, cfg.small_n),
        "tasks": {},
    }
    for note in metrics["warnings"]:
        log.warning(note)
    results: dict[str, TaskResult] = {}
    predictions: list[dict] = []
    for task in cfg.tasks:
        try:
            results[task] = TASKS[task](ctx)
        except Skip as reason:
            log.info("%s skipped: %s", task, reason)
            metrics["tasks"][task] = {"skipped": str(reason)}
            continue
        metrics["tasks"][task] = results[task].metrics
        predictions += results[task].predictions
    if not results:
        reasons = "; ".join(f"{t}: {r['skipped']}" for t, r in metrics["tasks"].items())
        raise ConfigError(
            f"none of the requested tasks can run ({reasons}); choose tasks this model "
            "supports, e.g. --task probe for an image-only checkpoint"
        )
    metrics["plots"] = _write_plots(ctx, results, work) if cfg.plots else []
    table = pa.Table.from_pylist(predictions, schema=PREDICTIONS_SCHEMA)
    pq.write_table(table, work / "predictions.parquet", compression="zstd")
    write_json_atomic(work / "metrics.json", _clean(metrics))
    stats = _headline(metrics)
    stats["_files"] = {"metrics.json": "metrics", "predictions.parquet": "per-sample scores"}
    return stats


def _counts(values) -> dict[str, int]:
    found: dict[str, int] = {}
    for value in values:
        found[str(value)] = found.get(str(value), 0) + 1
    return dict(sorted(found.items()))


def _clean(value):
    """JSON-safe copy: numpy scalars to Python, non-finite floats to null (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
