"""MaCo: the weighted InfoNCE and correlation weight by hand, the objective on real data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cxrkit.errors import ConfigError, InputError
from cxrkit.objectives.base import build_objective
from cxrkit.objectives.contrastive import correlation_weight, maco_contrastive_loss
from cxrkit.objectives.maco import MaCo

TINY_MODEL = {"arch": "vit_tiny_patch16_224", "image_size": 32, "patch_size": 8, "depth": 1}
TINY = {
    "model": TINY_MODEL,
    "text": {"context_length": 24, "pooling": "mean"},
    "embed_dim": 32,
    "decoder_dim": 32,
    "decoder_depth": 1,
    "decoder_heads": 2,
}
REPORTS = [
    "No acute cardiopulmonary abnormality.",
    "Right lower lobe pneumonia.",
    "Small left pleural effusion.",
    "Heart size is normal. Lungs are clear.",
]

E1, E2, E3 = torch.eye(3)


def _ce(row: list[float], target: int) -> float:
    return math.log(sum(math.exp(v) for v in row)) - row[target]


def _real_images(count: int = 4, size: int = 32) -> torch.Tensor:
    """Real pediatric chest X-rays, grey, normalised to [-1, 1]: (B, 1, S, S)."""
    from cxrkit.io.bundled import pediatric_jpegs

    images = []
    for path in pediatric_jpegs()[:count]:
        grey = Image.open(path).convert("L").resize((size, size), Image.BILINEAR)
        images.append(torch.from_numpy(np.asarray(grey, dtype=np.float32) / 255.0))
    return ((torch.stack(images) - 0.5) / 0.5)[:, None]


@pytest.fixture(scope="module")
def tiny_maco() -> MaCo:
    torch.manual_seed(0)
    return build_objective("maco", dict(TINY))


# -- the weighted InfoNCE on a 3x3 example -------------------------------------------------


def test_weighted_infonce_equals_hand_computation_on_3x3():
    # images e1, e2, e3; texts e1, e1, e3 -> cos = [[1,1,0],[0,0,0],[0,0,1]]; tau = 2
    images, texts = torch.stack([E1, E2, E3]), torch.stack([E1, E1, E3])
    weight = torch.tensor([1.0, 2.0, 0.5])
    loss = maco_contrastive_loss(images, texts, weight, torch.tensor(2.0))
    # S rows (images): [2,2,0], [0,0,0], [0,0,2]; S^T rows (texts): [2,0,0], [2,0,0], [0,0,2]
    scaled_images = (_ce([2, 2, 0], 0) + _ce([0, 0, 0], 1) + _ce([0, 0, 1], 2)) / 3  # w_i * row i
    scaled_texts = (_ce([2, 0, 0], 0) + _ce([4, 0, 0], 1) + _ce([0, 0, 1], 2)) / 3
    weighted_images = (
        1 * _ce([2, 2, 0], 0) + 2 * _ce([0, 0, 0], 1) + 0.5 * _ce([0, 0, 2], 2)
    ) / 3.5
    weighted_texts = (1 * _ce([2, 0, 0], 0) + 2 * _ce([2, 0, 0], 1) + 0.5 * _ce([0, 0, 2], 2)) / 3.5
    expected = (scaled_images + scaled_texts + weighted_images + weighted_texts) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_weighted_infonce_with_unit_weights_is_symmetric_infonce():
    images, texts = torch.randn(5, 8), torch.randn(5, 8)
    logits = 3.0 * F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).T
    targets = torch.arange(5)
    plain = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    loss = maco_contrastive_loss(images, texts, torch.ones(5), torch.tensor(3.0))
    assert loss.item() == pytest.approx(plain.item(), rel=1e-6)


def test_infonce_is_invariant_to_vector_length():
    images, texts = torch.randn(4, 6), torch.randn(4, 6)
    weight, scale = torch.rand(4) + 0.5, torch.tensor(10.0)
    a = maco_contrastive_loss(images, texts, weight, scale)
    b = maco_contrastive_loss(images * 7.0, texts * 0.1, weight, scale)
    assert a.item() == pytest.approx(b.item(), rel=1e-5)


# -- the correlation weight ---------------------------------------------------------------


def test_correlation_weight_is_log2_per_image_at_init():
    linear = nn.Linear(6, 1)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    visible = torch.tensor([[1.0, 0, 1, 0, 1, 0], [0, 0, 0, 1, 1, 1]])
    weight = correlation_weight(visible, linear)
    assert weight.shape == (2,)
    assert torch.allclose(weight, torch.full((2,), math.log(2.0)))


def test_correlation_weight_gradient_is_sigmoid_times_visible_indicator():
    linear = nn.Linear(4, 1)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, -1.0, 0.5, 0.0]]))
        linear.bias.fill_(0.25)
    visible = torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 1]])
    correlation_weight(visible, linear).sum().backward()
    # d softplus(z)/dz = sigmoid(z); z = a.m + b: image 0 -> 0.25, image 1 -> 0.75
    s0, s1 = 1 / (1 + math.exp(-0.25)), 1 / (1 + math.exp(-0.75))
    expected = torch.tensor([[s0, s0, s1, s1]])
    assert torch.allclose(linear.weight.grad, expected, atol=1e-6)
    assert linear.bias.grad.item() == pytest.approx(s0 + s1, rel=1e-6)


def test_correlation_weight_gets_gradient_only_through_the_scaled_terms():
    torch.manual_seed(1)
    images, texts = torch.randn(3, 5), torch.randn(3, 5)
    visible = torch.tensor([[1.0, 0, 1, 0], [0, 1, 1, 0], [1, 1, 1, 0]])
    scale = torch.tensor(4.0)

    def grad_of_a(loss_fn) -> torch.Tensor:
        linear = nn.Linear(4, 1)
        with torch.no_grad():
            linear.weight.copy_(torch.tensor([[0.3, -0.2, 0.1, 0.4]]))
            linear.bias.fill_(-0.1)
        loss_fn(correlation_weight(visible, linear)).backward()
        return linear.weight.grad

    def scaled_terms_only(weight: torch.Tensor) -> torch.Tensor:
        logits = scale * F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).T
        w, targets = weight[:, None], torch.arange(3)
        return (F.cross_entropy(logits * w, targets) + F.cross_entropy(logits.T * w, targets)) / 4

    full = grad_of_a(lambda w: maco_contrastive_loss(images, texts, w, scale))
    assert full.abs().sum() > 0
    assert torch.allclose(full, grad_of_a(scaled_terms_only), atol=1e-6)
    assert torch.all(full[0, 3] == 0)  # a patch never visible gets no gradient


# -- the objective --------------------------------------------------------------------------


def test_objective_reports_named_losses_and_backpropagates_everywhere(tiny_maco):
    tiny_maco.train()
    out = tiny_maco.loss({"image": _real_images(), "text": REPORTS})
    assert {"loss", "rec", "con", "logit_scale", "correlation_weight"} <= set(out)
    assert out["loss"].item() == pytest.approx(
        0.9 * out["rec"].item() + 0.1 * out["con"].item(), rel=1e-5
    )
    assert out["logit_scale"].item() == pytest.approx(1 / 0.03, rel=1e-5)
    assert out["correlation_weight"].item() == pytest.approx(math.log(2.0), rel=1e-5)
    tiny_maco.zero_grad()
    out["loss"].backward()
    for name in ("logit_scale_value", "correlation.weight", "image_projection.weight"):
        assert dict(tiny_maco.named_parameters())[name].grad.abs().sum() > 0, name
    assert tiny_maco.text_projection.weight.grad.abs().sum() > 0
    assert tiny_maco.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert tiny_maco.decoder.head.weight.grad.abs().sum() > 0


def test_code_sum_weighting_adds_the_losses_unweighted():
    torch.manual_seed(0)
    maco = build_objective("maco", {**TINY, "loss_weighting": "code_sum"}).eval()
    out = maco.loss({"image": _real_images(), "text": REPORTS})
    assert out["loss"].item() == pytest.approx(out["rec"].item() + out["con"].item(), rel=1e-5)


def test_unmasked_training_vector_equals_encode_image(tiny_maco):
    """With nothing hidden, the visible-token vector is encode_image's (mean of all patches)."""
    maco = build_objective("maco", {**TINY, "mask_ratio": 0.0})
    maco.load_state_dict(tiny_maco.state_dict())
    maco.eval()  # no dropout in the text tower
    images = _real_images()
    out = maco.loss({"image": images, "text": REPORTS})
    with torch.no_grad():
        weight = F.softplus(maco.correlation(torch.ones(1, maco.num_patches))).reshape(1)
        expected = maco_contrastive_loss(
            maco.encode_image(images),
            maco.encode_text(maco.tokenize(REPORTS)),
            weight.expand(4),
            maco.logit_scale_value,
        )
    assert out["con"].item() == pytest.approx(expected.item(), rel=1e-4)


def test_reconstruction_target_at_twice_the_encoder_size():
    """As the code: 32-px encoder input, 64-px target, 16-px target patches (4x4 grid)."""
    torch.manual_seed(0)
    maco = build_objective("maco", {**TINY, "target_size": 64}).eval()
    assert maco.decoder.head.out_features == 16 * 16
    images = _real_images(size=64)
    out = maco.loss({"image": images, "text": REPORTS})
    assert torch.isfinite(out["loss"])
    pixels, hidden = maco.forward_reconstruction(images, torch.Generator().manual_seed(0))
    assert pixels.shape == hidden.shape == (4, 1, 64, 64)
    assert hidden.mean().item() == pytest.approx(0.5)
    assert maco.encode_image(images).shape == (4, 32)  # resized to the encoder's 32 px
    with pytest.raises(InputError, match="data.image_size"):
        maco.loss({"image": _real_images(size=48), "text": REPORTS})


def test_encode_text_projects_the_pooled_text(tiny_maco):
    tiny_maco.eval()
    tokens = tiny_maco.tokenize(REPORTS)
    with torch.no_grad():
        embedded = tiny_maco.encode_text(tokens)
        pooled = tiny_maco.text_tower(tokens["input_ids"], tokens["attention_mask"]).pooled
    assert embedded.shape == (4, 32)
    assert torch.allclose(embedded, pooled @ tiny_maco.text_projection.weight.T, atol=1e-6)


def test_sample_transform_tokenises_one_report(tiny_maco):
    import pickle

    transform = pickle.loads(pickle.dumps(tiny_maco.sample_transform()))
    tokens = transform({"text": REPORTS[1]})["tokens"]
    assert tokens["input_ids"].shape == tokens["attention_mask"].shape == (24,)
    assert torch.equal(tokens["input_ids"], tiny_maco.tokenize([REPORTS[1]])["input_ids"][0])


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="target_size"):
        build_objective("maco", {**TINY, "target_size": 50})
    with pytest.raises(ConfigError, match="rec_weight"):
        build_objective("maco", {**TINY, "rec_weight": 1.5})
    with pytest.raises(ConfigError, match="did you mean"):
        build_objective("maco", {**TINY, "mask_ration": 0.5})


# -- negatives gathered across 2 gloo processes -------------------------------------------

GATHER_SCRIPT = r"""
import json, sys
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from cxrkit.objectives.contrastive import correlation_weight, gather_batch, maco_contrastive_loss

WORLD, PER_RANK = 2, 3


def data():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(WORLD * PER_RANK, 5, generator=g)
    texts = torch.randn(WORLD * PER_RANK, 4, generator=g)
    visible = (torch.rand(WORLD * PER_RANK, 6, generator=g) > 0.5).float()
    torch.manual_seed(1)
    heads = nn.Linear(5, 4), nn.Linear(6, 1)
    return feats, texts, visible, heads


def loss_of(heads, feats, texts, visible, gather):
    image_head, corr = heads
    image, weight = image_head(feats), correlation_weight(visible, corr)
    if gather:
        image, texts, weight = gather_batch(image), gather_batch(texts), gather_batch(weight)
    return maco_contrastive_loss(image, texts, weight, torch.tensor(5.0))


def grads(heads):
    return torch.cat([p.grad.flatten() for h in heads for p in h.parameters()])


def worker(rank, init, out):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    feats, texts, visible, heads = data()
    part = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    loss = loss_of(heads, feats[part], texts[part], visible[part], gather=True)
    loss.backward()
    grad = grads(heads)
    dist.all_reduce(grad)
    grad /= WORLD  # what DDP does with the ranks' gradients
    if rank == 0:
        feats, texts, visible, heads = data()
        single = loss_of(heads, feats, texts, visible, gather=False)
        single.backward()
        json.dump({"loss": [loss.item(), single.item()],
                   "max_grad_diff": (grad - grads(heads)).abs().max().item(),
                   "grad_norm": grads(heads).norm().item()}, open(out, "w"))
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1], sys.argv[2]), nprocs=WORLD)
"""


def test_gathered_negatives_on_two_gloo_processes_equal_one_process(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "gather.py"
    script.write_text(GATHER_SCRIPT)
    out = tmp_path / "result.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    init = f"file://{tmp_path / 'rendezvous'}"
    subprocess.run([sys.executable, str(script), init, str(out)], check=True, env=env, timeout=120)
    result = json.loads(out.read_text())
    distributed, single = result["loss"]
    assert distributed == pytest.approx(single, rel=1e-6)
    assert result["grad_norm"] > 0
    assert result["max_grad_diff"] < 1e-6


# -- open_clip export -----------------------------------------------------------------------


def test_open_clip_export_loads_with_open_clip_alone_and_matches(tiny_maco, tmp_path):
    from cxrkit.export import open_clip_format

    tiny_maco.eval()
    with torch.no_grad():  # a non-zero projection bias, so folding it is checked
        tiny_maco.image_projection.bias.uniform_(-0.5, 0.5)
    out = tmp_path / "open_clip"
    images = _real_images()
    with torch.no_grad():
        before = tiny_maco.encode_image(images)
    model_cfg, state = tiny_maco.to_open_clip(out)
    with torch.no_grad():  # exporting leaves the model as it was
        assert torch.equal(tiny_maco.encode_image(images), before)
    preprocess = {"image_size": 32, "mean": 0.5, "std": 0.5}
    open_clip_format.write_open_clip(
        out, model_cfg, state, open_clip_format.preprocess_cfg(preprocess)
    )
    model, _, tokenizer = open_clip_format.load_open_clip(out)
    with torch.no_grad():
        theirs_image = model.encode_image(images.expand(-1, 3, -1, -1))
        theirs_text = model.encode_text(tokenizer(REPORTS))
        ours_image = tiny_maco.encode_image(images)
        ours_text = tiny_maco.encode_text(tiny_maco.tokenize(REPORTS))
    assert torch.allclose(theirs_image, ours_image, atol=1e-4)
    assert torch.allclose(theirs_text, ours_text, atol=1e-4)
    assert model.logit_scale.exp().item() == pytest.approx(tiny_maco.logit_scale(), rel=1e-5)
    report = open_clip_format.verify(out, tiny_maco, images)
    assert report["max_abs_diff"] < 1e-4


def test_reconstruction_preview_comes_back_at_the_input_size():
    """Eval feeds images at model.image_size; the preview must overlay on them."""
    torch.manual_seed(0)
    maco = build_objective("maco", {**TINY, "target_size": 64}).eval()
    pixels, hidden = maco.forward_reconstruction(_real_images(size=32), torch.Generator())
    assert pixels.shape == hidden.shape == (4, 1, 32, 32)
    assert set(hidden.unique().tolist()) == {0.0, 1.0}


# -- MaCo's own zero-shot scoring --------------------------------------------------------


def test_maco_code_scoring_is_a_softmax_over_raw_dot_products():
    from cxrkit.evaluate.zeroshot import maco_code_scores

    image = np.array([[1.0, 2.0], [0.0, 0.0]])
    positive, negative = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    # image 0: x.p = 1, x.n = 2 -> e^1 / (e^1 + e^2); image 1: a tie -> 0.5. No normalising:
    # doubling the image vector sharpens the softmax (a cosine would not change).
    scores = maco_code_scores(image, positive, negative)
    assert scores[:, 0] == pytest.approx([math.exp(1) / (math.exp(1) + math.exp(2)), 0.5])
    doubled = maco_code_scores(image * 2, positive, negative)[0, 0]
    assert doubled == pytest.approx(math.exp(2) / (math.exp(2) + math.exp(4)))


def test_maco_code_prompts_and_plain_mean_class_embeddings():
    from cxrkit.evaluate.zeroshot import maco_code_prompts, raw_prompt_embeddings

    prompts = maco_code_prompts(["Pleural Effusion"])["Pleural Effusion"]
    assert prompts["positive"] == ["There is pleural effusion."]
    assert prompts["negative"] == [
        "the lung is clear.",
        "There is no pleural effusion.",
        "no pleural effusion.",
        "no evidence of pleural effusion.",
    ]
    table = {"a": [2.0, 0.0], "b": [0.0, 4.0]}
    encode = lambda texts: torch.tensor([table[t] for t in texts])  # noqa: E731
    pos, neg = raw_prompt_embeddings(
        encode, {"c": {"positive": ["a", "b"], "negative": ["b"]}}, ["c"]
    )
    assert pos.tolist() == [[1.0, 2.0]] and neg.tolist() == [[0.0, 4.0]]  # unnormalised means


def test_open_clip_export_of_a_bert_from_scratch_with_its_pooler(tmp_path):
    """The paper's setting: a BERT trained from scratch, pooled by BERT's pooler (the code's)."""
    from cxrkit.export import open_clip_format

    text = {"kind": "bert", "width": 32, "layers": 1, "heads": 2, "context_length": 16}
    torch.manual_seed(0)
    maco = build_objective("maco", {**TINY, "text": {**text, "pooling": "pooler"}}).eval()
    out = tmp_path / "open_clip"
    model_cfg, state = maco.to_open_clip(out)
    preprocess = open_clip_format.preprocess_cfg({"image_size": 32, "mean": 0.5, "std": 0.5})
    open_clip_format.write_open_clip(out, model_cfg, state, preprocess)
    report = open_clip_format.verify(out, maco, _real_images())
    assert report["max_abs_diff"] < 1e-4, report


def test_image_encoder_starts_from_mae_weights_and_the_checkpoint_config_forgets_the_file(
    tmp_path,
):
    import timm

    from cxrkit.objectives.loading import load_objective, save_objective

    torch.manual_seed(3)
    rgb = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8, depth=1
    )
    state = {**rgb.state_dict(), "decoder_embed.weight": torch.zeros(4, 4)}  # MAE's layout
    path = tmp_path / "mae_pretrain_vit_tiny.pth"
    torch.save({"model": state}, path)
    maco = build_objective("maco", {**TINY, "image_init": str(path)})
    ours = maco.encoder.state_dict()
    assert torch.equal(ours["blocks.0.attn.qkv.weight"], state["blocks.0.attn.qkv.weight"])
    summed = state["patch_embed.proj.weight"].sum(dim=1, keepdim=True)  # RGB -> grey
    assert torch.allclose(ours["patch_embed.proj.weight"], summed, atol=1e-6)
    assert maco.cfg.image_init is None
    save_objective(maco, tmp_path)
    path.unlink()  # the checkpoint rebuilds without the file
    again = load_objective(tmp_path)
    assert torch.equal(again.encoder.blocks[0].attn.qkv.weight, ours["blocks.0.attn.qkv.weight"])


def test_sentence_sampling_keeps_a_seeded_subset_of_shuffled_lowercased_sentences():
    from cxrkit.objectives.maco import sample_sentences

    report = "Heart size normal. No effusion. None. Lungs are clear.  ."
    sentences = {"heart size normal.", "no effusion.", "lungs are clear."}
    outputs = {sample_sentences(report, seed) for seed in range(40)}
    for text in outputs:
        kept = [s.strip() + "." for s in text.split(".") if s.strip()]
        assert 1 <= len(kept) <= 3 and set(kept) <= sentences and len(set(kept)) == len(kept)
    assert len(outputs) > 5  # different subsets and orders across seeds
    assert sample_sentences(report, 7) == sample_sentences(report, 7)
    assert sample_sentences("", 1) == ""


def test_text_augment_runs_in_the_sample_transform(tiny_maco):
    maco = build_objective("maco", {**TINY, "text_augment": "sentence_sample"})
    transform = maco.sample_transform()
    tokens = transform({"text": "Heart size normal. No effusion.", "seed": 3})["tokens"]
    decoded = maco.text_tower.tokenizer().backend.decode(
        tokens["input_ids"], skip_special_tokens=True
    )
    assert decoded.count(".") in (1, 2) and decoded == decoded.lower()
