"""MMCLIP's masks: attention-masked image modelling (AttMIM) and entity-driven MLM (EntMLM).

AttMIM (Wu et al., MMCLIP §2.2, Eqs 4-9):

- :func:`attention_map`: A_x = softmax(E_img E_xᵀ / √d_k) · E_x for x in {report,
  prompts, image} (Eqs 4-6): one C-vector per image patch;
- :func:`patch_scores`: one score per patch from the N x C map. The paper's
  M(A; λ₁) takes "the top values in feature matrix A" and turns them into a patch
  mask without saying how the C channels are reduced; cxrkit's default
  (``response``) is the patch's agreement with what it attended to,
  ⟨E_img,i, A_x,i⟩ / √d_k (high when the patch matches the text or image tokens it
  attends to); ``norm`` (‖A_x,i‖), ``mean`` and ``max`` over channels are the alternatives;
- :func:`attmim_masking`: M_b = ∪ top-λ₁ patches of each map (Eq 7), then a
  random subset (Eq 8). λ₂ is the fraction of ALL patches finally hidden (§3.3:
  "finally mask 75% of image features"), so every image hides the same number
  round(λ₂ N) and batches stay rectangular; when the union is smaller than that,
  the rest is drawn at random from outside the union (documented choice).

EntMLM (§2.3, Eq 10): RandomSubSet(M_e, λ₃) ∩ CausalMask.

- :func:`choose_entity_tokens`: λ₃ of the entity *words* (tokens of one word
  inside an entity span are taken together), at least one when there is any
  entity (``min_one``), chosen per sample in the loader workers;
- :func:`entmlm_attention`: the decoder's self-attention pattern: the causal
  (lower-triangular) mask intersected with "not a masked entity token" (a query
  still sees its own slot, which then holds only the mask token and a position).
"""

from __future__ import annotations

import math
import random
from typing import Literal

import torch

from cxrkit.errors import ConfigError
from cxrkit.objectives.masking import _from_keep_order, _noise, keep_count

PatchScore = Literal["response", "norm", "mean", "max"]
PATCH_SCORES = ("response", "norm", "mean", "max")


def attention_map(
    queries: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Eqs 4-6: softmax(Q Kᵀ / √d_k) · K, the keys serving as values.

    Takes queries (B, N, C), keys (B, M, C) and an optional key_mask (B, M) bool
    (True = a real key; padding is left out of the softmax). Returns (B, N, C).
    """
    logits = queries @ keys.transpose(1, 2) / math.sqrt(keys.shape[-1])  # (B, N, M)
    if key_mask is not None:
        logits = logits.masked_fill(~key_mask[:, None, :], float("-inf"))
    return torch.softmax(logits, dim=-1) @ keys


def patch_scores(
    attended: torch.Tensor, queries: torch.Tensor, how: PatchScore = "response"
) -> torch.Tensor:
    """One score per patch from an attention map (module doc): (B, N, C) -> (B, N).

    ``response``: ⟨queries_i, attended_i⟩ / √C; ``norm``: ‖attended_i‖;
    ``mean`` / ``max``: over the C channels of attended_i.
    """
    if how == "response":
        return (queries * attended).sum(-1) / math.sqrt(attended.shape[-1])
    if how == "norm":
        return attended.norm(dim=-1)
    if how == "mean":
        return attended.mean(-1)
    if how == "max":
        return attended.amax(-1)
    raise ConfigError(f"patch score {how!r} is not one of {', '.join(PATCH_SCORES)}")


def top_patches(scores: torch.Tensor, ratio: float) -> torch.Tensor:
    """M(A; λ₁): the round(λ₁ N) highest-scoring patches (at least 1): (B, N) -> bool (B, N)."""
    if not 0.0 < ratio <= 1.0:
        raise ConfigError(f"attention top ratio must be in (0, 1], got {ratio}")
    count = max(1, min(scores.shape[1], round(scores.shape[1] * ratio)))
    index = scores.topk(count, dim=1).indices
    return torch.zeros_like(scores, dtype=torch.bool).scatter(1, index, True)


def attmim_masking(
    scores: torch.Tensor,
    valid: torch.Tensor,
    top_ratio: float,
    mask_ratio: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """AttMIM: union of the top-λ₁ patches of each valid map, then a random subset (Eqs 7-8).

    Takes scores (S, B, N): one score map per attention source; valid (S, B)
    bool: whether source s exists for image b (no report map for an image-only
    row); λ₁ = ``top_ratio``; λ₂ = ``mask_ratio``, the fraction of all N patches
    hidden; an optional seeded generator. An image with no valid map gets a
    random mask. Rule: draw uniform noise u (B, N); rank patches by u + 2·[not in
    the union] and hide the first N - K, K = ``keep_count(N, λ₂)``: a uniform
    random subset of the union when the union is large enough, the whole union
    plus random others otherwise.
    Returns (ids_keep (B, K), mask (B, N) float 1 = hidden, ids_restore (B, N),
    union (B, N) bool).
    """
    sources, batch, num = scores.shape
    union = torch.zeros(batch, num, dtype=torch.bool, device=scores.device)
    for s in range(sources):
        union |= top_patches(scores[s], top_ratio) & valid[s][:, None]
    union |= ~valid.any(0)[:, None]  # no source: every patch is a candidate (random masking)
    num_keep = keep_count(num, mask_ratio)
    noise = _noise((batch, num), generator, scores.device)
    rank = torch.argsort(torch.argsort(noise + 2.0 * (~union).to(noise.dtype), dim=1), dim=1)
    hidden = rank < num - num_keep  # (B, N)
    order = torch.argsort(noise + 2.0 * hidden.to(noise.dtype), dim=1)  # visible first
    ids_keep, mask, ids_restore = _from_keep_order(order, num_keep)
    return ids_keep, mask, ids_restore, union


def entity_words(entity_mask: torch.Tensor, word_ids: torch.Tensor) -> list[list[int]]:
    """Token positions of each entity word: runs of entity tokens sharing a word id.

    Takes entity_mask (T,) bool and word_ids (T,) long (-1 for special tokens).
    A token without a word id is its own word.
    """
    words: list[list[int]] = []
    previous = None
    for position in torch.nonzero(entity_mask).flatten().tolist():
        word = int(word_ids[position])
        if words and word >= 0 and word == previous and words[-1][-1] == position - 1:
            words[-1].append(position)
        else:
            words.append([position])
        previous = word
    return words


def entity_word_count(num_words: int, ratio: float, min_one: bool = True) -> int:
    """Entity words to mask: round(λ₃ · words), at least 1 when there is one and ``min_one``."""
    count = int(math.floor(num_words * ratio + 0.5))
    if min_one and num_words > 0:
        count = max(1, count)
    return min(count, num_words)


def choose_entity_tokens(
    entity_mask: torch.Tensor,
    word_ids: torch.Tensor,
    ratio: float,
    rng: random.Random,
    min_one: bool = True,
) -> torch.Tensor:
    """RandomSubSet(M_e, λ₃): whole entity words, :func:`entity_word_count` of them: (T,) bool."""
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(f"entity mask ratio must be in [0, 1], got {ratio}")
    words = entity_words(entity_mask.bool(), word_ids)
    chosen = rng.sample(words, entity_word_count(len(words), ratio, min_one))
    out = torch.zeros(entity_mask.shape[0], dtype=torch.bool)
    for word in chosen:
        out[word] = True
    return out


def entmlm_attention(mlm_mask: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Which keys each query of the text decoder sees: (B, T) x2 -> allowed (B, T, T) bool.

    allowed[b, q, k] = k <= q (CausalMask) and key k is a real token and not a
    masked entity token, except k == q (every query keeps its own slot, so no
    row is empty). Masked tokens are thus invisible to every other position.
    """
    length = mlm_mask.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=mlm_mask.device).tril()
    key_ok = attention_mask.bool() & ~mlm_mask.bool()  # (B, T)
    eye = torch.eye(length, dtype=torch.bool, device=mlm_mask.device)
    return causal[None] & (key_ok[:, None, :] | eye[None])
