"""open_clip export: image-text models as a local directory open_clip loads by itself.

Layout (what ``open_clip.create_model_and_transforms("local-dir:DIR")`` reads):
``DIR/open_clip_config.json`` = ``{"model_cfg": ..., "preprocess_cfg": ...}`` and
``DIR/open_clip_model.safetensors`` (the state dict in open_clip's key names).

Which objectives apply: those declaring the ``open_clip`` capability
(:mod:`cxrkit.objectives.capabilities`), which implies ``image_text``. Others
(MAE: image-only) are skipped with that reason. The objective gives
``to_open_clip() -> (model_cfg, state_dict)``: open_clip's model config and the
weights in open_clip's names; :func:`vit_to_open_clip_visual` does the image
tower (a timm ViT) exactly, the objective adds its text tower and
``logit_scale`` (open_clip stores the log). The export must reproduce
``encode_image(images)`` on normalised (B, 1, S, S) images,
``encode_text(tokenize(texts))`` (before L2 normalisation) and the plain
``logit_scale()``.

open_clip's vision towers take 3 channels. The 1-channel patch weight is spread
over 3 channels (each a third), so a grey image repeated to RGB, as open_clip's
transform makes it, gives exactly the 1-channel result.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from cxrkit.errors import InputError
from cxrkit.export.native import max_abs_diff
from cxrkit.objectives.base import Objective
from cxrkit.objectives.capabilities import FUSED_SCORING, IMAGE_TEXT, OPEN_CLIP, supports

log = logging.getLogger(__name__)

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
PROBE_TEXTS = [
    "no acute cardiopulmonary process",
    "small right pleural effusion",
    "enlarged cardiac silhouette",
    "left lower lobe consolidation",
]


def skip_reason(objective: Objective) -> str | None:
    """Why this objective cannot be written as open_clip, or None when it can."""
    name = objective.name
    if supports(objective, FUSED_SCORING):
        return (
            f"objective {name!r} fuses image and text (pairs scored jointly, no separate "
            "embeddings); open_clip holds dual encoders"
        )
    if not supports(objective, IMAGE_TEXT) or objective.text_encoder() is None:
        return (
            f"objective {name!r} is image-only (no text tower); open_clip holds image-text models"
        )
    if not supports(objective, OPEN_CLIP):
        return f"objective {name!r} has a text tower but does not declare the open_clip export"
    return None


def _check_plain_vit(encoder: nn.Module) -> None:
    """Refuse ViT variants open_clip's VisionTransformer cannot express (InputError)."""
    block = encoder.blocks[0]
    problems = []
    if encoder.cls_token is None or encoder.num_reg_tokens or encoder.no_embed_class:
        problems.append("needs exactly one class token with a position slot")
    if encoder.global_pool not in ("token", "avg"):
        problems.append(f"global_pool {encoder.global_pool!r} (token or avg only)")
    if not isinstance(encoder.norm_pre, nn.Identity | nn.LayerNorm):
        problems.append("a pre-norm (norm_pre) other than a LayerNorm (open_clip's ln_pre)")
    if not isinstance(block.ls1, nn.Identity) or not isinstance(block.attn.q_norm, nn.Identity):
        problems.append("layer scale or qk-norm")
    if not isinstance(block.mlp.act, nn.GELU) or block.mlp.act.approximate != "none":
        problems.append("an activation other than exact GELU")
    if problems:
        raise InputError(
            "image encoder cannot map to open_clip's VisionTransformer: " + "; ".join(problems)
        )


def vit_to_open_clip_visual(
    encoder: nn.Module, projection: torch.Tensor, pool: str | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Map a timm ViT plus its image projection onto open_clip's ``VisionTransformer``.

    Takes the encoder, ``projection`` (D, E) applied as ``pooled @ projection`` and
    ``pool``: None = the encoder's own global pool; ``"avg"`` = the mean of the
    normed patch tokens (``encoder.norm`` then mean, the class token left out),
    whatever the encoder's own pooling.
    Returns ``(vision_cfg, state_dict)`` with ``visual.``-prefixed keys. The patch
    bias (open_clip's conv has none) is folded into the patch positions; equal
    outputs are exact up to float rounding. Raises InputError for ViT variants that
    open_clip cannot express.
    """
    _check_plain_vit(encoder)
    sd = {k: v.detach().float() for k, v in encoder.state_dict().items()}
    width, depth = encoder.embed_dim, len(encoder.blocks)
    heads = encoder.blocks[0].attn.num_heads
    weight = sd["patch_embed.proj.weight"]  # (D, C, P, P)
    conv = weight.repeat(1, 3 // weight.shape[1], 1, 1) / (3 // weight.shape[1])
    positions = sd["pos_embed"][0].clone()  # (1 + L, D)
    if "patch_embed.proj.bias" in sd:
        positions[1:] += sd["patch_embed.proj.bias"]
    avg = encoder.global_pool == "avg"
    final_norm = "fc_norm" if avg else "norm"
    out = {
        "visual.conv1.weight": conv,
        "visual.class_embedding": sd["cls_token"][0, 0],
        "visual.positional_embedding": positions,
        "visual.proj": projection.detach().float(),
        "visual.ln_post.weight": sd[f"{final_norm}.weight"],
        "visual.ln_post.bias": sd[f"{final_norm}.bias"],
    }
    has_ln_pre = isinstance(encoder.norm_pre, nn.LayerNorm)  # CLIP ViTs: ln_pre
    if has_ln_pre:
        out["visual.ln_pre.weight"] = sd["norm_pre.weight"]
        out["visual.ln_pre.bias"] = sd["norm_pre.bias"]
    pairs = {
        "ln_1": "norm1",
        "ln_2": "norm2",
        "attn.out_proj": "attn.proj",
        "mlp.c_fc": "mlp.fc1",
        "mlp.c_proj": "mlp.fc2",
    }
    for i in range(depth):
        src, dst = f"blocks.{i}.", f"visual.transformer.resblocks.{i}."
        for theirs, ours in pairs.items():
            for part in ("weight", "bias"):
                out[f"{dst}{theirs}.{part}"] = sd[f"{src}{ours}.{part}"]
        out[f"{dst}attn.in_proj_weight"] = sd[f"{src}attn.qkv.weight"]
        out[f"{dst}attn.in_proj_bias"] = sd.get(f"{src}attn.qkv.bias", torch.zeros(3 * width))
    block = encoder.blocks[0]
    vision_cfg = {
        "image_size": list(encoder.patch_embed.img_size)[0],
        "patch_size": list(encoder.patch_embed.patch_size)[0],
        "width": width,
        "layers": depth,
        "head_width": width // heads,
        "mlp_ratio": block.mlp.fc1.out_features / width,
        "no_ln_pre": not has_ln_pre,
        "pool_type": "avg" if avg else "tok",
        "final_ln_after_pool": avg,
        "norm_kwargs": {"eps": float(block.norm1.eps)},
    }
    if pool == "avg" and not avg:  # normed tokens, then the mean over patches
        vision_cfg.update(pool_type="avg", final_ln_after_pool=False)
    return vision_cfg, {k: v.contiguous() for k, v in out.items()}


def fold_projection_bias(projection: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """δ (D,) with δ @ projection = bias: a projection bias moved into ``ln_post``'s bias.

    open_clip's ``visual.proj`` has no bias; with mean pooling after ``ln_post``,
    mean(LN(x) + δ) @ P = mean(LN(x)) @ P + bias. Takes projection (D, E) and bias
    (E,). Raises InputError when no exact δ exists (E > D or a rank-deficient P).
    """
    delta = torch.linalg.lstsq(projection.T.double(), bias.double()[:, None]).solution[:, 0]
    error = (delta @ projection.double() - bias.double()).abs().max().item()
    if error > 1e-6 * max(1.0, bias.abs().max().item()):
        raise InputError(
            f"the image projection's bias cannot be folded into open_clip's layout "
            f"(residual {error:.2g}; needs embed_dim <= the ViT width); train without "
            "an image projection bias to export to open_clip"
        )
    return delta.float()


HF_POOLERS = {  # cxrkit text pooling -> open_clip HFTextEncoder pooler
    "mean": "mean_pooler",
    "cls": "cls_last_hidden_state_pooler",
    "pooler": "cls_pooler",  # BERT's pooler output (dense + tanh on [CLS])
}
HF_TEXT_DIR = "open_clip"  # the export's open_clip folder, relative to the export root


def hf_text_to_open_clip(
    tower: nn.Module, projection: torch.Tensor, out_dir: Path | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Map a cxrkit Hugging Face text tower plus its projection onto open_clip's HFTextEncoder.

    Takes the tower (``cxrkit.models.text.HFTextTower``: ``.model``, ``.cfg``,
    ``.tokenizer()``), the projection weight (E, D) applied as ``pooled @ W.T``, and
    ``out_dir``: when given, the model's config.json and the tokenizer files are
    written there (open_clip reads them; ``hf_model_name`` names the folder
    relative to the export root, see :func:`load_open_clip`).
    Returns ``(text_cfg, state_dict)`` with ``text.``-prefixed keys.
    Raises InputError for a tower that is not a Hugging Face one.
    """
    model = getattr(tower, "model", None)
    if model is None or not hasattr(model, "config") or tower.cfg.kind not in ("hf", "bert"):
        raise InputError(
            "open_clip export needs a Hugging Face text tower (text.kind hf or bert); "
            f"this one is kind={getattr(tower.cfg, 'kind', '?')}"
        )
    state = {f"text.transformer.{k}": v.detach().float() for k, v in model.state_dict().items()}
    state["text.proj.weight"] = projection.detach().float()
    text_cfg = {
        "hf_model_name": HF_TEXT_DIR,
        "hf_tokenizer_name": HF_TEXT_DIR,
        "hf_model_pretrained": False,
        "hf_proj_type": "linear",
        "hf_pooler_type": HF_POOLERS[tower.cfg.pooling],
        "context_length": tower.cfg.context_length,
    }
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        model.config.save_pretrained(str(out_dir))
        tower.tokenizer().backend.save_pretrained(str(out_dir))
    return text_cfg, {k: v.contiguous() for k, v in state.items()}


def clip_text_to_open_clip(
    transformer: nn.Module, projection: torch.Tensor, context_length: int
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Map open_clip's own text transformer (no projection) plus a projection onto CLIP's names.

    Takes the ``TextTransformer`` of a cxrkit ``open_clip`` text tower (pooled at
    the end-of-text token), ``projection`` (W, E) applied as ``pooled @ projection``
    and the context length. Returns ``(text_cfg, state_dict)`` with CLIP's
    top-level text keys (``token_embedding.weight``, ``transformer.*``,
    ``ln_final.*``, ``text_projection``); open_clip pools at the highest token id,
    which is CLIP's end-of-text token.
    """
    sd = {k: v.detach().float() for k, v in transformer.state_dict().items() if k != "attn_mask"}
    block = transformer.transformer.resblocks[0]
    width = int(transformer.width)
    text_cfg = {
        "context_length": int(context_length),
        "vocab_size": int(transformer.vocab_size),
        "width": width,
        "heads": int(transformer.heads),
        "layers": len(transformer.transformer.resblocks),
        "mlp_ratio": block.mlp.c_fc.out_features / width,
    }
    kept = {
        k: v
        for k, v in sd.items()
        if k.startswith(("token_embedding.", "positional_embedding", "transformer.", "ln_final."))
    }
    return text_cfg, {**kept, "text_projection": projection.detach().float().contiguous()}


def preprocess_cfg(preprocessing: dict) -> dict[str, Any]:
    """open_clip's preprocess config for a cxrkit model: grey as RGB, resize long side, pad."""
    return {
        "size": int(preprocessing["image_size"]),
        "mode": "RGB",
        "mean": [float(preprocessing["mean"])] * 3,
        "std": [float(preprocessing["std"])] * 3,
        "interpolation": "bilinear",
        "resize_mode": "longest",
        "fill_color": 0,
    }


def write_open_clip(
    out_dir: Path, model_cfg: dict, state_dict: dict[str, torch.Tensor], preprocess: dict
) -> Path:
    """Write ``open_clip_config.json`` + ``open_clip_model.safetensors`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    save_file(tensors, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess}
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return out_dir


def load_open_clip(out_dir: Path) -> tuple[nn.Module, Any, Any]:
    """Load an exported directory with open_clip only: ``(model, preprocess, tokenizer)``.

    Uses ``create_model_and_transforms('local-dir:...')`` (strict load, safetensors,
    no hub) and ``get_tokenizer`` on the same directory. A Hugging Face text tower
    (``text_cfg.hf_model_name``) is pointed at ``out_dir``, where its config and
    tokenizer files lie.
    """
    import open_clip

    out_dir = Path(out_dir).resolve()
    name = f"local-dir:{out_dir}"
    overrides = {}
    text_cfg = json.loads((out_dir / CONFIG_FILE).read_text())["model_cfg"].get("text_cfg", {})
    if "hf_model_name" in text_cfg:  # a Hugging Face text tower whose files lie in out_dir
        overrides["text_cfg"] = {**text_cfg, "hf_model_name": str(out_dir)}
    model, _, preprocess = open_clip.create_model_and_transforms(name, **overrides)
    return model.eval(), preprocess, open_clip.get_tokenizer(name)


@torch.no_grad()
def verify(
    out_dir: Path, objective: nn.Module, images: torch.Tensor, texts: list[str] | None = None
) -> dict[str, Any]:
    """Load the export with open_clip and compare embeddings with the cxrkit objective.

    Takes the export dir, the objective, normalised (B, 1, S, S) images and probe
    texts. Returns ``max_abs_diff`` (worst of image, text, logit_scale), each part, and
    ``reference_scale`` (largest |embedding|, which float rounding grows with).
    """
    texts = texts or PROBE_TEXTS
    model, _, tokenizer = load_open_clip(out_dir)
    rgb = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images  # (B, 3, S, S)
    device = images.device
    tokens = {k: v.to(device) for k, v in objective.tokenize(texts).items()}
    ref_image, ref_text = objective.encode_image(images), objective.encode_text(tokens)
    diff_image = max_abs_diff(model.encode_image(rgb), ref_image)
    diff_text = max_abs_diff(model.encode_text(tokenizer(texts)), ref_text)
    diffs = {"max_abs_diff_image": diff_image, "max_abs_diff_text": diff_text}
    scale = max(float(ref_image.abs().max()), float(ref_text.abs().max()))
    diffs["max_abs_diff_logit_scale"] = abs(
        float(model.logit_scale.exp().item()) - float(objective.logit_scale())
    )
    return {
        "max_abs_diff": max(diffs.values()),
        **diffs,
        "reference_scale": scale,
        "texts_checked": len(texts),
        "logit_scale": float(objective.logit_scale()),  # the plain multiplier, as open_clip's exp()
    }
