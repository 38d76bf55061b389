"""Physiology teachers: a 1-D convolutional ECG encoder and the lab denoising autoencoder.

The paper's ECG teacher is ECGFounder (1024-d), which cxrkit cannot download;
cxrkit trains its own small ECG encoder instead (:class:`ECGEncoder`, a
masked-autoencoding 1-D CNN) or loads one from a local teachers artifact. The
lab teacher follows the released code (``Models/labs_dae.py``): a mask-aware
denoising autoencoder over (values, flags) -> 512 -> latent, trained to
reconstruct the observed values after dropping 15 % of them.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from cxrkit.config import doc

LEADS = 12


@dataclasses.dataclass
class TeacherConfig:
    """Sizes and training of the two teachers (the [teachers] table of distill)."""

    ecg_dim: int = doc("ECG embedding size [paper: 1024 from ECGFounder; cxrkit's own here]", 256)
    ecg_width: int = doc("channels of the ECG encoder's convolutions", 64)
    lab_dim: int = doc("lab embedding size [code: 256]", 256)
    lab_hidden: int = doc("lab autoencoder hidden width [code: 512]", 512)
    corruption: float = doc(
        "fraction of observed lab values dropped in training [code: 0.15]", 0.15
    )
    epochs: int = doc("training epochs of each teacher", 20)
    batch_size: int = doc("training batch size", 64)
    lr: float = doc("AdamW learning rate [code: 3e-4 for the lab DAE]", 3e-4)
    weight_decay: float = doc("AdamW weight decay [code: 1e-2 for the lab DAE]", 1e-2)
    seed: int = doc("seed of init, corruption and order", 0)


class ECGEncoder(nn.Module):
    """(B, 12, T) ECG + (B, 12) lead mask -> (B, dim) embedding, with a reconstruction decoder.

    Input: the 12 leads (missing ones zero) plus a channel holding the fraction of
    present leads. Five blocks of Conv1d(k=7, stride 2) -> BatchNorm -> GELU, global
    average pooling over time and a Linear to ``dim``.
    Training (``reconstruction_loss``): random 25 % of 0.5 s segments are zeroed
    and the decoder predicts the signal at 1/8 resolution; masked MSE on present
    leads and real samples.
    """

    def __init__(self, dim: int, width: int = 64) -> None:
        super().__init__()
        chans = [LEADS + 1, width, width, 2 * width, 2 * width, 4 * width]
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv1d(a, b, 7, stride=2, padding=3), nn.BatchNorm1d(b), nn.GELU()]
        self.features = nn.Sequential(*layers)
        self.project = nn.Linear(chans[-1], dim)
        self.decode = nn.Linear(dim, LEADS * 32)
        self.dim = dim

    def forward(self, ecg: torch.Tensor, lead_mask: torch.Tensor) -> torch.Tensor:
        """The embedding (B, dim)."""
        lead_mask = lead_mask.to(ecg.dtype)
        present = lead_mask.mean(1)[:, None, None].expand(-1, 1, ecg.shape[-1])
        x = torch.cat([ecg * lead_mask[:, :, None], present], dim=1)
        return self.project(self.features(x).mean(dim=-1))

    def reconstruction_loss(
        self, ecg: torch.Tensor, lead_mask: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Masked-segment reconstruction of the signal's 32-point summary per lead."""
        batch, _, length = ecg.shape
        segments = 20
        hide = torch.rand(batch, 1, segments, generator=generator) < 0.25
        keep = (~hide).repeat_interleave(length // segments, dim=-1).to(ecg.dtype)
        keep = F.pad(keep, (0, length - keep.shape[-1]), value=1.0)
        z = self(ecg * keep, lead_mask)
        pred = self.decode(z).view(batch, LEADS, 32)
        target = F.adaptive_avg_pool1d(ecg, 32)
        weight = lead_mask.to(ecg.dtype)[:, :, None].expand_as(target)
        return ((pred - target) ** 2 * weight).sum() / weight.sum().clamp_min(1.0)


class LabDAE(nn.Module):
    """Mask-aware denoising autoencoder [code: Models/labs_dae.py].

    Encoder: Linear(2n -> hidden) -> LayerNorm -> GELU -> Linear(hidden -> dim) on
    [values, flags]; decoder: Linear(dim -> hidden) -> GELU -> Linear(hidden -> n) -> Sigmoid.
    """

    def __init__(self, tests: int, dim: int = 256, hidden: int = 512) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(2 * tests, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, tests), nn.Sigmoid()
        )
        self.dim = dim

    def forward(self, values: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
        """The embedding (B, dim) of [values * flags, flags]."""
        return self.encoder(torch.cat([values * flags, flags], dim=1))

    def denoising_loss(
        self,
        values: torch.Tensor,
        flags: torch.Tensor,
        corruption: float,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Drop a fraction of observed values (value and flag to 0); MSE on observed ones [code]."""
        values = values * flags
        drop = (torch.rand(values.shape, generator=generator) < corruption) & (flags > 0.5)
        kept = (~drop).to(values.dtype)
        recon = self.decoder(self(values * kept, flags * kept))
        return (((recon - values) ** 2) * flags).sum() / (flags.sum() + 1e-6)
