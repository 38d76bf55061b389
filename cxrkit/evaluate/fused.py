"""Evaluation of fused image-text models, which score a pair instead of embedding each side.

A model declaring ``fused_scoring`` (M3AE's image-text matching head) has no
separate image and text embeddings to compare with a cosine. Zero-shot and
retrieval then score every (image, text) pair with the model itself:
``score_pairs(images, tokens) -> (B, T)`` log-odds of a match. metrics.json
names the scoring (:data:`ITM_SCORING` or :data:`COSINE_SCORING`).

- zero-shot: a class's score is the mean log-odds over its prompt templates;
  the ``maco`` variant is P(positive) = sigmoid(positive - negative) (a 2-way
  softmax of the two means), the ``clip`` variant a softmax over classes of the
  positive means;
- retrieval: the N x N matrix of image-report log-odds replaces the cosine
  similarities.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from cxrkit.artifacts import Artifact
from cxrkit.evaluate.features import image_batches

ITM_SCORING = "itm_head: every (image, text) pair fused and scored by the image-text matching head"
COSINE_SCORING = "cosine: image and text embeddings compared by cosine similarity"

PairScorer = Callable[[torch.Tensor, list[str]], torch.Tensor]  # (B, 1, S, S), T texts -> (B, T)


def pair_scorer(objective, device: torch.device) -> PairScorer:
    """``(images, texts) -> (B, T)`` for a ``fused_scoring`` objective (tokenised here)."""

    @torch.inference_mode()
    def score(images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        tokens = objective.tokenize(list(texts))
        tokens = {k: v.to(device) for k, v in tokens.items()}
        return objective.score_pairs(images.to(device), tokens).float().cpu()

    return score


def score_rows(
    score: PairScorer,
    dataset: Artifact,
    transform: Callable,
    rows: Sequence[int],
    texts: list[str],
    batch_size: int = 16,
) -> np.ndarray:
    """(len(rows), T) scores of the images of dataset ``rows`` (ascending) with every text."""
    chunks = [score(batch, texts) for batch in image_batches(dataset, transform, batch_size, rows)]
    if not chunks:
        return np.zeros((0, len(texts)))
    return torch.cat(chunks).numpy().astype(np.float64)


def zeroshot_scores(
    template_scores: np.ndarray,
    prompts: dict[str, dict[str, list[str]]],
    classes: list[str],
    templates: list[str],
) -> tuple[np.ndarray | str, np.ndarray | str]:
    """(maco, clip) class scores (N, C) from per-template log-odds (N, P) (module doc).

    Takes the scores of each image with every template in ``templates`` (the
    union of all classes' prompts, in that order). A variant that cannot apply
    is a string saying why (no negative prompts; fewer than 2 classes).
    """
    column = {t: i for i, t in enumerate(templates)}

    def mean_of(texts: list[str]) -> np.ndarray:
        return template_scores[:, [column[t] for t in texts]].mean(axis=1)

    positive = np.stack([mean_of(prompts[c]["positive"]) for c in classes], axis=1)  # (N, C)
    if all(prompts[c]["negative"] for c in classes):
        negative = np.stack([mean_of(prompts[c]["negative"]) for c in classes], axis=1)
        maco: np.ndarray | str = 1.0 / (1.0 + np.exp(-(positive - negative)))
    else:
        maco = "a class has no negative prompts"
    if len(classes) >= 2:
        shifted = np.exp(positive - positive.max(axis=1, keepdims=True))
        clip: np.ndarray | str = shifted / shifted.sum(axis=1, keepdims=True)
    else:
        clip = "needs >= 2 classes (a softmax over one class is always 1)"
    return maco, clip


def prompt_templates(prompts: dict[str, dict[str, list[str]]], classes: list[str]) -> list[str]:
    """Every distinct prompt of ``classes`` (positive and negative), first-seen order."""
    seen: dict[str, None] = {}
    for name in classes:
        for text in [*prompts[name]["positive"], *prompts[name]["negative"]]:
            seen.setdefault(text, None)
    return list(seen)


def matching_accuracy(scores: np.ndarray, groups: Sequence | None = None) -> dict[str, float]:
    """How well log-odds of an N x N image-text matrix (row i matches text i) separate pairs.

    A pair is called a match when its score is > 0. Returns accuracy on the N
    matched pairs, on the N(N-1) mismatched ones, and their mean (balanced, so
    chance is 0.5 whatever N). With ``groups`` (one label per row, None when
    unknown) it also returns ``cross_mismatched``, accuracy on the mismatched
    pairs whose image and report come from rows of different known labels, and
    ``cross_balanced`` = (matched + cross_mismatched) / 2: the pairs that a
    label-level match can tell apart (two reports of one label may say the same).
    """
    n = scores.shape[0]
    matched = np.diag(scores) > 0
    off = ~np.eye(n, dtype=bool)
    mismatched = scores[off] <= 0
    positive = float(matched.mean())
    negative = float(mismatched.mean()) if mismatched.size else float("nan")
    out = {
        "matched": positive,
        "mismatched": negative,
        "balanced": (positive + negative) / 2 if mismatched.size else positive,
    }
    if groups is not None:
        known = np.array([g is not None for g in groups])
        label = np.array([str(g) for g in groups], dtype=object)
        cross = off & known[:, None] & known[None, :] & (label[:, None] != label[None, :])
        if cross.any():
            out["cross_mismatched"] = float((scores[cross] <= 0).mean())
            out["cross_balanced"] = (positive + out["cross_mismatched"]) / 2
            out["cross_pairs"] = float(cross.sum())
    return out


def split_pairs(
    dataset: Artifact, split: str, text_section: str = "both"
) -> tuple[list, list, list]:
    """Row indices (shard order), report texts and labels of the rows of ``split`` with a report.

    The text is the section the training loader delivers (:func:`cxrkit.io.fields.compose_text`);
    a row's label is its ``labels`` JSON text (None when the row has none).
    """
    import pyarrow.parquet as pq

    from cxrkit.io.dataset import dataset_shards
    from cxrkit.io.fields import compose_text

    wanted = ["split", "report_text", "report_findings", "report_impression", "labels"]
    rows, texts, labels, index = [], [], [], 0
    for shard in dataset_shards(dataset):
        names = set(pq.ParquetFile(shard).schema_arrow.names)
        table = pq.read_table(shard, columns=[c for c in wanted if c in names]).to_pylist()
        for row in table:
            text = compose_text(row, text_section)[0] if row.get("split") == split else ""
            if text.strip():
                rows.append(index)
                texts.append(text)
                labels.append(row.get("labels") or None)
            index += 1
    return rows, texts, labels


def held_pair_accuracy(
    objective, dataset: Artifact, split: str, text_section: str, device: torch.device
) -> dict[str, float]:
    """:func:`matching_accuracy` of a fused model on every (image, report) pair of ``split``.

    Rows are grouped by their ``labels`` for the cross-label figures. Returns the
    accuracies plus ``n`` (images); an empty dict when the split has fewer than 2
    images with a report.
    """
    from cxrkit.vision.transforms import EvalTransform

    rows, texts, labels = split_pairs(dataset, split, text_section)
    if len(rows) < 2:
        return {}
    objective.eval()
    size = objective.cfg.model.image_size
    scores = score_rows(pair_scorer(objective, device), dataset, EvalTransform(size), rows, texts)
    return {**matching_accuracy(scores, labels), "n": float(len(rows))}
