"""Native export: one directory per encoder, ``model.safetensors`` + ``config.json``.

The image encoder directory doubles as a timm local-dir model: its ``config.json``
holds timm's keys (``architecture``, ``model_args``, ``pretrained_cfg``) beside a
``cxrkit`` section (the :class:`~cxrkit.models.tower_configs.VisionConfig` and the
preprocessing), so one copy of the weights serves cxrkit, timm and anyone with
safetensors. Loading never unpickles anything.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cxrkit.errors import ArtifactError, InputError
from cxrkit.models.checkpoint import (
    CONFIG_FILE,
    EXPORT_IMAGE_DIR,
    WEIGHTS_FILE,
    load_image_encoder,
    read_config,
    write_config,
    write_weights,
)

log = logging.getLogger(__name__)

ENCODER_FORMAT = "cxrkit-encoder/1"
WEIGHTS = WEIGHTS_FILE
CONFIG = CONFIG_FILE
IMAGE_DIR = EXPORT_IMAGE_DIR


def encoder_dir_name(encoder: str) -> str:
    """Directory of one encoder inside an export: ``image`` -> ``image_encoder``."""
    return f"{encoder}_encoder"


def plain_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """A module's state dict as contiguous CPU tensors with no shared storage (safetensors needs it)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def vit_model_args(encoder: nn.Module) -> dict[str, Any]:
    """timm ``create_model`` keyword arguments that rebuild this timm ViT's shape.

    Read from the live module rather than from VisionConfig, so whatever overrides
    the config applied (depth, img_size, ...) are captured. Raises InputError when
    the encoder is not a timm VisionTransformer.
    """
    blocks = getattr(encoder, "blocks", None)
    patch_embed = getattr(encoder, "patch_embed", None)
    if blocks is None or patch_embed is None or not hasattr(blocks[0], "attn"):
        raise InputError(
            f"image encoder {type(encoder).__name__} is not a timm VisionTransformer; "
            "cxrkit export only knows timm ViT image encoders"
        )
    height, width = patch_embed.img_size
    patch_h, patch_w = patch_embed.patch_size
    attn = blocks[0].attn
    return {
        "img_size": height if height == width else [height, width],
        "patch_size": patch_h if patch_h == patch_w else [patch_h, patch_w],
        "in_chans": patch_embed.proj.in_channels,
        "num_classes": 0,
        "embed_dim": encoder.embed_dim,
        "depth": len(blocks),
        "num_heads": attn.num_heads,
        "mlp_ratio": blocks[0].mlp.fc1.out_features / encoder.embed_dim,
        "qkv_bias": attn.qkv.bias is not None,
        "global_pool": encoder.global_pool,
        "class_token": encoder.cls_token is not None,
        "reg_tokens": encoder.num_reg_tokens,
        "no_embed_class": encoder.no_embed_class,
    }


TIMM_TRANSFORM_NOTE = (
    "cxrkit letterboxes: long side resized to the input size, centre-padded with black "
    "(0 before normalisation), after a 0.5-99.5 percentile window at ingest. "
    "timm's create_transform with crop_mode='border' also letterboxes but pads with the "
    "mean grey and skips the window; use preprocess.py shipped with this export for "
    "cxrkit's exact transform."
)


def timm_config(arch: str, model_args: dict, preprocessing: dict) -> dict[str, Any]:
    """The timm part of ``config.json``: what ``timm.create_model('local-dir:DIR')`` reads.

    ``pretrained_cfg`` declares 1 input channel and no classifier, so timm loads the
    1-channel patch embedding unchanged and keeps a strict state-dict load. Its
    ``crop_mode="border"`` with ``crop_pct=1.0`` is timm's closest transform to
    cxrkit's letterbox (never a centre crop); ``notes`` say how it still differs.
    """
    size = model_args["img_size"]
    height, width = (size, size) if isinstance(size, int) else size
    channels = model_args["in_chans"]
    return {
        "architecture": arch,
        "num_classes": 0,
        "num_features": model_args["embed_dim"],
        "global_pool": model_args["global_pool"],
        "model_args": model_args,
        "pretrained_cfg": {
            "tag": "cxrkit",
            "custom_load": False,
            "input_size": [channels, height, width],
            "fixed_input_size": True,
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "crop_mode": "border",
            "description": "cxrkit chest X-ray image encoder (1 channel, bright bone)",
            "notes": [TIMM_TRANSFORM_NOTE],
            "mean": [preprocessing["mean"]] * channels,
            "std": [preprocessing["std"]] * channels,
            "num_classes": 0,
            "first_conv": "patch_embed.proj",
            "classifier": "head",
        },
    }


def save_image_encoder(
    out_dir: Path,
    encoder: nn.Module,
    arch: str,
    vision_config: dict,
    preprocessing: dict,
    source: dict,
    transform: dict | None = None,
) -> Path:
    """Write ``out_dir/model.safetensors`` and a cxrkit + timm ``config.json``.

    Takes the timm ViT, its timm architecture name, the VisionConfig as a dict, the
    checkpoint's preprocessing dict, a ``source`` dict (checkpoint id, objective) and
    the exact input ``transform`` (keyword arguments of
    :func:`cxrkit.export.preprocess.preprocess`, stored as ``cxrkit.transform``).
    Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_weights(out_dir / WEIGHTS, plain_state_dict(encoder), metadata={"format": "pt"})
    config = timm_config(arch, vit_model_args(encoder), preprocessing)
    # "model" is what cxrkit.models.checkpoint.load_image_encoder reads in an export dir.
    config["model"] = vision_config
    config["cxrkit"] = {
        "format": ENCODER_FORMAT,
        "encoder": "image",
        "vision_config": vision_config,
        "preprocessing": preprocessing,
        "source": source,
    }
    if transform is not None:
        config["cxrkit"]["transform"] = transform
    write_config(out_dir, config)
    return out_dir


def save_encoder(
    out_dir: Path, name: str, module: nn.Module, checkpoint_config: dict
) -> dict[str, torch.Tensor]:
    """Write a non-image encoder (text, physiology): ``model.safetensors`` + ``config.json``.

    The config records the objective and its resolved config, which is what rebuilds
    the tower. Returns the state dict written (for the caller's re-read check).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = plain_state_dict(module)
    write_weights(out_dir / WEIGHTS, state, metadata={"format": "pt"})
    config = {
        "cxrkit": {
            "format": ENCODER_FORMAT,
            "encoder": name,
            "module": type(module).__qualname__,
            "objective": checkpoint_config.get("objective"),
            "objective_config": checkpoint_config.get("objective_config"),
        }
    }
    write_config(out_dir, config)
    return state


def read_encoder_config(encoder_dir: Path) -> dict[str, Any]:
    """Read and check an exported encoder's ``config.json``. Raises ArtifactError."""
    path = Path(encoder_dir) / CONFIG
    config = read_config(encoder_dir)
    fmt = config.get("cxrkit", {}).get("format", "")
    if fmt.partition("/")[0] != "cxrkit-encoder" or fmt != ENCODER_FORMAT:
        raise ArtifactError(
            f"{path}: unknown encoder format {fmt!r} (this cxrkit reads "
            f"{ENCODER_FORMAT}); use a matching cxrkit version"
        )
    return config


def _resolve_encoder_dir(path: Path, encoder: str, verify: bool) -> Path:
    """Accept an export artifact dir or an encoder dir inside one; verify hashes when asked."""
    from cxrkit.artifacts import MANIFEST, open_artifact

    if (path / MANIFEST).is_file():
        open_artifact(path, kind="export", verify_files=verify)
        return path / encoder_dir_name(encoder)
    if (path.parent / MANIFEST).is_file() and verify:
        open_artifact(path.parent, kind="export", verify_files=True)
    elif verify:
        raise ArtifactError(
            f"{path}: no {MANIFEST} beside or above this encoder to verify it against (copied "
            "out of its export, or the manifest was deleted); load the export directory, or "
            "pass verify=False"
        )
    return path


def load_exported_encoder(
    path: str | Path, encoder: str = "image", verify: bool = True
) -> tuple[nn.Module, Any]:
    """Load an exported image encoder back into cxrkit, in eval mode.

    Takes an export artifact directory (or its ``image_encoder/`` directory). With
    ``verify`` the artifact's file hashes are checked first, so a tampered export is
    refused. Returns ``(encoder, VisionConfig)`` like
    :func:`cxrkit.models.checkpoint.load_image_encoder`. Raises ArtifactError for a
    missing, tampered or foreign export, InputError for an unknown encoder name.
    """
    if encoder != "image":
        raise InputError(
            f"no loader for exported {encoder!r} encoders in this cxrkit; "
            "only the image encoder is exported so far"
        )
    encoder_dir = _resolve_encoder_dir(Path(path), encoder, verify)
    read_encoder_config(encoder_dir)  # refuses a foreign or newer encoder format
    return load_image_encoder(encoder_dir)


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute elementwise difference; inf when the shapes differ."""
    a, b = torch.as_tensor(a).detach().float(), torch.as_tensor(b).detach().float()
    if a.shape != b.shape:
        return float("inf")
    return float((a - b).abs().max()) if a.numel() else 0.0


def probe_images(image_size: int, batch: int = 3, seed: int = 0, in_chans: int = 1) -> torch.Tensor:
    """Deterministic images in [0, 1], (B, C, S, S), used to compare a loaded export to cxrkit.

    A smooth gradient plus noise, so the check sees structure and not only noise.
    """
    generator = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, image_size)
    base = (ramp[None, :] + ramp[:, None]) / 2  # (S, S)
    noise = torch.rand(batch, in_chans, image_size, image_size, generator=generator)
    return (0.7 * base + 0.3 * noise).clamp(0, 1)  # (B, C, S, S)


def normalise(images01: torch.Tensor, preprocessing: dict) -> torch.Tensor:
    """[0, 1] images to the model's input range: (x - mean) / std from the checkpoint config."""
    return (images01 - float(preprocessing["mean"])) / float(preprocessing["std"])
