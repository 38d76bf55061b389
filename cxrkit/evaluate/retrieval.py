"""Image <-> report retrieval: Recall@K and median rank, with bootstrap intervals.

Query i's right answers are gallery item i (the image's own report) and every
item of the same study or with the same report text (:func:`match_matrix`): a
study's PA and lateral images share one report, and two identical texts cannot
be told apart by any model. As in image-text retrieval with several captions per
image, a query counts as found at K when any right answer ranks within the top
K; ties with wrong answers count pessimistically. Chance R@1 is the mean share of
right answers in the gallery.
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


def match_matrix(
    study_ids: Sequence[str | None] | None,
    texts: Sequence[str] | None,
    n: int | None = None,
) -> np.ndarray:
    """(N, N) bool: row i and row j are right answers for each other.

    Takes per-row study ids (None or "" = unknown) and report texts (or text digests),
    either may be None; ``n`` rows when both are. True on the diagonal, between rows
    of one known study, and between rows whose texts are equal.
    """
    size = len(study_ids) if study_ids is not None else len(texts) if texts is not None else n
    found = np.eye(int(size), dtype=bool)
    for keys in (study_ids, texts):
        if keys is None:
            continue
        known = [k if k not in (None, "") else None for k in keys]
        _, code = np.unique(np.array([str(k) for k in known], dtype=object), return_inverse=True)
        code = np.where([k is None for k in known], -1 - np.arange(int(size)), code)
        found |= code[:, None] == code[None, :]
    return found


def retrieval_report(
    image_features: np.ndarray,
    report_features: np.ndarray,
    groups: Sequence[str] | None,
    n_boot: int,
    level: float,
    seed: int,
    matches: np.ndarray | None = None,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Metrics in both directions for aligned (N, D) image and report embeddings.

    ``matches`` as in :func:`similarity_report`. Returns (JSON-ready metrics,
    per-direction rank arrays).
    """
    images = F.normalize(torch.from_numpy(image_features).float(), dim=-1).numpy()
    reports = F.normalize(torch.from_numpy(report_features).float(), dim=-1).numpy()
    return similarity_report(images @ reports.T, groups, n_boot, level, seed, matches)


def similarity_report(
    similarity: np.ndarray,
    groups: Sequence[str] | None,
    n_boot: int,
    level: float,
    seed: int,
    matches: np.ndarray | None = None,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Metrics in both directions from an (N, N) image x report score matrix (row i matches
    report i; higher = closer): cosines, or a fused model's pair scores.

    ``matches`` (N, N) bool, symmetric (:func:`match_matrix`), marks the right answers
    (None = the diagonal only). Returns (JSON-ready metrics, per-direction rank arrays:
    the rank of each query's best right answer).
    """
    n = int(similarity.shape[0])
    if matches is None:
        matches = np.eye(n, dtype=bool)
    ranks = {
        "image_to_report": metrics.ranks_of_matches(similarity, matches),
        "report_to_image": metrics.ranks_of_matches(similarity.T, matches.T),
    }
    several = int(np.sum(matches.sum(axis=1) > 1))
    out: dict = {
        "n": n,
        "chance_recall_at_1": float(matches.sum(axis=1).mean() / n),
        "right_answers": "the row's own report or image, any of its study's, any with the "
        "same report text",
        "queries_with_several_matches": several,
    }
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
