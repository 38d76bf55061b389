"""Fine-tuning: the checkpoint's image encoder plus a linear head, trained end to end.

A deliberately small loop (AdamW, masked binary cross-entropy over the known
labels, no augmentation, a fixed number of epochs) that answers "how far does
the representation move with labels?" next to the linear probe. The transformed
images of the rows it needs are held in memory, so it is meant for evaluation
sets, not for training-set-sized data.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrkit.artifacts import Artifact
from cxrkit.evaluate.features import image_batches
from cxrkit.evaluate.protocol import Fold, fraction_subset, subset_counts

log = logging.getLogger(__name__)


def load_images(
    dataset: Artifact, transform: Callable, rows: np.ndarray, batch_size: int = 64
) -> dict[int, torch.Tensor]:
    """Transformed images (1, S, S) of ``rows``, keyed by row index."""
    ordered = np.sort(np.unique(rows))
    stacked = [b for b in image_batches(dataset, transform, batch_size, ordered.tolist())]
    images = torch.cat(stacked) if stacked else torch.zeros(0)
    return {int(r): images[i] for i, r in enumerate(ordered)}


class Classifier(nn.Module):
    """Encoder + linear head; the encoder maps (B, 1, S, S) to pooled (B, D)."""

    def __init__(self, encoder: nn.Module, width: int, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.encoder(images)
        if features.ndim == 3:
            features = features.mean(dim=1)  # (B, L, D) -> (B, D)
        return self.head(features)  # (B, C)


def masked_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy averaged over the known (non-NaN) targets only."""
    known = ~torch.isnan(targets)
    if not known.any():
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[known], targets[known])


def finetune_scores(
    encoder: nn.Module,
    images: dict[int, torch.Tensor],
    labels: np.ndarray,
    folds: Sequence[Fold],
    fraction: float,
    seed: int,
    epochs: int,
    lr: float,
    batch_size: int,
    device: torch.device,
    classes: Sequence[str] = (),
) -> tuple[np.ndarray, dict]:
    """Fine-tune a fresh copy of ``encoder`` per fold; scores (N, C) on val and test rows.

    Each fold trains on ONE image subset for the fraction and seed, the same one the
    linear probe uses (:func:`cxrkit.evaluate.protocol.fraction_subset`). As with the
    probe, a class whose subset lacks a positive or a negative gets no scores in that
    fold (its head output was trained on one label only). Returns the scores (NaN where
    not predicted) and ``{"folds": [realised subset counts, with "fitted" per class]}``.
    """
    scores = np.full(labels.shape, np.nan)
    used = []
    for f, fold in enumerate(folds):
        rows = fraction_subset(fold.train, labels, fraction, np.random.default_rng([seed, f]))
        counts = subset_counts(rows, labels, classes)
        used.append(counts)
        fitted = fittable(labels[rows])
        for c, name in enumerate(classes):
            counts["classes"][name]["fitted"] = bool(fitted[c])
        if not fitted.any():
            continue
        torch.manual_seed(seed + 1000 * f)
        width = int(getattr(encoder, "num_features", 0)) or _infer_width(
            encoder, images[int(rows[0])], device
        )
        model = Classifier(copy.deepcopy(encoder), width, labels.shape[1]).to(device)
        _train(model, images, labels, rows, epochs, lr, batch_size, seed + f, device)
        predict = np.concatenate([fold.val, fold.test]).astype(np.int64)
        if predict.size:
            predicted = _predict(model, images, predict, batch_size, device)
            predicted[:, ~fitted] = np.nan  # a head never shown a positive (or negative)
            scores[predict] = predicted
    return scores, {"folds": used}


def fittable(known: np.ndarray) -> np.ndarray:
    """(C,) bool: the classes whose training labels (R, C; 1/0/NaN) hold both a positive and
    a negative, the classes the linear probe fits (:func:`cxrkit.evaluate.probe.probe_scores`)."""
    return np.any(known == 1, axis=0) & np.any(known == 0, axis=0)


def _infer_width(encoder: nn.Module, image: torch.Tensor, device: torch.device) -> int:
    with torch.inference_mode():
        out = encoder.to(device)(image[None].to(device))
    return int(out.shape[-1])


def _train(
    model: Classifier,
    images: dict[int, torch.Tensor],
    labels: np.ndarray,
    rows: np.ndarray,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    device: torch.device,
) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    generator = torch.Generator().manual_seed(seed)
    targets = torch.from_numpy(labels).float()
    model.train()
    for epoch in range(epochs):
        order = rows[torch.randperm(rows.size, generator=generator).numpy()]
        total = 0.0
        for start in range(0, order.size, batch_size):
            batch = order[start : start + batch_size]
            x = torch.stack([images[int(r)] for r in batch]).to(device)  # (B, 1, S, S)
            loss = masked_bce(model(x), targets[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * batch.size
        log.debug("fine-tune epoch %d: loss %.4f", epoch + 1, total / max(order.size, 1))


@torch.inference_mode()
def _predict(
    model: Classifier,
    images: dict[int, torch.Tensor],
    rows: np.ndarray,
    batch_size: int,
    device: torch.device,
) -> np.ndarray:
    model.eval()
    out = []
    for start in range(0, rows.size, batch_size):
        x = torch.stack([images[int(r)] for r in rows[start : start + batch_size]]).to(device)
        out.append(torch.sigmoid(model(x)).float().cpu().numpy())
    return np.concatenate(out).astype(np.float64)
