"""The export formats as a registry: name -> writer, skip rule and usage snippet.

Every writer writes its files into the export's work directory, loads them back
with the tool that will use them, and checks the features against the cxrkit
model (:func:`check`). Adding a format is one :class:`ExportFormat` entry in
:data:`FORMATS`; the export stage (:mod:`cxrkit.stages.export`) runs the
requested ones in registry order.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from cxrkit.artifacts import Artifact
from cxrkit.errors import ArtifactError
from cxrkit.export import native, onnx_format, open_clip_format, timm_format
from cxrkit.models.checkpoint import CheckpointConfig
from cxrkit.objectives.capabilities import FUSED_SCORING, IMAGE_TEXT, PHYSIO, supports

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ExportSource:
    """What every format writer needs from the checkpoint."""

    checkpoint: Artifact
    config: CheckpointConfig
    objective: torch.nn.Module
    encoder: torch.nn.Module
    preprocessing: dict  # the checkpoint's, image_size and in_chans read from the live encoder
    images01: torch.Tensor  # (B, C, S, S) probe images in [0, 1]
    transform: dict | None = None  # keyword arguments of cxrkit.export.preprocess.preprocess

    @property
    def images(self) -> torch.Tensor:
        return native.normalise(self.images01, self.preprocessing)  # (B, C, S, S)


@dataclasses.dataclass(frozen=True)
class Checks:
    """How the formats are written and how closely they must load back."""

    tolerance: float  # PyTorch formats, scaled by max(1, |reference|)
    onnx_tolerance: float
    onnx_input_dtype: str  # "float32" or "uint8"
    onnx_opset: int


def check(fmt: str, result: dict, tolerance: float) -> dict:
    """Accept a loaded-back format when max_abs_diff <= tolerance * max(1, |reference|).

    Formats that recompute (open_clip's attention, ONNX Runtime kernels) differ by
    float rounding, which grows with the size of the values; the bound scales with them.
    Returns the result with ``status`` "ok" and the ``bound``; raises ArtifactError
    when the difference is larger.
    """
    diff = result.get("max_abs_diff")
    bound = tolerance * max(1.0, float(result.get("reference_scale", 1.0)))
    if diff is None or not diff <= bound:
        raise ArtifactError(
            f"export format {fmt}: loaded back with max abs diff {diff} > "
            f"{bound:.3g} (tolerance {tolerance} x max(1, |reference|)); the "
            "export is not faithful, nothing published"
        )
    log.info("%s: loaded back, max abs diff %.3g (bound %.3g)", fmt, diff, bound)
    return {"status": "ok", **result, "bound": bound}


def _save_image_encoder(work: Path, src: ExportSource, source: dict) -> Path:
    model_cfg = src.config.model
    return native.save_image_encoder(
        work / native.IMAGE_DIR,
        src.encoder,
        model_cfg["arch"],
        model_cfg,
        src.preprocessing,
        source,
        src.transform,
    )


@torch.no_grad()
def _write_native(work: Path, src: ExportSource, checks: Checks) -> dict:
    source = {"checkpoint_id": src.checkpoint.id, "objective": src.config.objective}
    encoder_dir = _save_image_encoder(work, src, source)
    loaded, _ = native.load_exported_encoder(encoder_dir, verify=False)
    diff = max(
        native.max_abs_diff(loaded(src.images), src.encoder(src.images)),
        native.max_abs_diff(
            loaded.forward_features(src.images), src.encoder.forward_features(src.images)
        ),
    )
    result = check(
        "safetensors",
        {"max_abs_diff": diff, "path": f"{native.IMAGE_DIR}/{native.WEIGHTS}"},
        checks.tolerance,
    )
    result["other_encoders"] = _write_other_encoders(work, src)
    if supports(src.objective, FUSED_SCORING):
        result["fused_model"] = _write_fused_model(work, src, checks)
    return result


FUSED_DIR = "fused_model"
PROBE_TEXTS = ["No acute cardiopulmonary abnormality.", "Right lower lobe consolidation."]


@torch.no_grad()
def _write_fused_model(work: Path, src: ExportSource, checks: Checks) -> dict:
    """The whole fused model (towers, fusion, heads) as the checkpoint stores it:
    ``fused_model/config.json`` + ``model.safetensors``, rebuilt with
    ``cxrkit.objectives.loading.load_objective`` and checked on image-text pair scores."""
    from cxrkit.objectives.loading import load_objective, save_objective

    out = work / FUSED_DIR
    out.mkdir(parents=True, exist_ok=True)
    save_objective(src.objective, out)
    rebuilt = load_objective(out)
    tokens = src.objective.tokenize(PROBE_TEXTS)
    diff = native.max_abs_diff(
        rebuilt.score_pairs(src.images, tokens), src.objective.score_pairs(src.images, tokens)
    )
    return check(
        "fused_model",
        {"max_abs_diff": diff, "path": f"{FUSED_DIR}/model.safetensors"},
        checks.tolerance,
    )


def _other_encoders(objective: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Encoders besides the image one, by declared capability.

    ``image_text`` gives ``text_encoder()``; ``physio`` gives ``physio_encoder()``,
    one module or a dict (``{"ecg": ..., "labs": ...}`` becomes ``physio_ecg`` and
    ``physio_labs``).
    """
    found: dict[str, torch.nn.Module] = {}
    if supports(objective, IMAGE_TEXT) and objective.text_encoder() is not None:
        found["text"] = objective.text_encoder()
    if supports(objective, PHYSIO):
        module = objective.physio_encoder()
        if isinstance(module, dict):
            found.update({f"physio_{key}": tower for key, tower in module.items()})
        elif module is not None:
            found["physio"] = module
    return found


def _write_other_encoders(work: Path, src: ExportSource) -> dict:
    """Text / physiology towers: weights + config, checked by re-reading every tensor."""
    from safetensors.torch import load_file

    results = {}
    for name, module in _other_encoders(src.objective).items():
        out = work / native.encoder_dir_name(name)
        state = native.save_encoder(out, name, module, src.config.to_dict())
        reread = load_file(str(out / native.WEIGHTS))
        same = reread.keys() == state.keys() and all(
            torch.equal(reread[k], v) for k, v in state.items()
        )
        if not same:
            raise ArtifactError(f"{out / native.WEIGHTS}: re-read tensors differ from the model")
        results[name] = {
            "status": "ok",
            "path": f"{out.name}/{native.WEIGHTS}",
            "tensors": len(state),
        }
    return results


def _write_timm(work: Path, src: ExportSource, checks: Checks) -> dict:
    encoder_dir = work / native.IMAGE_DIR
    if not (encoder_dir / native.WEIGHTS).is_file():
        _save_image_encoder(work, src, {"checkpoint_id": src.checkpoint.id})
    result = timm_format.verify(encoder_dir, src.encoder, src.images)
    return check(
        "timm", {**result, "path": f"{native.IMAGE_DIR}/{native.WEIGHTS}"}, checks.tolerance
    )


def _write_open_clip(work: Path, src: ExportSource, checks: Checks) -> dict:
    # out_dir: the objective writes side files its text tower needs there (tokenizer, config).
    model_cfg, state = src.objective.to_open_clip(work / "open_clip")
    out = open_clip_format.write_open_clip(
        work / "open_clip", model_cfg, state, open_clip_format.preprocess_cfg(src.preprocessing)
    )
    result = open_clip_format.verify(out, src.objective, src.images)
    return check("open_clip", {**result, "path": "open_clip/"}, checks.tolerance)


def _write_onnx(work: Path, src: ExportSource, checks: Checks) -> dict:
    path = work / "onnx" / onnx_format.ONNX_FILE
    mean, std = src.preprocessing["mean"], src.preprocessing["std"]
    onnx_format.export_onnx(
        src.encoder,
        path,
        int(src.preprocessing["image_size"]),
        int(src.preprocessing["in_chans"]),
        mean,
        std,
        checks.onnx_input_dtype,
        checks.onnx_opset,
    )
    result = onnx_format.verify(path, src.encoder, src.images01, mean, std, checks.onnx_input_dtype)
    result["input_size"] = int(src.preprocessing["image_size"])
    return check("onnx", {**result, "path": f"onnx/{onnx_format.ONNX_FILE}"}, checks.onnx_tolerance)


def _native_snippet(work: Path, result: dict) -> str:
    fused = ""
    if "fused_model" in result:
        fused = (
            "\n# the whole fused model (towers, co-attention fusion, heads):\n"
            "from cxrkit.objectives.loading import load_objective\n"
            f"model = load_objective('{FUSED_DIR}')  # model.score_pairs(images, "
            "model.tokenize(texts))"
        )
    return (
        "import cxrkit\n"
        "encoder = cxrkit.load('.')  # this directory: the image encoder, eval mode\n"
        "# the same after checking every file's sha256 against manifest.json:\n"
        "from cxrkit.export.native import load_exported_encoder\n"
        "encoder, vision_config = load_exported_encoder('.')" + fused
    )


def _timm_snippet(work: Path, result: dict) -> str:
    return timm_format.snippet(native.IMAGE_DIR, work / native.IMAGE_DIR)


def _open_clip_snippet(work: Path, result: dict) -> str:
    import json

    config = json.loads((work / "open_clip" / open_clip_format.CONFIG_FILE).read_text())
    hf_text = "hf_model_name" in config["model_cfg"].get("text_cfg", {})
    lines = [
        "import open_clip  # run in this directory (preprocess.py lies here)",
        "from preprocess import preprocess, transform_config",
        "folder = 'open_clip'  # this export's open_clip folder, or its absolute path",
    ]
    if hf_text:  # open_clip looks for the Hugging Face text files at hf_model_name as given
        lines += [
            "import json",
            "text_cfg = json.load(open(f'{folder}/open_clip_config.json'))['model_cfg']"
            "['text_cfg']",
            "model, _, _ = open_clip.create_model_and_transforms(",
            "    f'local-dir:{folder}', text_cfg={**text_cfg, 'hf_model_name': folder})",
        ]
    else:
        lines.append("model, _, _ = open_clip.create_model_and_transforms(f'local-dir:{folder}')")
    return "\n".join(
        lines
        + [
            "model.eval()",
            "tokenizer = open_clip.get_tokenizer(f'local-dir:{folder}')",
            "# cxrkit's exact input, grey repeated to RGB; open_clip's own transform (the third",
            "# value above) skips the percentile window and the stored size: close, not exact",
            "image = preprocess('image.jpg', **transform_config('.')).expand(-1, 3, -1, -1)",
            "image_embedding = model.encode_image(image)",
            "text_embedding = model.encode_text(tokenizer(['There is pneumonia.']))",
            f"# cosine similarities scale by model.logit_scale.exp() ({result['logit_scale']:.4g})",
        ]
    )


def _onnx_snippet(work: Path, result: dict) -> str:
    size = result.get("input_size") or "S"
    dtype = "uint8 0..255" if result["input_dtype"] == "uint8" else "float32 in [0, 1]"
    return (
        "import onnxruntime as ort\nsession = ort.InferenceSession('onnx/image_encoder.onnx')\n"
        f"# image: (batch, 1, {size}, {size}), {dtype}, bone bright: steps 1-4 of preprocess.py\n"
        "# (normalisation is inside the graph)\n"
        "embedding, tokens = session.run(None, {'image': image})"
    )


def _always_applies(src: ExportSource) -> str | None:
    return None


@dataclasses.dataclass(frozen=True)
class ExportFormat:
    """One export format.

    ``write(work, src, checks)`` writes the files under ``work``, loads them back
    and returns the checked result (raises ArtifactError when not faithful);
    ``skip_reason(src)`` says why the format cannot apply to this checkpoint
    (None = it applies); ``snippet(work, result)`` is the model card's usage code,
    titled ``snippet_title``.
    """

    write: Callable[[Path, ExportSource, Checks], dict]
    snippet_title: str
    snippet: Callable[[Path, dict], str]
    skip_reason: Callable[[ExportSource], str | None] = _always_applies


FORMATS: dict[str, ExportFormat] = {
    "safetensors": ExportFormat(_write_native, "cxrkit", _native_snippet),
    "timm": ExportFormat(_write_timm, "timm", _timm_snippet),
    "open_clip": ExportFormat(
        _write_open_clip,
        "open_clip",
        _open_clip_snippet,
        lambda src: open_clip_format.skip_reason(src.objective),
    ),
    "onnx": ExportFormat(_write_onnx, "ONNX Runtime", _onnx_snippet),
}
"""Every export format by name, in the order the stage writes them."""


@torch.no_grad()
def write_formats(work: Path, src: ExportSource, names: list[str], checks: Checks) -> dict:
    """Write, load back and check the named formats (registry order) into ``work``.

    Returns ``{name: result}``: status "ok" with the differences, or "skipped"
    with the reason. Raises ArtifactError when a format does not load back faithfully.
    """
    results: dict[str, dict] = {}
    for name, fmt in FORMATS.items():
        if name not in names:
            continue
        reason = fmt.skip_reason(src)
        if reason is not None:
            log.info("%s skipped: %s", name, reason)
            results[name] = {"status": "skipped", "reason": reason}
        else:
            results[name] = fmt.write(work, src, checks)
    return results


def snippets(work: Path, results: dict[str, dict]) -> dict[str, str]:
    """Usage code for the model card: ``{title: code}`` for every format written ok."""
    return {
        fmt.snippet_title: fmt.snippet(work, results[name])
        for name, fmt in FORMATS.items()
        if results.get(name, {}).get("status") == "ok"
    }
