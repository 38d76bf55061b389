"""The four evaluation tasks over a shared context; each returns metrics and per-sample rows.

A task that cannot apply (zero-shot without a text tower, retrieval without
reports, fine-tuning an open_clip model) raises :class:`Skip` with the reason,
which the stage records in metrics.json instead of a number.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from cxrkit.artifacts import Artifact
from cxrkit.evaluate import finetune, fused, probe, retrieval, zeroshot
from cxrkit.evaluate.encoders import TEXT_BATCH, EvalModel
from cxrkit.evaluate.features import EvalRows
from cxrkit.evaluate.protocol import Fold, Stats, choose_threshold, score_classes

log = logging.getLogger(__name__)


class Skip(Exception):
    """The task does not apply to this model or data; the message says why."""


@dataclass
class Context:
    """Everything the tasks share, built once by the stage."""

    model: EvalModel
    dataset: Artifact
    rows: EvalRows
    classes: list[str]
    labels: np.ndarray  # (N, C) 1/0/NaN
    folds: list[Fold]
    protocol: str
    stats: Stats
    transform: Callable
    device: torch.device
    features: Callable[[], np.ndarray]  # lazy, cached (N, D)
    prompts: dict[str, dict[str, list[str]]] | None = None
    prompts_source: str = ""
    options: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # input warnings for metrics.json

    @property
    def groups(self) -> list[str] | None:
        return self.rows.patient_groups()

    def test_rows(self) -> np.ndarray:
        return np.sort(np.concatenate([f.test for f in self.folds]))

    def val_rows(self) -> np.ndarray:
        return np.sort(np.concatenate([f.val for f in self.folds]))


@dataclass
class TaskResult:
    """Metrics (JSON-ready), prediction rows for predictions.parquet, and curves to plot."""

    metrics: dict
    predictions: list[dict] = field(default_factory=list)
    curves: dict[str, tuple[np.ndarray, np.ndarray, dict]] = field(default_factory=dict)


def prediction_rows(
    ctx: Context,
    task: str,
    variant: str,
    scores: np.ndarray,
    rows: np.ndarray,
    scored: dict,
    fraction: float | None = None,
    seed: int | None = None,
) -> list[dict]:
    """Long-format rows (one per image and class) for predictions.parquet."""
    out = []
    for c, name in enumerate(ctx.classes):
        threshold = scored["classes"][name].get("threshold")
        for r in rows:
            if np.isnan(scores[r, c]):
                continue
            label = ctx.labels[r, c]
            out.append(
                {
                    "task": task,
                    "variant": variant,
                    "fraction": fraction,
                    "seed": seed,
                    "class": name,
                    "image_id": ctx.rows.image_ids[r],
                    "patient_id": ctx.rows.patient_ids[r],
                    "split": ctx.rows.splits[r],
                    "label": None if np.isnan(label) else float(label),
                    "score": float(scores[r, c]),
                    "threshold": threshold,
                    "rank": None,
                }
            )
    return out


def _score(ctx: Context, scores: np.ndarray, val_rows: np.ndarray, test_rows: np.ndarray) -> dict:
    thresholds = [
        choose_threshold(ctx.labels[val_rows, c], scores[val_rows, c], ctx.stats.threshold)
        if val_rows.size
        else (ctx.stats.threshold, f"fixed {ctx.stats.threshold:g} ({ctx.protocol} protocol)")
        for c in range(len(ctx.classes))
    ]
    return score_classes(
        ctx.labels, scores, ctx.classes, test_rows, thresholds, ctx.groups, ctx.stats
    )


def _curves(ctx: Context, scores: np.ndarray, rows: np.ndarray, scored: dict) -> dict:
    curves = {}
    for c, name in enumerate(ctx.classes):
        keep = rows[~np.isnan(ctx.labels[rows, c]) & ~np.isnan(scores[rows, c])]
        curves[name] = (ctx.labels[keep, c], scores[keep, c], scored["classes"][name])
    return curves


def run_zeroshot(ctx: Context) -> TaskResult:
    """The chosen scorings: MaCo-style, MaCo's code exactly, CLIP-style (see evaluate.zeroshot).

    Cosines of embeddings for image-text models; for fused models (M3AE) every
    image is scored with every prompt by the model itself (:mod:`cxrkit.evaluate.fused`;
    MaCo-style and CLIP-style only).
    """
    if not ctx.model.has_text and not ctx.model.fused:
        raise Skip("the model has no text encoder (image-only objective); zero-shot needs one")
    if ctx.protocol == "cv":
        test, val = np.sort(np.concatenate([f.test for f in ctx.folds])), np.zeros(0, np.int64)
    else:
        test, val = ctx.test_rows(), ctx.val_rows()
    chosen = ctx.options.get("zeroshot_scoring", ["maco", "clip"])
    variants: dict[str, np.ndarray | str] = {}
    if ctx.model.fused:
        maco, clip = _fused_zeroshot(ctx, np.r_[val, test])
        variants.update({k: v for k, v in (("maco", maco), ("clip", clip)) if k in chosen})
        if "maco_code" in chosen:
            variants["maco_code"] = "MaCo's code scoring needs separate embeddings"
        result = TaskResult({"prompts_source": ctx.prompts_source, "scoring": fused.ITM_SCORING})
    else:
        positive, negative = zeroshot.prompt_embeddings(
            ctx.model.encode_texts, ctx.prompts, ctx.classes
        )
        features = ctx.features()
        if "maco" in chosen:
            variants["maco"] = (
                zeroshot.maco_scores(features, positive, negative, ctx.model.logit_scale)
                if negative is not None
                else "a class has no negative prompts"
            )
        if "maco_code" in chosen:
            code_pos, code_neg = zeroshot.raw_prompt_embeddings(
                ctx.model.encode_texts, zeroshot.maco_code_prompts(ctx.classes), ctx.classes
            )
            variants["maco_code"] = zeroshot.maco_code_scores(features, code_pos, code_neg)
        if "clip" in chosen:
            variants["clip"] = (
                zeroshot.clip_scores(features, positive, ctx.model.logit_scale)
                if len(ctx.classes) >= 2
                else "needs >= 2 classes (a softmax over one class is always 1)"
            )
        result = TaskResult(
            {
                "prompts_source": ctx.prompts_source,
                "logit_scale": ctx.model.logit_scale,
                "scoring": fused.COSINE_SCORING,
            }
        )
    for name, scores in variants.items():
        if isinstance(scores, str):
            result.metrics[name] = {"skipped": scores}
            continue
        scored = _score(ctx, scores, val, test)
        result.metrics[name] = scored
        result.predictions += prediction_rows(
            ctx, "zeroshot", name, scores, np.r_[val, test], scored
        )
        result.curves[f"zeroshot-{name}"] = _curves(ctx, scores, test, scored)
    return result


def _fused_zeroshot(ctx: Context, rows: np.ndarray) -> tuple[np.ndarray | str, np.ndarray | str]:
    """(maco, clip) scores (N, C) of a fused model; rows outside ``rows`` are NaN."""
    templates = fused.prompt_templates(ctx.prompts, ctx.classes)
    wanted = np.unique(rows)
    scores = fused.score_rows(
        ctx.model.score_pairs, ctx.dataset, ctx.transform, wanted.tolist(), templates
    )
    variants = fused.zeroshot_scores(scores, ctx.prompts, ctx.classes, templates)
    out: list[np.ndarray | str] = []
    for variant in variants:
        if isinstance(variant, str):
            out.append(variant)
            continue
        full = np.full((len(ctx.rows), len(ctx.classes)), np.nan)
        full[wanted] = variant
        out.append(full)
    return out[0], out[1]


def _sweep(
    ctx: Context, task: str, scorer, fractions: Sequence[float], seeds: Sequence[int]
) -> TaskResult:
    """Run ``scorer(fraction, seed) -> (scores, train_info)`` over fractions x seeds and score each."""
    result = TaskResult({"fractions": {}})
    test, val = ctx.test_rows(), ctx.val_rows()
    for fraction in fractions:
        per_seed = {}
        for seed in seeds:
            scores, info = scorer(fraction, seed)
            scored = _score(ctx, scores, val, test)
            scored["train_images"] = info
            per_seed[str(seed)] = scored
            variant = f"{fraction:g}/seed{seed}"
            result.predictions += prediction_rows(
                ctx, task, variant, scores, np.r_[val, test], scored, fraction, seed
            )
            if seed == seeds[0] and fraction == max(fractions):  # one figure per task
                result.curves[f"{task}-{fraction:g}"] = _curves(ctx, scores, test, scored)
        result.metrics["fractions"][f"{fraction:g}"] = {
            "seeds": per_seed,
            "over_seeds": _over_seeds(per_seed),
        }
    return result


def _over_seeds(per_seed: dict[str, dict]) -> dict:
    """Mean and SD across seeds of each class's AUROC and of the macro AUROC (ok results only).

    The macro spread compares like with like: each seed's mean AUROC over the classes
    that every seed scored (a small subset may leave a class unfitted in one seed only),
    named under ``classes``.
    """
    out: dict = {}
    first = next(iter(per_seed.values()))
    for name in first["classes"]:
        values = [
            s["classes"][name]["auroc"]["value"]
            for s in per_seed.values()
            if s["classes"][name].get("status") == "ok"
        ]
        out[name] = _mean_sd(values)
    common = [
        name
        for name in first["classes"]
        if all(s["classes"][name].get("status") == "ok" for s in per_seed.values())
    ]
    macro = [
        float(np.mean([s["classes"][name]["auroc"]["value"] for name in common]))
        for s in per_seed.values()
        if common
    ]
    out["macro_auroc"] = {**_mean_sd(macro), "classes": common}
    return out


def _mean_sd(values: list[float]) -> dict:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return {"auroc_mean": None, "auroc_sd": None, "seeds": 0}
    return {
        "auroc_mean": float(np.mean(finite)),
        "auroc_sd": float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0,
        "seeds": len(finite),
    }


def run_probe(ctx: Context) -> TaskResult:
    """Logistic regression on frozen features at each label fraction and seed."""
    features = ctx.features()
    opts = ctx.options

    def scorer(fraction: float, seed: int):
        return probe.probe_scores(
            features, ctx.labels, ctx.folds, fraction, seed, ctx.classes,
            opts["probe_c_grid"], opts["probe_c"], opts["probe_max_iter"],
        )  # fmt: skip

    if not any(f.train.size for f in ctx.folds):
        raise Skip(
            'no labelled training rows (split protocol needs a train split; try protocol = "cv")'
        )
    return _sweep(ctx, "probe", scorer, opts["fractions"], opts["seeds"])


def run_finetune(ctx: Context) -> TaskResult:
    """Encoder + linear head trained end to end at each label fraction (finetune_seeds)."""
    if ctx.model.image_encoder is None:  # image-text checkpoints fine-tune their image tower
        raise Skip("fine-tuning needs a trainable image encoder; this model offers none")
    if not any(f.train.size for f in ctx.folds):
        raise Skip("no labelled training rows")
    opts = ctx.options
    needed = np.concatenate([np.r_[f.train, f.val, f.test] for f in ctx.folds])
    images = finetune.load_images(ctx.dataset, ctx.transform, needed)

    def scorer(fraction: float, seed: int):
        scores, used = finetune.finetune_scores(
            ctx.model.image_encoder,
            images,
            ctx.labels,
            ctx.folds,
            fraction,
            seed,
            opts["finetune_epochs"],
            opts["finetune_lr"],
            opts["finetune_batch_size"],
            ctx.device,
            ctx.classes,
        )
        return scores, used

    result = _sweep(ctx, "finetune", scorer, opts["fractions"], opts["finetune_seeds"])
    result.metrics["recipe"] = {
        "epochs": opts["finetune_epochs"],
        "lr": opts["finetune_lr"],
        "optimizer": "AdamW (weight decay 0.05)",
        "augmentation": "none",
        "loss": "binary cross-entropy over known labels",
    }
    return result


def run_retrieval(ctx: Context) -> TaskResult:
    """Image <-> report retrieval on the evaluated rows that have a report."""
    if not ctx.model.has_text and not ctx.model.fused:
        raise Skip("the model has no text encoder (image-only objective); retrieval needs one")
    if ctx.protocol == "cv":
        pool = np.arange(len(ctx.rows))
    else:  # retrieval needs reports, not labels: every row of the evaluated split
        split = ctx.options["retrieval_split"]
        pool = np.array([i for i, s in enumerate(ctx.rows.splits) if s == split], dtype=np.int64)
    rows = pool[ctx.rows.has_report[pool]]
    if rows.size < 2:
        raise Skip(f"needs >= 2 evaluated images with report text (found {rows.size})")
    digests: list[bytes] = []  # equal texts are right answers for each other

    def texts():  # read as they are encoded, not held for the split
        for text in ctx.rows.report_texts(rows):
            digests.append(hashlib.sha256(text.encode()).digest())
            yield text

    groups = None if ctx.groups is None else [ctx.groups[r] for r in rows]
    stats = (ctx.stats.n_boot, ctx.stats.level, ctx.stats.seed)
    studies = [ctx.rows.study_ids[r] for r in rows] if ctx.rows.study_ids else None
    if ctx.model.fused:  # rows are ascending: score_rows keeps their order
        scores = fused.score_rows(  # every image is scored against every text: all held
            ctx.model.score_pairs, ctx.dataset, ctx.transform, rows.tolist(), list(texts())
        )
        matches = retrieval.match_matrix(studies, digests)
        metrics, ranks = retrieval.similarity_report(scores, groups, *stats, matches)
        metrics["scoring"] = fused.ITM_SCORING
    else:
        reports = retrieval.embed_reports(ctx.model.encode_texts, texts(), TEXT_BATCH)
        matches = retrieval.match_matrix(studies, digests)
        metrics, ranks = retrieval.retrieval_report(
            ctx.features()[rows], reports, groups, *stats, matches
        )
        metrics["scoring"] = fused.COSINE_SCORING
    predictions = [
        {
            "task": "retrieval",
            "variant": direction,
            "fraction": None,
            "seed": None,
            "class": None,
            "image_id": ctx.rows.image_ids[r],
            "patient_id": ctx.rows.patient_ids[r],
            "split": ctx.rows.splits[r],
            "label": None,
            "score": None,
            "threshold": None,
            "rank": int(rank[i]),
        }
        for direction, rank in ranks.items()
        for i, r in enumerate(rows)
    ]
    return TaskResult(metrics, predictions)


TASKS: dict[str, Callable[[Context], TaskResult]] = {
    "zeroshot": run_zeroshot,
    "probe": run_probe,
    "retrieval": run_retrieval,
    "finetune": run_finetune,
}
"""Every eval task by name, in the order of the default ``tasks`` setting (the one list)."""
