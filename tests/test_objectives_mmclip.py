"""MMCLIP: the AttMIM and EntMLM masks on hand-made inputs, the loss terms, image-only rows."""

from __future__ import annotations

import math
import random

import pytest
import torch

from cxrkit.errors import ConfigError
from cxrkit.objectives.base import build_objective, objective_class
from cxrkit.objectives.contrastive import symmetric_infonce
from cxrkit.objectives.mmclip import EntityTokens
from cxrkit.objectives.mmclip_masking import (
    attention_map,
    attmim_masking,
    choose_entity_tokens,
    entity_word_count,
    entity_words,
    entmlm_attention,
    patch_scores,
    top_patches,
)
from cxrkit.text.prompts import load_prompts


# ------------------------------------------------------------------ attention maps (Eqs 4-6)
def test_attention_map_is_softmax_of_scaled_dot_products_times_the_keys():
    queries = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # (1, 2, 2)
    keys = torch.tensor([[[1.0, 1.0], [2.0, 0.0], [0.0, 0.0]]])  # (1, 3, 2)
    out = attention_map(queries, keys)
    # query 0: logits (1, 2, 0) / sqrt 2; query 1: (2, 0, 0) / sqrt 2
    for q, logits in enumerate(([1.0, 2.0, 0.0], [2.0, 0.0, 0.0])):
        weights = [math.exp(v / math.sqrt(2)) for v in logits]
        total = sum(weights)
        expected = [
            sum(w / total * keys[0, j, c].item() for j, w in enumerate(weights)) for c in range(2)
        ]
        assert out[0, q].tolist() == pytest.approx(expected, abs=1e-6)


def test_padding_keys_get_no_attention():
    queries = torch.tensor([[[1.0, 0.0]]])
    keys = torch.tensor([[[1.0, 1.0], [50.0, 0.0]]])
    out = attention_map(queries, keys, key_mask=torch.tensor([[True, False]]))
    assert out[0, 0].tolist() == pytest.approx([1.0, 1.0])


def test_patch_scores_by_hand():
    attended = torch.tensor([[[3.0, 4.0], [1.0, -1.0]]])
    queries = torch.tensor([[[1.0, 1.0], [2.0, 0.0]]])
    assert patch_scores(attended, queries, "response")[0].tolist() == pytest.approx(
        [7 / math.sqrt(2), 2 / math.sqrt(2)]
    )
    assert patch_scores(attended, queries, "norm")[0].tolist() == pytest.approx([5.0, math.sqrt(2)])
    assert patch_scores(attended, queries, "mean")[0].tolist() == pytest.approx([3.5, 0.0])
    assert patch_scores(attended, queries, "max")[0].tolist() == pytest.approx([4.0, 1.0])
    with pytest.raises(ConfigError):
        patch_scores(attended, queries, "sum")


# ------------------------------------------------------------------ AttMIM on a 4 x 4 grid
def _map(top: list[int]) -> torch.Tensor:
    """A score map over 16 patches whose highest entries are ``top`` (descending)."""
    scores = torch.arange(16, dtype=torch.float32) / 100  # distinct low scores elsewhere
    for rank, patch in enumerate(top):
        scores[patch] = 10.0 - rank
    return scores


REPORT, PROMPT, SELF = [0, 1, 2, 3], [3, 4, 5, 6], [12, 13, 14, 15]


def _noise(seed: int) -> list[float]:
    return torch.rand((1, 16), generator=torch.Generator().manual_seed(seed))[0].tolist()


def test_top_patches_takes_round_ratio_times_n():
    assert torch.nonzero(top_patches(_map(REPORT)[None], 0.25)[0]).flatten().tolist() == REPORT
    assert int(top_patches(_map(REPORT)[None], 0.7)[0].sum()) == 11  # round(11.2)
    assert int(top_patches(_map(REPORT)[None], 0.01)[0].sum()) == 1  # at least one


def test_attmim_hides_a_seeded_random_subset_of_the_union():
    scores = torch.stack([_map(REPORT), _map(PROMPT), _map(SELF)])[:, None]  # (3, 1, 16)
    valid = torch.ones(3, 1, dtype=torch.bool)
    gen = torch.Generator().manual_seed(7)
    ids_keep, mask, ids_restore, union = attmim_masking(scores, valid, 0.25, 0.5, gen)
    expected_union = sorted(set(REPORT) | set(PROMPT) | set(SELF))  # 11 patches
    assert torch.nonzero(union[0]).flatten().tolist() == expected_union
    noise = _noise(7)
    # keep_count(16, 0.5) = 8 visible, so 8 hidden: the union members with the smallest noise
    expected_hidden = sorted(sorted(expected_union, key=lambda p: noise[p])[:8])
    assert torch.nonzero(mask[0]).flatten().tolist() == expected_hidden
    assert sorted(ids_keep[0].tolist()) == sorted(set(range(16)) - set(expected_hidden))
    # ids_restore undoes the [visible, hidden] order
    shuffled = torch.cat([ids_keep[0], torch.tensor(expected_hidden)])
    assert len(set(ids_keep[0].tolist())) == 8
    assert torch.equal(shuffled[ids_restore[0]].sort().values, torch.arange(16))
    again = attmim_masking(scores, valid, 0.25, 0.5, torch.Generator().manual_seed(7))[1]
    assert torch.equal(again, mask)


def test_attmim_tops_up_from_outside_the_union_when_it_is_too_small():
    scores = torch.stack([_map(REPORT), _map(PROMPT), _map(SELF)])[:, None]
    valid = torch.ones(3, 1, dtype=torch.bool)
    _, mask, _, _ = attmim_masking(scores, valid, 0.25, 0.75, torch.Generator().manual_seed(3))
    union = set(REPORT) | set(PROMPT) | set(SELF)
    noise = _noise(3)
    outside = sorted(set(range(16)) - union, key=lambda p: noise[p])
    hidden = set(torch.nonzero(mask[0]).flatten().tolist())
    assert len(hidden) == 12 and union <= hidden and hidden - union == {outside[0]}


def test_a_row_without_a_report_uses_the_prompt_and_self_maps_only():
    scores = torch.stack([_map(REPORT), _map(PROMPT), _map(SELF)])[:, None].repeat(1, 2, 1)
    valid = torch.tensor([[True, False], [True, True], [True, True]])  # row 1: no report
    _, _, _, union = attmim_masking(scores, valid, 0.25, 0.25, torch.Generator().manual_seed(0))
    assert torch.nonzero(union[0]).flatten().tolist() == sorted(set(REPORT + PROMPT + SELF))
    assert torch.nonzero(union[1]).flatten().tolist() == sorted(set(PROMPT + SELF))


def test_the_paper_ratios_on_a_4x4_grid():
    scores = torch.stack([_map(REPORT), _map(PROMPT), _map(SELF)])[:, None]
    valid = torch.ones(3, 1, dtype=torch.bool)
    ids_keep, mask, _, union = attmim_masking(scores, valid, 0.7, 0.75)
    assert int(mask.sum()) == 12 and ids_keep.shape == (1, 4)  # λ₂ = 0.75 of 16 hidden
    assert bool((mask.bool() <= union).all())  # the union of 11-patch maps covers >= 12


# ------------------------------------------------------------------ EntMLM
def test_entity_words_group_the_pieces_of_one_word():
    entity = torch.tensor([False, True, True, False, True, True, True])
    words = torch.tensor([-1, 0, 0, 1, 2, 3, 3])
    assert entity_words(entity, words) == [[1, 2], [4], [5, 6]]


def test_entity_word_count_rounds_the_ratio_with_at_least_one():
    assert entity_word_count(10, 0.2) == 2
    assert entity_word_count(3, 0.2) == 1  # round(0.6)
    assert entity_word_count(2, 0.2) == 1  # round(0.4) = 0, at least one
    assert entity_word_count(2, 0.2, min_one=False) == 0
    assert entity_word_count(0, 0.2) == 0


REPORT_TEXT = (
    "Mild cardiomegaly. Small left pleural effusion and right basilar atelectasis. "
    "No pneumothorax. Degenerative changes of the thoracic spine. Surgical clips noted."
)
ENTITY_WORDS = [
    "cardiomegaly", "pleural", "effusion", "basilar", "atelectasis", "pneumothorax",
    "degenerative", "thoracic", "spine", "clips",
]  # fmt: skip


def _entities(text: str) -> list[dict]:
    out = []
    for word in ENTITY_WORDS:
        start = text.lower().index(word)
        out.append(
            {"start": start, "end": start + len(word), "text": text[start : start + len(word)]}
        )
    return out


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    objective = build_objective("mmclip", objective_class("mmclip").tiny_config())
    objective.on_dataset_fields({"prompts": load_prompts(None)})
    return objective


def test_entmlm_masks_only_entity_tokens_at_the_ratio(tiny):
    transform = EntityTokens(tiny.text.tokenizer(), ratio=0.2)
    for seed in range(5):
        tokens = transform({"text": REPORT_TEXT, "entities": _entities(REPORT_TEXT), "seed": seed})[
            "tokens"
        ]
        chosen, entity = tokens["mlm_mask"], tokens["entity_mask"]
        assert bool((chosen <= entity).all())
        words = {int(w) for w in tokens["word_ids"][chosen]}
        assert len(words) == 2  # 10 entity words x 0.2
        # whole words: every piece of a chosen word is chosen
        assert bool((chosen == torch.isin(tokens["word_ids"], torch.tensor(sorted(words)))).all())
    picks = {
        tuple(transform({"text": REPORT_TEXT, "entities": _entities(REPORT_TEXT), "seed": s})[
            "tokens"]["mlm_mask"].nonzero().flatten().tolist())
        for s in range(6)
    }  # fmt: skip
    assert len(picks) > 1  # the seed changes the choice


def test_entmlm_attention_never_goes_beyond_the_causal_mask():
    mlm = torch.tensor([[False, False, True, False, True, False]])
    real = torch.tensor([[1, 1, 1, 1, 1, 0]])
    allowed = entmlm_attention(mlm, real)[0]
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    assert bool((allowed <= causal).all())
    for q in range(6):
        for k in range(q + 1):
            expected = k == q or (bool(real[0, k]) and not bool(mlm[0, k]))
            assert bool(allowed[q, k]) == expected, (q, k)


def test_a_masked_entity_token_cannot_be_read_at_its_own_position(tiny):
    """The logits predicting masked token t do not change when token t does (no target leak)."""
    transform = EntityTokens(tiny.text.tokenizer(), ratio=0.5)
    tokens = transform({"text": REPORT_TEXT, "entities": _entities(REPORT_TEXT), "seed": 1})[
        "tokens"
    ]
    tokens = {k: v[None] for k, v in tokens.items()}
    positions = tokens["mlm_mask"][0].nonzero().flatten().tolist()
    assert len(positions) >= 3
    tiny.eval()
    image = torch.randn(1, 4 * 4, tiny.cfg.embed_dim)
    mask = tokens["mlm_mask"]
    allowed = entmlm_attention(mask, tokens["attention_mask"])

    def logits(ids: torch.Tensor) -> torch.Tensor:
        _, e_rep = tiny._text_features({**tokens, "input_ids": ids})
        return tiny.mlm_decoder(e_rep, mask, allowed, image)[0]

    with torch.no_grad():
        base = logits(tokens["input_ids"])
        for position in positions:
            ids = tokens["input_ids"].clone()
            ids[0, position] = 400
            changed = logits(ids)
            assert torch.allclose(changed[position], base[position], atol=1e-5)
            assert torch.allclose(changed[:position], base[:position], atol=1e-5)
            later = [p for p in range(position + 1, 48) if not mask[0, p]]
            assert not torch.allclose(changed[later], base[later])  # the test can fail


# ------------------------------------------------------------------ losses
def test_symmetric_infonce_by_hand():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    i2t, t2i = symmetric_infonce(image, text, 2.0)
    c = 2 / math.sqrt(2)  # scale * cos 45°
    # S = [[2, c], [0, c]]; rows: images
    row0 = -math.log(math.exp(2) / (math.exp(2) + math.exp(c)))
    row1 = -math.log(math.exp(c) / (1 + math.exp(c)))
    col0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    col1 = -math.log(math.exp(c) / (math.exp(c) + math.exp(c)))
    assert i2t.item() == pytest.approx((row0 + row1) / 2, abs=1e-6)
    assert t2i.item() == pytest.approx((col0 + col1) / 2, abs=1e-6)


def _batch(objective, texts: list[str], seed: int = 0) -> dict:
    transform = objective.sample_transform()
    samples = [
        transform({"text": t, "entities": _entities(t) if t else [], "seed": i})["tokens"]
        for i, t in enumerate(texts)
    ]
    tokens = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(len(texts), 1, 32, 32, generator=gen)
    return {"image": images, "text": list(texts), "tokens": tokens}


def _grads(module: torch.nn.Module) -> list:
    return [p.grad for p in module.parameters()]


def test_image_only_rows_train_mim_only_and_leave_the_text_tower_alone(tiny):
    tiny.train().zero_grad(set_to_none=True)
    losses = tiny.loss(_batch(tiny, ["", "", ""]), step=10)
    assert math.isnan(losses["align"]) and math.isnan(losses["mlm"])
    assert math.isnan(losses["mim_paired"])
    assert losses["loss"].item() == pytest.approx(losses["mim_unpaired"].item())
    losses["loss"].backward()
    assert all(g is None for g in _grads(tiny.text))
    assert all(g is None for g in _grads(tiny.mlm_decoder)) and tiny.log_logit_scale.grad is None
    assert any(g is not None and g.abs().sum() > 0 for g in _grads(tiny.mim_decoder))
    assert any(g is not None and g.abs().sum() > 0 for g in _grads(tiny.encoder))


def test_a_mixed_batch_sums_the_paired_and_unpaired_terms(tiny):
    tiny.train().zero_grad(set_to_none=True)
    texts = [REPORT_TEXT, REPORT_TEXT.replace("Mild", "Severe"), ""]
    losses = tiny.loss(_batch(tiny, texts), step=10)
    expected = losses["align"] + losses["mim_paired"] + losses["mlm"] + losses["mim_unpaired"]
    assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert losses["paired_fraction"].item() == pytest.approx(2 / 3)
    assert losses["mask_ratio_actual"].item() == pytest.approx(12 / 16)
    losses["loss"].backward()
    assert any(g is not None and g.abs().sum() > 0 for g in _grads(tiny.text))
    assert tiny.log_logit_scale.grad is not None


def test_the_warm_up_trains_masked_modelling_only(tiny):
    cfg = dict(objective_class("mmclip").tiny_config(), warmup_steps=5)
    torch.manual_seed(0)
    objective = build_objective("mmclip", cfg)
    objective.on_dataset_fields({"prompts": load_prompts(None)})
    texts = [REPORT_TEXT, REPORT_TEXT.replace("Mild", "Severe")]
    losses = objective.train().loss(_batch(objective, texts), step=4)
    assert losses["loss"].item() == pytest.approx(
        (losses["mim_paired"] + losses["mlm"]).item(), rel=1e-5
    )
    assert torch.isfinite(losses["align"])  # logged, not optimised
    losses["loss"].backward()
    assert objective.log_logit_scale.grad is None or objective.log_logit_scale.grad == 0
    after = objective.loss(_batch(objective, texts), step=5)
    assert after["loss"].item() == pytest.approx(
        (after["align"] + after["mim_paired"] + after["mlm"]).item(), rel=1e-5
    )


def test_image_text_capability_shapes(tiny):
    tiny.eval()
    with torch.no_grad():
        images = tiny.encode_image(torch.randn(2, 1, 32, 32))
        texts = tiny.encode_text(tiny.tokenize(["no acute process", "pleural effusion"]))
    assert images.shape == (2, 32) and texts.shape == (2, 32)
    assert tiny.logit_scale() == pytest.approx(1 / 0.07, rel=1e-4)
    images, masked, recon = tiny.reconstruct(torch.randn(2, 1, 32, 32), seed=0)
    assert masked.shape == recon.shape == images.shape


def test_bad_settings_are_config_errors():
    base = objective_class("mmclip").tiny_config()
    for bad in (
        {"attention_maps": ["report", "reprot"]},
        {"mask_ratio": 1.0},
        {"attention_ratio": 0.0},
        {"patch_score": "sum"},
    ):
        with pytest.raises(ConfigError):
            build_objective("mmclip", {**base, **bad})


def test_entity_choice_rejects_a_bad_ratio():
    with pytest.raises(ConfigError):
        choose_entity_tokens(
            torch.ones(3, dtype=torch.bool), torch.arange(3), 1.5, random.Random(0)
        )


def test_merge_batches_concatenates_tensors_lists_and_token_dicts():
    from cxrkit.io.mixing import ImageOnly, merge_batches

    a = {"image": torch.zeros(2, 1), "text": ["x", "y"], "tokens": {"ids": torch.ones(2, 3)}}
    b = {"image": torch.ones(1, 1), "text": [""], "tokens": {"ids": torch.zeros(1, 3)}}
    merged = merge_batches(a, b)
    assert merged["image"].flatten().tolist() == [0.0, 0.0, 1.0]
    assert merged["text"] == ["x", "y", ""] and merged["tokens"]["ids"].shape == (3, 3)
    with pytest.raises(ValueError, match="different keys"):
        merge_batches(a, {"image": torch.ones(1, 1)})
    blank = ImageOnly(None, entities=True)({"text": "a report", "entities": [{"start": 0}]})
    assert blank == {"text": "", "entities": []}


def test_open_clip_loads_the_export_and_gives_the_same_embeddings(tiny, tmp_path):
    from cxrkit.export import open_clip_format

    tiny.eval()
    model_cfg, state = tiny.to_open_clip()
    assert model_cfg["vision_cfg"]["no_ln_pre"] is False  # the CLIP ViT's ln_pre travels
    preprocess = {"image_size": 32, "mean": 0.5, "std": 0.5}
    out = open_clip_format.write_open_clip(
        tmp_path, model_cfg, state, open_clip_format.preprocess_cfg(preprocess)
    )
    report = open_clip_format.verify(out, tiny, torch.randn(2, 1, 32, 32))
    assert report["max_abs_diff"] < 1e-4, report


def test_clip_weights_initialise_both_towers_projections_and_temperature(tiny, tmp_path):
    """An open_clip CLIP state dict (here: the tiny model's own export) -> the same embeddings."""
    tiny.eval()
    _, state = tiny.to_open_clip()
    with torch.no_grad():
        state["logit_scale"] = torch.tensor(math.log(20.0))
    path = tmp_path / "clip.pt"
    torch.save(state, path)
    cfg = objective_class("mmclip").tiny_config()
    cfg = {**cfg, "image_weights": str(path), "text": {**cfg["text"], "weights": str(path)}}
    torch.manual_seed(123)  # other random init: only the file can make them equal
    fresh = build_objective("mmclip", cfg).eval()
    images = torch.randn(2, 1, 32, 32)
    tokens = tiny.tokenize(["small left pleural effusion", "no pneumothorax"])
    with torch.no_grad():
        torch.testing.assert_close(fresh.encode_image(images), tiny.encode_image(images))
        torch.testing.assert_close(fresh.encode_text(tokens), tiny.encode_text(tokens))
    assert fresh.logit_scale() == pytest.approx(20.0, rel=1e-5)
