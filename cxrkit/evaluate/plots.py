"""Evaluation figures (PNG, matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cxrkit.evaluate import metrics
from cxrkit.vision.normalise import CXR_MEAN, CXR_STD


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def roc_plot(
    path: Path, title: str, curves: dict[str, tuple[np.ndarray, np.ndarray]], reports: dict
) -> Path:
    """ROC curve per class (labels 1/0, scores) with AUROC and positives in the legend."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    for name, (labels, scores) in curves.items():
        if labels.size == 0 or labels.min() == labels.max():
            continue
        fpr, tpr = metrics.roc_points(labels, scores)
        report = reports.get(name, {})
        if report.get("status") == "ok":
            note = f"AUROC {report['auroc']['value']:.3f}, {report['n_pos']} pos"
        else:
            note = f"{report.get('n_pos', int(labels.sum()))} pos: too few to score"
        ax.plot(fpr, tpr, label=f"{name} ({note})")  # ties give diagonal segments
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def reliability_plot(path: Path, title: str, labels: np.ndarray, probs: np.ndarray) -> Path:
    """Reliability diagram over all (image, class) pairs with known labels, with ECE."""
    plt = _pyplot()
    summary = metrics.reliability(labels, probs)
    centres = (summary.bin_edges[:-1] + summary.bin_edges[1:]) / 2
    filled = summary.counts > 0
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.bar(
        centres[filled],
        summary.observed[filled],
        width=1.0 / len(centres),
        edgecolor="black",
        alpha=0.7,
        label="observed frequency",
    )
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    for x, y, n in zip(
        centres[filled], summary.observed[filled], summary.counts[filled], strict=True
    ):
        ax.annotate(str(int(n)), (x, y), ha="center", va="bottom", fontsize=7)
    ax.set(
        xlabel="predicted probability",
        ylabel="fraction positive",
        title=f"{title}\nECE {summary.ece:.3f}, n = {labels.size}",
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


@torch.inference_mode()
def reconstruction_figure(path: Path, objective, images: torch.Tensor, seed: int) -> Path:
    """Rows: input, masked input, reconstruction (:func:`reconstruction_panels`), for up to
    8 images (B, 1, S, S), drawn with matplotlib on the normalised [-1, 1] scale."""
    plt = _pyplot()
    shown = list(objective.reconstruct(images, seed))  # images, masked, reconstruction
    low, high = (0.0 - CXR_MEAN) / CXR_STD, (1.0 - CXR_MEAN) / CXR_STD  # [0, 1] normalised
    names: Sequence[str] = ("input", "masked", "reconstruction")
    cols = images.shape[0]
    fig, axes = plt.subplots(3, cols, figsize=(1.2 * cols, 3.8), dpi=80, squeeze=False)
    for r, (row, name) in enumerate(zip(shown, names, strict=True)):
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(row[c, 0].float().cpu().numpy(), cmap="gray", vmin=low, vmax=high)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
