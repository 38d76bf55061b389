"""Initialise towers from weight files on disk (timm, MAE, open_clip), never from a hub.

:func:`load_pretrained_image_weights` maps an RGB checkpoint onto cxrkit's
1-channel timm ViT:

- the patch embedding's 3 input channels are summed into 1 with timm's
  ``adapt_input_conv`` (so a grey image x gives the features the RGB model
  gives for x repeated on 3 channels), and resampled with timm's
  ``resample_patch_embed`` when the patch size differs;
- the position table is kept when the grid matches and interpolated with
  timm's ``resample_abs_pos_embed`` when it does not. It replaces whatever the
  encoder held (e.g. the fixed sin-cos table of MAE objectives), and the log
  says so;
- every other tensor must fit exactly: a shape mismatch is an InputError naming
  the file and the keys. Missing and unexpected keys are logged (an error with
  ``strict=True``), never ignored in silence.

Files are read with safetensors or ``torch.load(weights_only=True)``: nothing is
unpickled beyond tensors and plain containers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from cxrkit.errors import ConfigError, InputError

log = logging.getLogger(__name__)

IMAGE_SOURCES = ("timm", "mae", "open_clip")
_WRAPPER_KEYS = ("model", "state_dict", "module")  # MAE: {"model": ...}; others: "state_dict"
_MAE_DECODER_PREFIXES = ("decoder_", "mask_token")


@dataclass
class LoadReport:
    """What :func:`load_pretrained_image_weights` did, key by key."""

    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # dropped on purpose (decoder, head)
    adapted: list[str] = field(default_factory=list)  # human-readable notes

    def summary(self) -> str:
        """One line for logs and the CLI."""
        return (
            f"{self.path}: loaded {len(self.loaded)} tensors, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.skipped)} skipped"
            + (f"; {'; '.join(self.adapted)}" if self.adapted else "")
        )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file, unwrapping ``{"model": ...}``.

    Takes: a file path. A torch file may hold the state dict itself or wrap it
    under ``model`` (facebookresearch/mae), ``state_dict`` or ``module``.
    Returns: a flat dict name -> tensor (``module.`` prefixes of DDP removed).
    Raises: InputError when the file is missing, unreadable, would need
    unpickling of arbitrary objects, or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data = load_file(str(path), device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors, pickle and zip errors have no common base
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: cannot read weights ({first})") from exc
    while isinstance(data, dict) and not any(isinstance(v, torch.Tensor) for v in data.values()):
        inner = next((data[k] for k in _WRAPPER_KEYS if isinstance(data.get(k), dict)), None)
        if inner is None:
            break
        data = inner
    if not isinstance(data, dict):
        raise InputError(f"{path}: holds a {type(data).__name__}, not a state dict")
    state = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise InputError(f"{path}: no tensors found (keys: {', '.join(list(data)[:5])})")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _to_timm_keys(
    state: dict[str, torch.Tensor], source: str, encoder: nn.Module, report: LoadReport
) -> dict[str, torch.Tensor]:
    """Rename a source's keys to timm VisionTransformer keys; drop decoders and heads."""
    if source == "open_clip":
        if any(k.startswith("visual.trunk.") for k in state):  # open_clip with a timm trunk
            state = {k[len("visual.trunk.") :]: v for k, v in state.items() if "trunk." in k}
        else:
            from timm.models.vision_transformer import _convert_openai_clip

            if not any(k.startswith("visual.") for k in state):
                raise InputError(
                    f"{report.path}: no 'visual.' keys; not an open_clip model state dict"
                )
            state = _convert_openai_clip(state, encoder, prefix="visual.")
    own = encoder.state_dict()
    out = {}
    for key, value in state.items():
        if source == "mae" and key.startswith(_MAE_DECODER_PREFIXES):
            report.skipped.append(key)  # MAE's pretraining decoder, not part of the encoder
        elif key.startswith("head.") and key not in own:
            report.skipped.append(key)  # classifier / CLIP projection; the encoder has none
        else:
            out[key] = value
    return out


def _fit_patch_embed(
    state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], report: LoadReport
) -> None:
    key = "patch_embed.proj.weight"
    if key not in state or key not in target or state[key].shape == target[key].shape:
        return
    from timm.layers import resample_patch_embed
    from timm.models._manipulate import adapt_input_conv

    weight = state[key]
    out_dim, in_chans, patch_h, patch_w = target[key].shape
    if weight.ndim != 4 or weight.shape[0] != out_dim:
        raise InputError(
            f"{report.path}: {key} has shape {tuple(weight.shape)}, the encoder "
            f"{tuple(target[key].shape)}; the token widths differ (wrong model.arch/embed_dim?)"
        )
    if weight.shape[1] != in_chans:
        report.adapted.append(f"patch embedding {weight.shape[1]} -> {in_chans} channels (summed)")
        weight = adapt_input_conv(in_chans, weight)
    if tuple(weight.shape[-2:]) != (patch_h, patch_w):
        report.adapted.append(
            f"patch embedding resampled {tuple(weight.shape[-2:])} -> {(patch_h, patch_w)}"
        )
        weight = resample_patch_embed(weight, [patch_h, patch_w])
    state[key] = weight.to(target[key].dtype)


def _fit_pos_embed(
    state: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    encoder: nn.Module,
    report: LoadReport,
) -> None:
    key = "pos_embed"
    if key not in state or key not in target:
        return
    if state[key].shape != target[key].shape:
        from timm.layers import resample_abs_pos_embed

        prefix = 0 if getattr(encoder, "no_embed_class", False) else encoder.num_prefix_tokens
        old_len = state[key].shape[1] - prefix
        old_side = int(round(old_len**0.5))
        if state[key].ndim != 3 or old_side * old_side != old_len:
            raise InputError(
                f"{report.path}: pos_embed of shape {tuple(state[key].shape)} is not a square "
                f"grid plus {prefix} prefix token(s); cannot fit it to {tuple(target[key].shape)}"
            )
        grid = list(encoder.patch_embed.grid_size)
        state[key] = resample_abs_pos_embed(
            state[key], new_size=grid, old_size=[old_side, old_side], num_prefix_tokens=prefix
        )
        report.adapted.append(
            f"pos_embed interpolated {old_side}x{old_side} -> {grid[0]}x{grid[1]}"
        )
    report.adapted.append("pos_embed taken from the file (replaces the encoder's table)")


def load_pretrained_image_weights(
    encoder: nn.Module, path: str | Path, source: str = "timm", strict: bool = False
) -> LoadReport:
    """Load an RGB timm / MAE / open_clip checkpoint into a (1-channel) timm ViT, in place.

    Takes: a timm ``VisionTransformer`` (from :func:`cxrkit.models.vision.build_vision_encoder`);
    a weights file (``.safetensors``, ``.pth``/``.pt``/``.bin`` read with
    ``weights_only=True``); ``source``: ``"timm"`` (timm key names),
    ``"mae"`` (facebookresearch/mae checkpoints, ``{"model": state}``; the
    decoder is dropped) or ``"open_clip"`` (an open_clip CLIP state dict; the
    ``visual.`` tower, converted to timm names -- build the encoder with a timm
    CLIP arch such as ``vit_base_patch16_clip_224`` so pre-norm and bias-free
    patch embedding match); ``strict``: missing or unexpected keys are an error.
    Returns: a :class:`LoadReport` (also logged).
    Raises: ConfigError for an unknown source; InputError for an unreadable
    file or tensors whose shapes do not fit (other than patch / position
    embeddings, which are adapted).
    """
    if source not in IMAGE_SOURCES:
        raise ConfigError(f"unknown weights source {source!r}; choose one of {IMAGE_SOURCES}")
    report = LoadReport(path=str(path))
    state = _to_timm_keys(read_state_dict(path), source, encoder, report)
    target = encoder.state_dict()
    _fit_patch_embed(state, target, report)
    _fit_pos_embed(state, target, encoder, report)
    bad = [
        f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}"
        for k, v in state.items()
        if k in target and v.shape != target[k].shape
    ]
    if bad:
        raise InputError(
            f"{path}: {len(bad)} tensor(s) do not fit the encoder ({'; '.join(bad[:3])}); "
            "the checkpoint is for another architecture (check model.arch/depth/embed_dim)"
        )
    report.missing = sorted(set(target) - set(state))
    report.unexpected = sorted(set(state) - set(target))
    if strict and (report.missing or report.unexpected):
        raise InputError(
            f"{path}: {len(report.missing)} missing key(s) ({', '.join(report.missing[:3])}) and "
            f"{len(report.unexpected)} unexpected ({', '.join(report.unexpected[:3])})"
        )
    fitting = {k: v for k, v in state.items() if k in target}
    encoder.load_state_dict(fitting, strict=False)
    report.loaded = sorted(fitting)
    log.info("%s", report.summary())
    if report.missing:
        log.warning("%s: keys left at their initial values: %s", path, ", ".join(report.missing))
    if report.unexpected:
        log.warning(
            "%s: keys in the file the encoder lacks: %s", path, ", ".join(report.unexpected)
        )
    return report
