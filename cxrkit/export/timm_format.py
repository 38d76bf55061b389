"""timm export: the image encoder directory loads with plain ``timm.create_model``.

Two ways work on the same files (``image_encoder/model.safetensors`` + ``config.json``):

1. ``timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=...),
   in_chans=1, num_classes=0, img_size=..., patch_size=..., ...)`` (the snippet in the
   model card lists every keyword this encoder needs);
2. ``timm.create_model("local-dir:PATH/image_encoder", pretrained=True)``.

What timm does with a 1-channel checkpoint: ``load_pretrained`` compares the
checkpoint's ``patch_embed.proj.weight`` with the model's; when the shapes already
match (1 channel both sides) it loads the weight unchanged and never calls
``adapt_input_conv``. It only warns when ``pretrained_cfg['input_size']`` still
declares 3 channels, which is why the overlay here sets ``input_size=(1, H, W)``.
``adapt_input_conv(1, w, base_chans=1)`` itself returns ``w`` unchanged; the check
below records both facts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cxrkit.export.native import CONFIG, WEIGHTS, max_abs_diff

log = logging.getLogger(__name__)


_OVERLAY_KEYS = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode")


def overlay(encoder_dir: Path) -> dict[str, Any]:
    """The ``pretrained_cfg_overlay`` that makes timm's model carry this export's data config.

    Without it the model keeps the architecture's defaults (RGB mean/std, bicubic, a 0.9
    centre crop): ``timm.data.create_transform`` then crops the film and its Normalize
    fails on a 1-channel image.
    """
    pretrained_cfg = json.loads((Path(encoder_dir) / CONFIG).read_text())["pretrained_cfg"]
    values = {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in pretrained_cfg.items()
        if k in _OVERLAY_KEYS
    }
    return {"file": str(Path(encoder_dir) / WEIGHTS), **values, "num_classes": 0}


def create_kwargs(encoder_dir: Path) -> tuple[str, dict[str, Any]]:
    """(arch, keyword arguments) for ``timm.create_model`` that load this export's weights."""
    config = json.loads((Path(encoder_dir) / CONFIG).read_text())
    return config["architecture"], {
        "pretrained": True,
        "pretrained_cfg_overlay": overlay(encoder_dir),
        **config["model_args"],
    }


def snippet(encoder_dir_name: str, encoder_dir: Path) -> str:
    """Python code a user runs to load the export with timm (for the model card)."""
    arch, kwargs = create_kwargs(encoder_dir)
    args = {k: v for k, v in kwargs.items() if k not in ("pretrained", "pretrained_cfg_overlay")}
    cfg = {k: v for k, v in kwargs["pretrained_cfg_overlay"].items() if k != "file"}
    lines = [
        "import timm",
        f"model = timm.create_model({arch!r}, pretrained=True,",
        f"    pretrained_cfg_overlay=dict(file='{encoder_dir_name}/{WEIGHTS}',",
        "        " + ", ".join(f"{k}={v!r}" for k, v in cfg.items()) + "),",
        "    " + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ").eval()",
        f"# or: timm.create_model('local-dir:{encoder_dir_name}', pretrained=True).eval()",
        "# timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))",
        "# letterboxes with mean-grey padding and no percentile window: preprocess.py is exact",
    ]
    return "\n".join(lines)


def load_with_timm(encoder_dir: Path, local_dir: bool = False) -> nn.Module:
    """Load the exported image encoder with timm alone, in eval mode.

    ``local_dir`` picks timm's ``local-dir:`` route (reads ``config.json``) instead of
    the ``pretrained_cfg_overlay`` route. Never reaches a hub: the weights come from
    the file named in the config.
    """
    import timm

    if local_dir:
        return timm.create_model(f"local-dir:{Path(encoder_dir).resolve()}", pretrained=True).eval()
    arch, kwargs = create_kwargs(encoder_dir)
    return timm.create_model(arch, **kwargs).eval()


def adapt_input_conv_is_noop(weight: torch.Tensor) -> bool:
    """True when timm's ``adapt_input_conv`` leaves a 1-channel patch weight unchanged."""
    from timm.models import adapt_input_conv

    channels = weight.shape[1]
    return bool(
        torch.equal(adapt_input_conv(channels, weight.clone(), base_chans=channels), weight)
    )


@torch.no_grad()
def verify(encoder_dir: Path, reference: nn.Module, images: torch.Tensor) -> dict[str, Any]:
    """Load with timm both ways and compare with the cxrkit encoder on normalised ``images``.

    Takes the export's image encoder dir, the cxrkit encoder and a (B, C, S, S) batch.
    Returns the stats recorded in the manifest: ``max_abs_diff`` (pooled features and
    tokens, worst of both routes), ``weights_identical``, ``adapt_input_conv_noop``.
    """
    reference = reference.eval()
    expected_pooled = reference(images)  # (B, D)
    expected_tokens = reference.forward_features(images)  # (B, P + L, D)
    diffs = {}
    identical = True
    ref_state = reference.state_dict()
    for route, local in (("overlay", False), ("local_dir", True)):
        model = load_with_timm(encoder_dir, local_dir=local)
        diffs[route] = max(
            max_abs_diff(model(images), expected_pooled),
            max_abs_diff(model.forward_features(images), expected_tokens),
        )
        state = model.state_dict()
        identical &= state.keys() == ref_state.keys() and all(
            torch.equal(state[k], ref_state[k]) for k in ref_state
        )
    weight = ref_state["patch_embed.proj.weight"]
    return {
        "max_abs_diff": max(diffs.values()),
        "max_abs_diff_by_route": diffs,
        "weights_identical": bool(identical),
        "in_chans": int(weight.shape[1]),
        "adapt_input_conv_noop": adapt_input_conv_is_noop(weight),
    }
