"""Image <-> report retrieval: Recall@K and median rank, with bootstrap intervals.

Query i's true match is gallery item i (the image's own report). Ranks count
ties pessimistically, and an image whose report text duplicates another's can
only be matched to its own row, which makes the numbers conservative when
reports repeat (e.g. many "no acute findings").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cxrkit.evaluate import bootstrap, metrics

RECALL_KS = (1, 5, 10)


@torch.inference_mode()
def embed_reports(encode_texts, reports: Iterable[str], batch_size: int = 64) -> np.ndarray:
    """Normalised report embeddings (R, D) of ``reports``, encoded ``batch_size`` texts at
    a time as the iterable yields them (so only a batch of texts is held).

    A ``batch_size`` that is a multiple of the encoder's own chunk (``encoders.TEXT_BATCH``)
    gives the numbers of one ``encode_texts`` call over all texts.
    """
    chunks, pending = [], []
    for text in reports:
        pending.append(text)
        if len(pending) == batch_size:
            chunks.append(encode_texts(pending))  # (batch_size, D)
            pending = []
    if pending:
        chunks.append(encode_texts(pending))
    return F.normalize(torch.cat(chunks).float(), dim=-1).numpy()


def retrieval_report(
    image_features: np.ndarray,
    report_features: np.ndarray,
    groups: Sequence[str] | None,
    n_boot: int,
    level: float,
    seed: int,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Metrics in both directions for aligned (N, D) image and report embeddings.

    Returns (JSON-ready metrics, per-direction rank arrays).
    """
    images = F.normalize(torch.from_numpy(image_features).float(), dim=-1).numpy()
    reports = F.normalize(torch.from_numpy(report_features).float(), dim=-1).numpy()
    return similarity_report(images @ reports.T, groups, n_boot, level, seed)


def similarity_report(
    similarity: np.ndarray,
    groups: Sequence[str] | None,
    n_boot: int,
    level: float,
    seed: int,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Metrics in both directions from an (N, N) image x report score matrix (row i matches
    report i; higher = closer): cosines, or a fused model's pair scores.

    Returns (JSON-ready metrics, per-direction rank arrays).
    """
    ranks = {
        "image_to_report": metrics.ranks_of_matches(similarity),
        "report_to_image": metrics.ranks_of_matches(similarity.T),
    }
    out: dict = {"n": int(similarity.shape[0]), "chance_recall_at_1": 1.0 / similarity.shape[0]}
    for direction, rank in ranks.items():
        entry: dict = {}
        for offset, k in enumerate(RECALL_KS):
            hits = (rank <= k).astype(np.float64)
            interval = bootstrap.bootstrap_ci(
                np.mean, (hits,), groups, n_boot, level, seed + offset
            )
            entry[f"recall_at_{k}"] = {"value": float(hits.mean()), "ci": interval.as_list()}
        interval = bootstrap.bootstrap_ci(
            np.median, (rank.astype(np.float64),), groups, n_boot, level, seed
        )
        entry["median_rank"] = {"value": float(np.median(rank)), "ci": interval.as_list()}
        out[direction] = entry
    return out, ranks
