"""PaCX objective: loss terms against hand computation on tiny tensors; LoRA merge."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cxrkit.objectives.base import build_objective, objective_class
from cxrkit.objectives.pacx import contrastive_term, physio_losses, regression_term

S2 = 1 / math.sqrt(2)


def ce(logits: list[float], target: int, eps: float) -> float:
    """Label-smoothed cross entropy written out: (1-eps)*(-log p_t) + eps*mean_j(-log p_j)."""
    log_z = math.log(sum(math.exp(v) for v in logits))
    nll = [log_z - v for v in logits]
    return (1 - eps) * nll[target] + eps * sum(nll) / len(nll)


# a = [[1,0],[0,1]], b = [[1,0],[1,1]]: cos(a_i, b_j) = [[1, 1/sqrt2], [0, 1/sqrt2]]
A = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
B = torch.tensor([[1.0, 0.0], [1.0, 1.0]])


def test_contrastive_term_is_the_mean_of_both_directions_with_label_smoothing():
    scale, eps = 2.0, 0.02
    forward = (ce([2.0, 2 * S2], 0, eps) + ce([0.0, 2 * S2], 1, eps)) / 2
    backward = (ce([2.0, 0.0], 0, eps) + ce([2 * S2, 2 * S2], 1, eps)) / 2
    got = contrastive_term(A, B, torch.tensor(scale), eps)
    assert got.item() == pytest.approx(0.5 * (forward + backward), rel=1e-6)


def test_regression_term_is_one_minus_mean_cosine():
    got = regression_term(A, B)  # cos(a_0, b_0) = 1, cos(a_1, b_1) = 1/sqrt2
    assert got.item() == pytest.approx(1 - (1 + S2) / 2, rel=1e-6)


IDENTITY = nn.ModuleDict(
    {k: nn.Identity() for k in ("cxr", "ecg", "lab", "cxr_to_ecg", "cxr_to_lab")}
)


def test_a_missing_modality_is_masked_out_of_its_terms_not_zero_filled():
    # row 1 has no ECG: the ECG terms are those of rows 0 and 2 alone
    h = torch.tensor([[1.0, 0.0], [5.0, 5.0], [0.0, 1.0]])
    ecg = torch.tensor([[1.0, 0.0], [9.0, -9.0], [1.0, 1.0]])
    batch = {
        "h": h,
        "ecg_emb": ecg,
        "has_ecg": torch.tensor([True, False, True]),
        "lab_emb": torch.zeros(3, 2),
        "has_lab": torch.tensor([False, False, False]),
    }
    parts = physio_losses(IDENTITY, batch, torch.tensor(2.0), 0.0)
    assert set(parts) == {"clip_ecg", "reg_ecg"}  # no lab term at all
    forward = (ce([2.0, 2 * S2], 0, 0.0) + ce([0.0, 2 * S2], 1, 0.0)) / 2
    backward = (ce([2.0, 0.0], 0, 0.0) + ce([2 * S2, 2 * S2], 1, 0.0)) / 2
    assert parts["clip_ecg"].item() == pytest.approx(0.5 * (forward + backward), rel=1e-6)
    assert parts["reg_ecg"].item() == pytest.approx(1 - (1 + S2) / 2, rel=1e-6)


def test_one_pair_gives_a_regression_term_but_no_contrastive_term():
    batch = {
        "h": A,
        "ecg_emb": B,
        "has_ecg": torch.tensor([True, False]),
        "lab_emb": B,
        "has_lab": torch.tensor([False, False]),
    }
    parts = physio_losses(IDENTITY, batch, torch.tensor(2.0), 0.0)
    assert set(parts) == {"reg_ecg"} and parts["reg_ecg"].item() == pytest.approx(0.0, abs=1e-6)


class _Features(nn.Module):
    """Stands in for the encoder: the image's two pixels are its feature."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)


def _objective_with_identity_heads(**settings):
    config = {
        **objective_class("pacx").tiny_config(),
        "tuning": "full",
        "mae_weight": 0.0,
        "ecg_dim": 2,
        "lab_dim": 2,
        **settings,
    }
    objective = build_objective("pacx", config)
    objective.heads = IDENTITY
    objective.mae.encoder = _Features()
    return objective


def test_total_loss_halves_each_modality_and_weights_the_regression_by_0_1():
    objective = _objective_with_identity_heads(temperature=0.5)  # tau = 2
    batch = {
        "image": A.view(2, 1, 1, 2),
        "ecg_emb": B,
        "lab_emb": torch.tensor([[0.0, 1.0], [1.0, 0.0]]),
        "has_ecg": torch.tensor([True, True]),
        "has_lab": torch.tensor([True, True]),
    }
    eps = 0.02
    clip_ecg = 0.5 * (
        (ce([2.0, 2 * S2], 0, eps) + ce([0.0, 2 * S2], 1, eps)) / 2
        + (ce([2.0, 0.0], 0, eps) + ce([2 * S2, 2 * S2], 1, eps)) / 2
    )
    # labs: cos(h_i, lab_j) = [[0, 1], [1, 0]]: the pairs are the anti-diagonal's opposite
    clip_lab = 0.5 * (
        (ce([0.0, 2.0], 0, eps) + ce([2.0, 0.0], 1, eps)) / 2
        + (ce([0.0, 2.0], 0, eps) + ce([2.0, 0.0], 1, eps)) / 2
    )
    reg_ecg, reg_lab = 1 - (1 + S2) / 2, 1 - 0.0
    expected = 0.5 * (clip_ecg + clip_lab) + 0.1 * 0.5 * (reg_ecg + reg_lab)
    losses = objective.loss(batch, 0)
    assert losses["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert losses["clip_lab"].item() == pytest.approx(clip_lab, rel=1e-5)


def test_without_labs_the_total_is_the_ecg_terms_alone():
    objective = _objective_with_identity_heads(temperature=0.5)
    batch = {
        "image": A.view(2, 1, 1, 2),
        "ecg_emb": B,
        "lab_emb": torch.zeros(2, 2),
        "has_ecg": torch.tensor([True, True]),
        "has_lab": torch.tensor([False, False]),
    }
    losses = objective.loss(batch, 0)
    assert losses["loss"].item() == pytest.approx(
        losses["clip_ecg"].item() + 0.1 * losses["reg_ecg"].item(), rel=1e-6
    )
    assert "clip_lab" not in losses


def test_temperature_starts_at_1_over_0_07_and_is_clamped_to_100():
    objective = build_objective("pacx", objective_class("pacx").tiny_config())
    assert objective.logit_scale().item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        objective.log_scale.fill_(10.0)
    assert objective.logit_scale().item() == 100.0


def test_lora_trains_adapters_and_norms_only_and_merges_to_the_same_features():
    torch.manual_seed(0)
    objective = build_objective("pacx", objective_class("pacx").tiny_config())
    encoder = objective.mae.encoder
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "norm" in n for n in trainable)
    assert any(".qkv.lora_A" in n for n in trainable) and any(".fc2.lora_B" in n for n in trainable)
    assert not any(n.endswith("base_layer.weight") for n in trainable)
    with torch.no_grad():  # LoRA B starts at zero: make the adapters do something
        for name, param in encoder.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    objective.eval()
    images = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        adapted = encoder(images)
        merged_encoder = objective.image_encoder()
        merged = merged_encoder(images)
    assert torch.allclose(adapted, merged, atol=1e-5)
    names = set(merged_encoder.state_dict())
    assert not any("lora" in n or "base_layer" in n for n in names)
    plain = objective_class("mae")(objective.cfg.mae_config()).encoder
    assert names == set(plain.state_dict())
    plain.load_state_dict(merged_encoder.state_dict())
    with torch.no_grad():
        assert torch.allclose(plain.eval()(images), adapted, atol=1e-5)
    # and the adapters mattered: the base weights alone give other features
    with torch.no_grad():
        for name, param in encoder.named_parameters():
            if "lora_B" in name:
                param.zero_()
        assert not torch.allclose(encoder(images), adapted, atol=1e-3)
