"""Zero-shot classification from class prompts (prompt data kept apart from the logic).

Prompts come from an annotations artifact's ``prompts.json``, ``--prompts FILE``, or
cxrkit's shipped prompt set, all read by ``cxrkit.text.prompts`` (the one source of
prompt data and of template expansion). Each class embedding is the renormalised mean of its normalised prompt embeddings.

Three scorings (``cxrkit eval --set zeroshot_scoring=[...]`` picks among them):

- ``maco``: per class, a softmax over (positive, negative) cosine similarities
  times the model's logit scale, i.e. ``sigmoid(scale * (sim_pos - sim_neg))``: an
  independent probability per class, fit for multi-label findings.
- ``maco_code``: exactly what MaCo's released zero-shot code does
  (``ZeroShot/model_MaCo.py`` ``ZeroShotClassificationHead``, ``utils/prompts.py``):
  MaCo's own prompts ("There is {c}." against "the lung is clear.", "There is no
  {c}.", "no {c}.", "no evidence of {c}."), each class embedding the plain mean of
  its prompts' *unnormalised* embeddings, and a per-class softmax over the *raw*
  dot products [x·p, x·n] with the image embedding x (no normalisation, no scale).
- ``clip``: a softmax over the classes' positive embeddings: one distribution per
  image; needs two or more classes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


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


MACO_CODE_TEMPLATES = {
    "positive": ["There is {c}."],
    "negative": ["the lung is clear.", "There is no {c}.", "no {c}.", "no evidence of {c}."],
}
"""MaCo's released zero-shot prompts (``ZeroShot/utils/prompts.py``), as cxrkit templates."""


def maco_code_prompts(classes: list[str]) -> dict[str, dict[str, list[str]]]:
    """MaCo's released zero-shot prompts per class (class names lower-cased, as the code),
    expanded by :func:`cxrkit.text.prompts.fill_templates` like every other prompt set."""
    from cxrkit.text.prompts import fill_templates

    names = _display_names()
    return {
        name: fill_templates(MACO_CODE_TEMPLATES, names.get(name, name).lower()) for name in classes
    }


def _display_names() -> dict[str, str]:
    from cxrkit.text.prompts import load_prompts as load_prompt_set

    return dict(load_prompt_set(None).get("names") or {})


@torch.inference_mode()
def raw_prompt_embeddings(
    encode_texts, prompts: dict[str, dict[str, list[str]]], classes: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(C, D) positive and negative class embeddings: plain means of unnormalised embeddings."""

    def mean(texts: list[str]) -> np.ndarray:
        return encode_texts(texts).float().mean(dim=0).numpy()

    positive = np.stack([mean(prompts[c]["positive"]) for c in classes])
    negative = np.stack([mean(prompts[c]["negative"]) for c in classes])
    return positive, negative


def maco_code_scores(
    image_features: np.ndarray, positive: np.ndarray, negative: np.ndarray
) -> np.ndarray:
    """P(positive) per image and class: softmax over raw [x·p, x·n]: (N, D), (C, D) -> (N, C)."""
    images = torch.from_numpy(image_features).float()
    pos = images @ torch.from_numpy(positive).float().T  # (N, C)
    neg = images @ torch.from_numpy(negative).float().T  # (N, C)
    return torch.softmax(torch.stack([pos, neg], dim=-1), dim=-1)[..., 0].numpy().astype(np.float64)


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
