"""Zero-shot classification from class prompts (prompt data kept apart from the logic).

Prompts come from an annotations artifact's ``prompts.json`` or ``--prompts FILE``:
``{class: {"positive": [templates], "negative": [templates]}}`` (a bare list is
positives only; a top-level ``"classes"`` or ``"prompts"`` table is unwrapped).
Each class embedding is the renormalised mean of its normalised prompt embeddings.

Two scorings:

- MaCo-style: per class, a softmax over (positive, negative) similarities, i.e.
  ``sigmoid(scale * (sim_pos - sim_neg))``: an independent probability per class,
  fit for multi-label findings.
- CLIP-style: a softmax over the classes' positive embeddings: one distribution per
  image; needs two or more classes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cxrkit.errors import InputError

DEFAULT_POSITIVE = ["chest x-ray showing {}", "findings consistent with {}", "{}"]
DEFAULT_NEGATIVE = ["chest x-ray with no {}", "no evidence of {}", "no {}"]


def load_prompts(path: str | Path) -> dict[str, dict[str, list[str]]]:
    """Read a prompts file into ``{class: {"positive": [...], "negative": [...]}}``.

    Raises InputError when the file is unreadable or holds no prompt lists.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable prompts file ({exc})") from exc
    for wrapper in ("classes", "prompts"):
        if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
            data = data[wrapper]
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object of class -> prompts")
    prompts = {}
    for name, entry in data.items():
        if isinstance(entry, list):
            entry = {"positive": entry}
        if not isinstance(entry, dict):
            continue
        positive = entry.get("positive", entry.get("pos", []))
        negative = entry.get("negative", entry.get("neg", []))
        if positive and all(isinstance(t, str) for t in [*positive, *negative]):
            prompts[str(name)] = {"positive": list(positive), "negative": list(negative)}
    if not prompts:
        raise InputError(f"{path}: no class with a list of positive prompts")
    return prompts


def default_prompts(classes: list[str]) -> dict[str, dict[str, list[str]]]:
    """Generic templates for classes that have no prompts (recorded as such in metrics.json)."""
    return {
        c: {
            "positive": [t.format(c.lower()) for t in DEFAULT_POSITIVE],
            "negative": [t.format(c.lower()) for t in DEFAULT_NEGATIVE],
        }
        for c in classes
    }


@torch.inference_mode()
def class_embedding(encode_texts, templates: list[str]) -> torch.Tensor:
    """Renormalised mean of the normalised prompt embeddings: (D,)."""
    embeddings = F.normalize(encode_texts(templates).float(), dim=-1)  # (T, D)
    return F.normalize(embeddings.mean(dim=0), dim=-1)


def maco_scores(
    image_features: np.ndarray, positive: np.ndarray, negative: np.ndarray, scale: float
) -> np.ndarray:
    """P(positive) per image and class from a 2-way softmax: (N, D), (C, D), (C, D) -> (N, C)."""
    images = F.normalize(torch.from_numpy(image_features).float(), dim=-1)
    pos = images @ torch.from_numpy(positive).float().T  # (N, C)
    neg = images @ torch.from_numpy(negative).float().T  # (N, C)
    logits = torch.stack([pos, neg], dim=-1) * scale  # (N, C, 2)
    return torch.softmax(logits, dim=-1)[..., 0].numpy().astype(np.float64)


def clip_scores(image_features: np.ndarray, positive: np.ndarray, scale: float) -> np.ndarray:
    """Softmax over classes of scaled cosine similarities: (N, D), (C, D) -> (N, C)."""
    images = F.normalize(torch.from_numpy(image_features).float(), dim=-1)
    logits = images @ torch.from_numpy(positive).float().T * scale  # (N, C)
    return torch.softmax(logits, dim=-1).numpy().astype(np.float64)


def prompt_embeddings(
    encode_texts, prompts: dict[str, dict[str, list[str]]], classes: list[str]
) -> tuple[np.ndarray, np.ndarray | None]:
    """(C, D) positive and (C, D) negative class embeddings (None when a class lacks negatives)."""
    positive = np.stack(
        [class_embedding(encode_texts, prompts[c]["positive"]).numpy() for c in classes]
    )
    if not all(prompts[c]["negative"] for c in classes):
        return positive, None
    negative = np.stack(
        [class_embedding(encode_texts, prompts[c]["negative"]).numpy() for c in classes]
    )
    return positive, negative
