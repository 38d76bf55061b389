"""`cxrkit export`: a checkpoint artifact -> an export artifact other tools can load.

Output layout (each format proven by loading it back before the artifact is published)::

    OUT/manifest.json          stats: formats {name: ok|skipped}, max abs diffs, skip reasons
    OUT/README.md              model card (architecture, method, data, lineage, eval, use)
    OUT/metadata.json          the same, machine-readable, with every format check in full
    OUT/image_encoder/         model.safetensors + config.json (cxrkit and timm read it)
    OUT/<name>_encoder/        other encoders the objective has (text, physiology)
    OUT/open_clip/             open_clip_config.json + open_clip_model.safetensors
    OUT/onnx/image_encoder.onnx

A format that cannot apply (open_clip for an image-only objective) is recorded as
``skipped`` with the reason; one that loads back with a larger difference than the
tolerance stops the export (nothing is published).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Literal

import torch

from cxrkit.artifacts import Artifact, ArtifactWriter, open_artifact
from cxrkit.config import doc, to_dict
from cxrkit.errors import ArtifactError, ConfigError
from cxrkit.export import FORMATS, card, native, onnx_format, open_clip_format, timm_format

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
EXTRA_ENCODERS = ("text", "physio")  # objective methods `<name>_encoder()` exported when present


@dataclasses.dataclass
class ExportConfig:
    """Settings of `cxrkit export` (every field can be set with --set)."""

    checkpoint: str = doc("Checkpoint artifact directory to export.", "")
    out: str = doc("Output export artifact directory.", "")
    formats: list[str] = doc("Formats to write: " + ", ".join(FORMATS) + ".", list(FORMATS))
    eval: str | None = doc(
        "Eval artifact of this checkpoint; its metrics.json goes into the model card.", None
    )
    onnx_input_dtype: Literal["float32", "uint8"] = doc(
        "ONNX graph input: float32 in [0, 1] (any bit depth) or uint8 in [0, 255].", "float32"
    )
    onnx_opset: int = doc("ONNX opset version.", onnx_format.OPSET)
    tolerance: float = doc(
        "Largest max-abs difference accepted when a PyTorch format "
        "(safetensors, timm, open_clip) is loaded back, fp32; scaled by "
        "max(1, largest |reference value|).",
        1e-5,
    )
    onnx_tolerance: float = doc(
        "Largest max-abs difference accepted between ONNX Runtime "
        "and PyTorch, scaled the same way.",
        1e-4,
    )

    def validate(self) -> None:
        """Raise ConfigError on unknown or empty formats or a negative tolerance."""
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown or not self.formats:
            raise ConfigError(
                f"--format {','.join(self.formats) or '(empty)'}: choose from {', '.join(FORMATS)}"
            )
        if self.tolerance < 0 or self.onnx_tolerance < 0:
            raise ConfigError("tolerance and onnx_tolerance must be >= 0")


def _id_params(cfg: ExportConfig) -> dict:
    # Input paths are left out: the input artifact ids already pin them, and a moved
    # checkpoint should give the same export id.
    params = to_dict(cfg)
    for key in ("checkpoint", "out", "eval"):
        params.pop(key)
    params["formats"] = [f for f in FORMATS if f in cfg.formats]
    return params


def _open_eval(cfg: ExportConfig, checkpoint: Artifact) -> tuple[Artifact | None, dict | None]:
    """The eval artifact and its metrics; ConfigError when it evaluated another checkpoint."""
    if not cfg.eval:
        return None, None
    evaluation = open_artifact(cfg.eval, kind="eval", verify_files=True)
    evaluated = {ref.get("id") for ref in evaluation.manifest.get("inputs", [])}
    if checkpoint.id not in evaluated:
        raise ConfigError(
            f"--eval {cfg.eval}: this eval artifact did not evaluate checkpoint "
            f"{checkpoint.id[:12]} ({cfg.checkpoint}); pass the eval of this "
            "checkpoint or leave --eval out"
        )
    path = evaluation.file("metrics.json")
    try:
        return evaluation, json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable metrics ({exc})") from exc


def _check(fmt: str, result: dict, tolerance: float) -> dict:
    """Accept a loaded-back format when max_abs_diff <= tolerance * max(1, |reference|).

    Formats that recompute (open_clip's attention, ONNX Runtime kernels) differ by
    float rounding, which grows with the size of the values; the bound scales with them.
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


@dataclasses.dataclass
class _Source:
    """What every format writer needs from the checkpoint."""

    checkpoint: Artifact
    config: dict
    objective: torch.nn.Module
    encoder: torch.nn.Module
    preprocessing: dict
    images01: torch.Tensor  # (B, C, S, S) probe images in [0, 1]

    @property
    def images(self) -> torch.Tensor:
        return native.normalise(self.images01, self.preprocessing)  # (B, C, S, S)


def _load_source(checkpoint: Artifact) -> _Source:
    from cxrkit.models.loading import load_objective, read_config

    config = read_config(checkpoint.path)
    objective = load_objective(checkpoint.path).float()
    encoder = objective.image_encoder().eval()
    args = native.vit_model_args(encoder)
    pre = dict(config.get("preprocessing") or {})
    pre.setdefault("mean", 0.5)
    pre.setdefault("std", 0.5)
    pre["image_size"] = pre.get("image_size") or args["img_size"]
    pre["in_chans"] = args["in_chans"]
    images01 = native.probe_images(int(pre["image_size"]), batch=3, in_chans=args["in_chans"])
    return _Source(checkpoint, config, objective, encoder, pre, images01)


@torch.no_grad()
def _write_native(work: Path, src: _Source, tolerance: float) -> dict:
    model_cfg = src.config["objective_config"]["model"]
    encoder_dir = native.save_image_encoder(
        work / native.IMAGE_DIR,
        src.encoder,
        model_cfg["arch"],
        model_cfg,
        src.preprocessing,
        {"checkpoint_id": src.checkpoint.id, "objective": src.config.get("objective")},
    )
    loaded, _ = native.load_exported_encoder(encoder_dir, verify=False)
    diff = max(
        native.max_abs_diff(loaded(src.images), src.encoder(src.images)),
        native.max_abs_diff(
            loaded.forward_features(src.images), src.encoder.forward_features(src.images)
        ),
    )
    result = _check(
        "safetensors",
        {"max_abs_diff": diff, "path": f"{native.IMAGE_DIR}/{native.WEIGHTS}"},
        tolerance,
    )
    result["other_encoders"] = _write_other_encoders(work, src)
    return result


def _other_encoders(objective: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Encoders besides the image one: ``text_encoder()``, ``physio_encoder()`` when defined.

    A getter may return one module or a dict of them (several physiology teachers:
    ``{"ecg": ..., "labs": ...}`` becomes ``physio_ecg`` and ``physio_labs``).
    """
    found: dict[str, torch.nn.Module] = {}
    for name in EXTRA_ENCODERS:
        getter = getattr(objective, f"{name}_encoder", None)
        module = getter() if callable(getter) else None
        if isinstance(module, dict):
            found.update({f"{name}_{key}": tower for key, tower in module.items()})
        elif module is not None:
            found[name] = module
    return found


def _write_other_encoders(work: Path, src: _Source) -> dict:
    """Text / physiology towers: weights + config, checked by re-reading every tensor."""
    from safetensors.torch import load_file

    results = {}
    for name, module in _other_encoders(src.objective).items():
        out = work / native.encoder_dir_name(name)
        state = native.save_encoder(out, name, module, src.config)
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


def _write_timm(work: Path, src: _Source, tolerance: float) -> dict:
    encoder_dir = work / native.IMAGE_DIR
    if not (encoder_dir / native.WEIGHTS).is_file():
        model_cfg = src.config["objective_config"]["model"]
        native.save_image_encoder(
            encoder_dir,
            src.encoder,
            model_cfg["arch"],
            model_cfg,
            src.preprocessing,
            {"checkpoint_id": src.checkpoint.id},
        )
    result = timm_format.verify(encoder_dir, src.encoder, src.images)
    return _check("timm", {**result, "path": f"{native.IMAGE_DIR}/{native.WEIGHTS}"}, tolerance)


def _write_open_clip(work: Path, src: _Source, tolerance: float) -> dict:
    reason = open_clip_format.skip_reason(src.objective)
    if reason is not None:
        log.info("open_clip skipped: %s", reason)
        return {"status": "skipped", "reason": reason}
    model_cfg, state = src.objective.to_open_clip(work / "open_clip")
    out = open_clip_format.write_open_clip(
        work / "open_clip", model_cfg, state, open_clip_format.preprocess_cfg(src.preprocessing)
    )
    result = open_clip_format.verify(out, src.objective, src.images)
    return _check("open_clip", {**result, "path": "open_clip/"}, tolerance)


def _write_onnx(work: Path, src: _Source, cfg: ExportConfig) -> dict:
    path = work / "onnx" / onnx_format.ONNX_FILE
    mean, std = src.preprocessing["mean"], src.preprocessing["std"]
    onnx_format.export_onnx(
        src.encoder,
        path,
        int(src.preprocessing["image_size"]),
        int(src.preprocessing["in_chans"]),
        mean,
        std,
        cfg.onnx_input_dtype,
        cfg.onnx_opset,
    )
    result = onnx_format.verify(path, src.encoder, src.images01, mean, std, cfg.onnx_input_dtype)
    return _check("onnx", {**result, "path": f"onnx/{onnx_format.ONNX_FILE}"}, cfg.onnx_tolerance)


def _snippets(work: Path, results: dict) -> dict[str, str]:
    snippets = {}
    if results.get("safetensors", {}).get("status") == "ok":
        snippets["cxrkit"] = (
            "import cxrkit\n"
            "encoder = cxrkit.load('.')  # this directory: the image encoder, eval mode\n"
            "# the same after checking every file's sha256 against manifest.json:\n"
            "from cxrkit.export.native import load_exported_encoder\n"
            "encoder, vision_config = load_exported_encoder('.')"
        )
    if results.get("timm", {}).get("status") == "ok":
        snippets["timm"] = timm_format.snippet(native.IMAGE_DIR, work / native.IMAGE_DIR)
    if results.get("open_clip", {}).get("status") == "ok":
        snippets["open_clip"] = (
            "import open_clip  # run in this directory (a text tower's files lie in open_clip/)\n"
            "model, _, preprocess = "
            "open_clip.create_model_and_transforms('local-dir:open_clip')\n"
            "tokenizer = open_clip.get_tokenizer('local-dir:open_clip')\n"
            "image_emb = model.encode_image(preprocess(pil_image)[None])\n"
            "text_emb = model.encode_text(tokenizer(['There is pneumonia.']))"
        )
    if results.get("onnx", {}).get("status") == "ok":
        snippets["ONNX Runtime"] = (
            "import onnxruntime as ort\nsession = ort.InferenceSession('onnx/image_encoder.onnx')\n"
            "# image: (batch, 1, S, S) at the model size, "
            + ("uint8 0..255" if results["onnx"]["input_dtype"] == "uint8" else "float32 in [0, 1]")
            + ", bone bright\nembedding, tokens = session.run(None, {'image': image})"
        )
    return snippets


def _encoder_info(src: _Source) -> dict[str, Any]:
    args = native.vit_model_args(src.encoder)
    with torch.no_grad():
        tokens = src.encoder.forward_features(src.images[:1])  # (1, P + L, D)
    return {
        "arch": src.config["objective_config"]["model"]["arch"],
        "vision_config": src.config["objective_config"]["model"],
        "model_args": args,
        "embed_dim": int(tokens.shape[-1]),
        "num_tokens": int(tokens.shape[1]),
        "parameters": sum(p.numel() for p in src.encoder.parameters()),
    }


def run(cfg: ExportConfig, force: bool = False) -> Artifact:
    """Export a checkpoint artifact into ``cfg.out`` in the requested formats.

    Returns the published export Artifact (stats hold each format's status and max
    abs diff). Raises ConfigError for bad settings or an eval of another checkpoint,
    ArtifactError for a damaged input or a format that does not load back faithfully.
    """
    cfg.validate()
    if not cfg.out or not cfg.checkpoint:
        raise ConfigError("cxrkit export needs a checkpoint artifact and --out")
    checkpoint = open_artifact(cfg.checkpoint, kind="checkpoint", verify_files=True)
    evaluation, metrics = _open_eval(cfg, checkpoint)
    inputs = [checkpoint] + ([evaluation] if evaluation is not None else [])
    writer = ArtifactWriter(
        Path(cfg.out),
        "export",
        _id_params(cfg),
        inputs=inputs,
        schema_version=SCHEMA_VERSION,
        force=force,
    )
    if (done := writer.up_to_date()) is not None:
        return done
    writer.check_target()
    src = _load_source(checkpoint)
    work = writer.begin()
    try:
        results = _write_formats(work, src, cfg)
    except ArtifactError:
        # An export that failed its load-back check is worthless; unlike a long
        # training run there is nothing to resume, so leave no temp dir behind.
        shutil.rmtree(work, ignore_errors=True)
        raise
    meta = card.build_metadata(
        checkpoint,
        src.config,
        _encoder_info(src),
        results,
        metrics,
        evaluation.ref() if evaluation else None,
        cfg.onnx_input_dtype,
    )
    card.write_card(work, meta, _snippets(work, results))
    stats = _summary(results)
    schema = {"image_input": meta["inputs"]["image"], "outputs": meta["outputs"]}
    return writer.publish(schema=schema, stats=stats)


def _summary(results: dict[str, dict]) -> dict[str, Any]:
    """Manifest stats: ``formats`` {name: ok|skipped}, each max abs diff or skip reason.

    The full per-format check (every diff, routes, runtime) is in metadata.json.
    """
    stats: dict[str, Any] = {"formats": {fmt: r["status"] for fmt, r in results.items()}}
    for fmt, result in results.items():
        if result.get("max_abs_diff") is not None:
            stats[f"{fmt}_max_abs_diff"] = result["max_abs_diff"]
        if result.get("reason"):
            stats[f"{fmt}_skip_reason"] = result["reason"]
    stats["formats_ok"] = sum(r["status"] == "ok" for r in results.values())
    stats["formats_skipped"] = sum(r["status"] == "skipped" for r in results.values())
    return stats


@torch.no_grad()
def _write_formats(work: Path, src: _Source, cfg: ExportConfig) -> dict[str, dict]:
    results: dict[str, dict] = {}
    for fmt in FORMATS:
        if fmt not in cfg.formats:
            continue
        if fmt == "safetensors":
            results[fmt] = _write_native(work, src, cfg.tolerance)
        elif fmt == "timm":
            results[fmt] = _write_timm(work, src, cfg.tolerance)
        elif fmt == "open_clip":
            results[fmt] = _write_open_clip(work, src, cfg.tolerance)
        else:
            results[fmt] = _write_onnx(work, src, cfg)
    return results
