"""PaCX-MAE stage 2: distil frozen ECG and lab-panel teachers into an MAE image encoder.

Matches the released code (Lyce24/PACX-MAE, ``Modules/pacx_lit.py``):

- the student is an MAE encoder (from ``cxrkit pretrain``), adapted with LoRA
  (``peft``; r 8, alpha 16, dropout 0.1 on ``qkv``, ``fc1``, ``fc2``, norms
  trainable) or fully fine-tuned; its pooled feature ``h`` is what eval and
  export use, with no physiology input;
- projection heads Dropout(0.2) -> Linear -> LayerNorm map ``h`` and each
  teacher embedding to a 256-d shared space; regression heads of the same form
  map ``h`` to each teacher's own embedding size;
- contrastive terms: CE(tau * cos) with label smoothing 0.02 in both
  directions, tau = exp(s), s initialised to log(1/0.07), tau clamped to
  [1, 100]; ``L_clip = mean over present modalities of 1/2 [CE(cxr->m) + CE(m->cxr)]``
  (= 1/2 [1/2 (cxr<->ecg) + 1/2 (cxr<->lab)] when both are present);
- ``L_reg = mean over present modalities of mean_i (1 - cos(pred_i, teacher_i))``;
- ``L = clip_weight * L_clip + regression_weight * L_reg`` (1.0 and 0.1).

Teacher embeddings are precomputed (an ``embeddings`` artifact) and looked up by
``image_id`` through the ``pairs`` artifact. A modality an image has no partner
for is MASKED OUT of its terms: that row is neither an anchor nor a negative
of that modality's contrastive term and has no regression term; a modality
absent from the whole (gathered) batch drops out of the means. Negatives are
gathered from every process (``cxrkit.train.distributed.gather_with_grad``):
every process computes the loss of the whole global batch.

cxrkit addition: ``mae_weight`` (default 1.0) adds the student's own MAE loss on
every image, so images without any partner still train. The released stage-2
code has no such term; ``mae_weight = 0`` matches it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from cxrkit.config import doc, to_dict
from cxrkit.errors import ArtifactError, ConfigError, InputError
from cxrkit.models.decoders import check_decoder_width
from cxrkit.models.tower_configs import VisionConfig
from cxrkit.objectives.base import Objective, register
from cxrkit.objectives.capabilities import RECONSTRUCTION
from cxrkit.objectives.mae import MAE, MAEConfig

NORMALIZE_EPS = 1e-6  # released code: F.normalize(..., eps=1e-6)
MODALITIES = ("ecg", "lab")


@dataclass
class PacxConfig:
    """Settings of the PaCX distillation objective (``[model]`` + ``[objective]``)."""

    model: VisionConfig = dataclasses.field(
        default_factory=VisionConfig, metadata={"help": "the student's image encoder"}
    )
    student: str | None = doc(
        "MAE checkpoint (from `cxrkit pretrain`) whose weights start the student; read once "
        "when the objective is built, so a run checkpoint's config records none; "
        "none = random init (tests only)",
        None,
    )
    pairs: str | None = doc("pairs artifact (image -> ECG id, lab id)", None)
    embeddings: str | None = doc("teacher embeddings artifact (ECG and lab vectors)", None)
    ecg_dim: int = doc("ECG teacher embedding size (set from the embeddings artifact)", 64)
    lab_dim: int = doc("lab teacher embedding size (set from the embeddings artifact)", 32)
    tuning: Literal["lora", "full"] = doc("lora: LoRA adapters + norms; full: every weight", "lora")
    lora_r: int = doc("LoRA rank [code: 8]", 8)
    lora_alpha: float = doc("LoRA alpha [code: 16]", 16.0)
    lora_dropout: float = doc("LoRA dropout [code: 0.1]", 0.1)
    lora_targets: list[str] = doc(
        "modules given adapters [code: qkv, fc1, fc2]", ["qkv", "fc1", "fc2"]
    )
    trainable_norms: Literal["all", "final", "none"] = doc(
        "LoRA: which LayerNorms of the encoder train (all; the final one only, as the "
        "released code's name filter does; none)",
        "all",
    )
    shared_dim: int = doc("shared contrastive space [code: 256]", 256)
    head_dropout: float = doc("dropout at the head inputs [code: 0.2]", 0.2)
    temperature: float = doc("initial temperature; tau = exp(s), s0 = log(1/T) [code: 0.07]", 0.07)
    label_smoothing: float = doc("contrastive CE label smoothing [code: 0.02]", 0.02)
    clip_weight: float = doc("weight of L_clip [code: 1.0]", 1.0)
    regression_weight: float = doc("weight of L_reg [code: 0.1]", 0.1)
    mae_weight: float = doc(
        "weight of the student's MAE loss on every image (cxrkit; 0 = the released code)", 1.0
    )
    mask_ratio: float | None = doc(
        "MAE term: fraction of hidden patches; none = the student's (distill) or MAE's 0.75", None
    )
    norm_pix_loss: bool | None = doc(
        "MAE term: per-patch normalised targets; none = the student's (distill) or MAE's", None
    )
    decoder_dim: int = doc("the student's MAE decoder width (from its checkpoint)", 512)
    decoder_depth: int = doc("the student's MAE decoder depth (from its checkpoint)", 8)
    decoder_heads: int = doc("the student's MAE decoder heads (from its checkpoint)", 16)

    def validate(self) -> None:
        """Raise ConfigError on impossible settings."""
        if self.lora_r < 1 or self.shared_dim < 1 or self.ecg_dim < 1 or self.lab_dim < 1:
            raise ConfigError("objective.lora_r, shared_dim, ecg_dim and lab_dim must be >= 1")
        if not 0 < self.temperature <= 1:
            raise ConfigError(f"objective.temperature must be in (0, 1], got {self.temperature}")
        if min(self.clip_weight, self.regression_weight, self.mae_weight) < 0:
            raise ConfigError("objective weights must be >= 0")
        check_decoder_width(self.decoder_dim, self.decoder_heads)

    def mae_config(self) -> MAEConfig:
        """The student's MAE settings."""
        defaults = MAEConfig()
        return MAEConfig(
            model=self.model,
            mask_ratio=defaults.mask_ratio if self.mask_ratio is None else self.mask_ratio,
            norm_pix_loss=(
                defaults.norm_pix_loss if self.norm_pix_loss is None else self.norm_pix_loss
            ),
            decoder_dim=self.decoder_dim,
            decoder_depth=self.decoder_depth,
            decoder_heads=self.decoder_heads,
        )


class ProjectionHead(nn.Sequential):
    """Dropout -> Linear -> LayerNorm; Linear init trunc_normal(0.02), zero bias [code]."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float) -> None:
        super().__init__(nn.Dropout(dropout), nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim))
        nn.init.trunc_normal_(self[1].weight, std=0.02)
        nn.init.zeros_(self[1].bias)


def contrastive_term(
    image: torch.Tensor, other: torch.Tensor, scale: torch.Tensor, smoothing: float
) -> torch.Tensor:
    """1/2 [CE(s * cos(image_i, other_j), i) + CE(s * cos(other_i, image_j), i)] over n rows.

    Takes image and other (n, D) row-aligned (row i of both is one pair) and the
    plain multiplier ``scale``. Returns a scalar.
    """
    a = F.normalize(image, dim=-1, eps=NORMALIZE_EPS)
    b = F.normalize(other, dim=-1, eps=NORMALIZE_EPS)
    logits = scale * a @ b.t()
    target = torch.arange(a.shape[0], device=a.device)
    forward = F.cross_entropy(logits, target, label_smoothing=smoothing)
    backward = F.cross_entropy(logits.t(), target, label_smoothing=smoothing)
    return 0.5 * (forward + backward)


def regression_term(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean_i (1 - cos(pred_i, target_i)); the target is detached."""
    a = F.normalize(pred, dim=-1, eps=NORMALIZE_EPS)
    b = F.normalize(target.detach(), dim=-1, eps=NORMALIZE_EPS)
    return 1.0 - (a * b).sum(dim=-1).mean()


def merge_lora(module: nn.Module) -> nn.Module:
    """Fold every peft LoRA layer inside ``module`` into its base layer, in place.

    Returns ``module`` holding plain ``nn.Linear`` layers again (the same state_dict
    names as before the adapters were injected).
    """
    from peft.tuners.lora import LoraLayer

    for name, child in list(module.named_modules()):
        if isinstance(child, LoraLayer):
            child.merge()
            parent = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
            setattr(parent, name.rsplit(".", 1)[-1], child.get_base_layer())
    return module


@register("pacx")
class Pacx(Objective):
    """PaCX-MAE distillation over an MAE student (``self.mae``); see the module docstring."""

    Config = PacxConfig
    image_encoder_prefix = "mae.encoder."  # with LoRA the names carry peft's base_layer
    capabilities = frozenset({RECONSTRUCTION})
    needs = frozenset({"image", "image_id"})
    artifact_settings = {"student": "checkpoint", "pairs": "pairs", "embeddings": "embeddings"}

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        """MAE's tiny ViT and decoder, small heads, no files (every image unpaired)."""
        tiny = MAE.tiny_config()
        return {**tiny, "shared_dim": 16, "ecg_dim": 8, "lab_dim": 6}

    def __init__(self, config: PacxConfig | dict[str, Any]) -> None:
        super().__init__(config)
        cfg: PacxConfig = self.cfg
        self.mae = MAE(cfg.mae_config())
        if cfg.student and not _is_meta(self.mae):
            self._load_student(Path(cfg.student))
            # The student's weights now live in this module: a run checkpoint rebuilt from
            # its config (distill publishing OUT, eval or export of OUT.work/run) must not
            # need the student where it was (the run's manifest records it by id and path).
            self.cfg = dataclasses.replace(cfg, student=None)
            self.config = to_dict(self.cfg)
        dim = self.mae.encoder.embed_dim
        self.heads = nn.ModuleDict(
            {
                "cxr": ProjectionHead(dim, cfg.shared_dim, cfg.head_dropout),
                "ecg": ProjectionHead(cfg.ecg_dim, cfg.shared_dim, cfg.head_dropout),
                "lab": ProjectionHead(cfg.lab_dim, cfg.shared_dim, cfg.head_dropout),
                "cxr_to_ecg": ProjectionHead(dim, cfg.ecg_dim, cfg.head_dropout),
                "cxr_to_lab": ProjectionHead(dim, cfg.lab_dim, cfg.head_dropout),
            }
        )
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.temperature)))
        if cfg.tuning == "lora":
            self._add_lora()
        if cfg.mae_weight == 0:
            self.mae.decoder.requires_grad_(False)
        self._lookup: _TeacherTable | None = None

    # ------------------------------------------------------------ student
    def _load_student(self, path: Path) -> None:
        from cxrkit.models.checkpoint import WEIGHTS_FILE, read_checkpoint_config, read_weights

        config = read_checkpoint_config(path)
        if config.objective not in ("mae",):
            raise ArtifactError(
                f"{path}: the student must be an MAE checkpoint (objective mae), "
                f"got {config.objective!r}"
            )
        self.mae.load_trainable_state_dict(read_weights(path / WEIGHTS_FILE))

    def _add_lora(self) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        cfg: PacxConfig = self.cfg
        encoder = self.mae.encoder
        encoder.requires_grad_(False)
        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.lora_targets),
            bias="none",
        )
        inject_adapter_in_model(lora, encoder)
        for name, param in encoder.named_parameters():
            param.requires_grad = "lora_" in name
        for name, module in encoder.named_modules():
            if isinstance(module, nn.LayerNorm) and (
                cfg.trainable_norms == "all" or (cfg.trainable_norms == "final" and name == "norm")
            ):
                module.requires_grad_(True)

    def image_encoder(self) -> nn.Module:
        """The student encoder with any LoRA adapters merged (a plain timm ViT copy)."""
        encoder = self.mae.encoder
        if self.cfg.tuning == "lora":
            encoder = merge_lora(copy.deepcopy(encoder))
        return encoder

    def merged_student(self) -> MAE:
        """A copy of the student MAE (encoder + decoder) with LoRA merged: an image-only model."""
        student = MAE(self.cfg.mae_config())
        state = {f"encoder.{k}": v for k, v in self.image_encoder().state_dict().items()} | {
            f"decoder.{k}": v for k, v in self.mae.decoder.state_dict().items()
        }
        student.load_trainable_state_dict(state)
        return student

    def reconstruct(self, images, seed, contour=None):
        """The student's MAE reconstruction (the ``reconstruction`` capability)."""
        return self.mae.reconstruct(images, seed, contour)

    # ------------------------------------------------------------ teachers
    def _teachers(self, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        """Teacher embeddings and presence for the batch: from the batch or the lookup table."""
        if "ecg_emb" in batch:
            return {k: batch[k].to(device) for k in ("ecg_emb", "lab_emb", "has_ecg", "has_lab")}
        count = batch["image"].shape[0]
        if not self.cfg.pairs or not self.cfg.embeddings:
            zeros = torch.zeros(count, dtype=torch.bool, device=device)
            return {
                "ecg_emb": torch.zeros(count, self.cfg.ecg_dim, device=device),
                "lab_emb": torch.zeros(count, self.cfg.lab_dim, device=device),
                "has_ecg": zeros,
                "has_lab": zeros,
            }
        if self._lookup is None:
            self._lookup = _TeacherTable(Path(self.cfg.pairs), Path(self.cfg.embeddings))
            if self._lookup.dims != (self.cfg.ecg_dim, self.cfg.lab_dim):
                raise ConfigError(
                    f"objective.ecg_dim/lab_dim {self.cfg.ecg_dim}/{self.cfg.lab_dim} do not "
                    f"match the embeddings artifact {self._lookup.dims}"
                )
        return {k: v.to(device) for k, v in self._lookup.rows(batch["image_id"]).items()}

    # ------------------------------------------------------------ loss
    def logit_scale(self) -> torch.Tensor:
        """tau = exp(s) clamped to [1, 100] (the plain multiplier)."""
        return self.log_scale.exp().clamp(1.0, 100.0)

    def loss(self, batch: dict[str, Any], step: int = 0) -> dict[str, torch.Tensor]:
        """Named losses: ``loss`` and its parts (``clip_ecg``, ``clip_lab``, ``reg_ecg``,
        ``reg_lab`` when present in the batch, ``mae`` when weighted) and the pair counts.

        Raises InputError when the batch lacks image ids and there is no
        embedding in the batch.
        """
        from cxrkit.train.distributed import gather_with_grad

        images = batch["image"]
        if "ecg_emb" not in batch and "image_id" not in batch:
            raise InputError("the PaCX objective needs the batch field image_id")
        out: dict[str, torch.Tensor] = {}
        total = images.new_zeros(())
        if self.cfg.mae_weight > 0:
            mae = self.mae.loss({"image": images}, step)
            out["mae"] = mae["loss"]
            total = total + self.cfg.mae_weight * mae["loss"]
        teachers = self._teachers(batch, images.device)
        features = self.mae.encoder(images)  # (B, D) pooled, as eval sees it
        gathered = {
            "h": gather_with_grad(features),
            **{k: gather_with_grad(v.float()) for k, v in teachers.items()},
        }
        parts = physio_losses(self.heads, gathered, self.logit_scale(), self.cfg.label_smoothing)
        clip = [parts[f"clip_{m}"] for m in MODALITIES if f"clip_{m}" in parts]
        reg = [parts[f"reg_{m}"] for m in MODALITIES if f"reg_{m}" in parts]
        if clip:
            total = total + self.cfg.clip_weight * torch.stack(clip).mean()
        if reg:
            total = total + self.cfg.regression_weight * torch.stack(reg).mean()
        if not clip and not reg and self.cfg.mae_weight == 0:
            total = total + 0.0 * features.sum()  # nothing paired: keep the graph, no signal
        out.update(parts)
        out["loss"] = total
        out["pairs_ecg"] = gathered["has_ecg"].float().sum().detach()
        out["pairs_lab"] = gathered["has_lab"].float().sum().detach()
        out["logit_scale"] = self.logit_scale().detach()
        return out


def physio_losses(
    heads: nn.ModuleDict,
    batch: dict[str, torch.Tensor],
    scale: torch.Tensor,
    smoothing: float,
) -> dict[str, torch.Tensor]:
    """The contrastive and regression terms of the present modalities.

    Takes the heads, ``h`` (N, D) image features, ``ecg_emb``/``lab_emb`` teacher
    embeddings with boolean ``has_ecg``/``has_lab`` (N,), the multiplier and the
    smoothing. Rows without a modality are removed before its terms; a
    contrastive term needs >= 2 pairs, a regression term >= 1; absent terms are
    not in the result (never zero-filled).
    """
    out: dict[str, torch.Tensor] = {}
    h = batch["h"]
    for modality in MODALITIES:
        present = batch[f"has_{modality}"].bool()
        count = int(present.sum())
        if count == 0:
            continue
        rows = h[present]
        teacher = batch[f"{modality}_emb"][present].to(rows.dtype)
        if count >= 2:
            out[f"clip_{modality}"] = contrastive_term(
                heads["cxr"](rows), heads[modality](teacher), scale, smoothing
            )
        out[f"reg_{modality}"] = regression_term(heads[f"cxr_to_{modality}"](rows), teacher)
    return out


def _is_meta(module: nn.Module) -> bool:
    return any(p.is_meta for p in module.parameters())


class _TeacherTable:
    """image_id -> teacher embeddings, built from a pairs and an embeddings artifact."""

    def __init__(self, pairs_dir: Path, embeddings_dir: Path) -> None:
        from cxrkit.artifacts import open_artifact
        from cxrkit.io.physio_files import load_embeddings, load_pairs

        pairs = load_pairs(open_artifact(pairs_dir, kind="pairs").path)
        ecg, lab = load_embeddings(open_artifact(embeddings_dir, kind="embeddings").path)
        self.dims = (ecg.dim, lab.dim)
        self.index = {row["image_id"]: i for i, row in enumerate(pairs)}
        n = len(pairs)
        self.ecg = torch.zeros(n, ecg.dim)
        self.lab = torch.zeros(n, lab.dim)
        self.has_ecg = torch.zeros(n, dtype=torch.bool)
        self.has_lab = torch.zeros(n, dtype=torch.bool)
        for i, row in enumerate(pairs):
            if row["ecg_id"] is not None and row["ecg_id"] in ecg.index:
                self.ecg[i] = ecg.vectors[ecg.index[row["ecg_id"]]]
                self.has_ecg[i] = True
            if row["lab_id"] is not None and row["lab_id"] in lab.index:
                self.lab[i] = lab.vectors[lab.index[row["lab_id"]]]
                self.has_lab[i] = True

    def rows(self, image_ids: list[str]) -> dict[str, torch.Tensor]:
        """Embeddings and presence for these images (an unknown image has no partner)."""
        idx = torch.tensor([self.index.get(i, -1) for i in image_ids])
        known = idx >= 0
        safe = idx.clamp_min(0)
        return {
            "ecg_emb": self.ecg[safe],
            "lab_emb": self.lab[safe],
            "has_ecg": self.has_ecg[safe] & known,
            "has_lab": self.has_lab[safe] & known,
        }
