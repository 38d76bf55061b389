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
from typing import TYPE_CHECKING, Any, Literal

from cxrkit.artifacts import Artifact, ArtifactWriter, open_artifact
from cxrkit.config import doc, to_dict
from cxrkit.errors import ArtifactError, ConfigError, InputError
from cxrkit.export.names import FORMAT_NAMES, ONNX_OPSET  # torch-free

if TYPE_CHECKING:
    from cxrkit.export.formats import ExportSource

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MIN_ONNX_OPSET = 14  # scaled_dot_product_attention has an ONNX export from opset 14


@dataclasses.dataclass
class ExportConfig:
    """Settings of `cxrkit export` (every field can be set with --set)."""

    checkpoint: str = doc("Checkpoint artifact directory to export.", "")
    out: str = doc("Output export artifact directory.", "")
    formats: list[str] = doc(
        "Formats to write: " + ", ".join(FORMAT_NAMES) + ".", list(FORMAT_NAMES)
    )
    eval: str | None = doc(
        "Eval artifact of this checkpoint; its metrics.json goes into the model card.", None
    )
    onnx_input_dtype: Literal["float32", "uint8"] = doc(
        "ONNX graph input: float32 in [0, 1] (any bit depth) or uint8 in [0, 255].", "float32"
    )
    onnx_opset: int = doc("ONNX opset version.", ONNX_OPSET)
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
        unknown = [f for f in self.formats if f not in FORMAT_NAMES]
        if unknown or not self.formats:
            raise ConfigError(
                f"--format {','.join(self.formats) or '(empty)'}: choose from {', '.join(FORMAT_NAMES)}"
            )
        if self.tolerance < 0 or self.onnx_tolerance < 0:
            raise ConfigError("tolerance and onnx_tolerance must be >= 0")
        if "onnx" in self.formats and self.onnx_opset < MIN_ONNX_OPSET:
            raise ConfigError(
                f"onnx_opset {self.onnx_opset}: the ViT's attention (scaled_dot_product_attention) "
                f"needs opset >= {MIN_ONNX_OPSET}; the default is {ONNX_OPSET}"
            )


def _id_params(cfg: ExportConfig) -> dict:
    # Input paths are left out: the input artifact ids already pin them, and a moved
    # checkpoint should give the same export id.
    params = to_dict(cfg)
    for key in ("checkpoint", "out", "eval"):
        params.pop(key)
    params["formats"] = [f for f in FORMAT_NAMES if f in cfg.formats]
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


def _load_source(checkpoint: Artifact) -> ExportSource:
    from cxrkit.export import native
    from cxrkit.export.formats import ExportSource
    from cxrkit.models.checkpoint import read_checkpoint_config
    from cxrkit.objectives.loading import load_objective

    config = read_checkpoint_config(checkpoint.path)
    objective = load_objective(checkpoint.path).float()
    encoder = objective.image_encoder().eval()
    args = native.vit_model_args(encoder)
    pre = config.preprocessing.to_dict()
    pre["image_size"] = pre["image_size"] or args["img_size"]
    pre["in_chans"] = args["in_chans"]
    images01 = native.probe_images(int(pre["image_size"]), batch=3, in_chans=args["in_chans"])
    return ExportSource(
        checkpoint, config, objective, encoder, pre, images01, input_transform(checkpoint, pre)
    )


def input_transform(checkpoint: Artifact, pre: dict) -> dict[str, Any]:
    """The exact input transform of this encoder: keyword arguments of
    :func:`cxrkit.export.preprocess.preprocess`, with the ingest settings (percentile
    window, stored size and type, reduced JPEG decoding) read from the training dataset in
    the lineage.

    ``ingest_settings`` says whether they were read (``"dataset <id>"``) or are the
    ingest defaults because no dataset manifest was found.
    """
    from cxrkit.artifacts import lineage, read_manifest
    from cxrkit.export import preprocess
    from cxrkit.stages.ingest import IngestConfig

    ingest = IngestConfig()
    settings = "cxrkit ingest defaults (no training dataset manifest found)"
    for row in lineage(checkpoint.path):
        if row["kind"] == "dataset" and row["found"]:
            params = read_manifest(Path(row["path"])).get("params", {})
            for key in ("window_low_pct", "window_high_pct", "image_size", "dtype"):
                if key in params:
                    setattr(ingest, key, params[key])
            # A dataset from before decode_reduce decoded every JPEG in full.
            ingest.decode_reduce = params.get("decode_reduce", "off")
            settings = f"dataset {row['id'][:16]}"
            break
    return {
        "version": preprocess.TRANSFORM_VERSION,
        "image_size": int(pre["image_size"]),
        "mean": float(pre["mean"]),
        "std": float(pre["std"]),
        "low_pct": float(ingest.window_low_pct),
        "high_pct": float(ingest.window_high_pct),
        "store_size": int(ingest.image_size),
        "store_dtype": str(ingest.dtype),
        "decode_reduce": str(ingest.decode_reduce),
        "ingest_settings": settings,
    }


def _encoder_info(src: ExportSource) -> dict[str, Any]:
    import torch

    from cxrkit.export import native

    args = native.vit_model_args(src.encoder)
    with torch.no_grad():
        tokens = src.encoder.forward_features(src.images[:1])  # (1, P + L, D)
    return {
        "arch": src.config.model["arch"],
        "vision_config": src.config.model,
        "model_args": args,
        "embed_dim": int(tokens.shape[-1]),
        "num_tokens": int(tokens.shape[1]),
        "parameters": sum(p.numel() for p in src.encoder.parameters()),
        "eval_features": _eval_features(src.objective),
    }


def _eval_features(objective: Any) -> str:
    """Which image features ``cxrkit eval`` computes for this objective (probe, zero-shot)."""
    from cxrkit.objectives.capabilities import IMAGE_TEXT, supports

    if not supports(objective, IMAGE_TEXT):
        return "`embedding` above (the encoder's pooled output)"
    doc = (type(objective).encode_image.__doc__ or "").strip().splitlines()
    what = f" ({doc[0].rstrip('.')})" if doc else ""
    return (
        f"`encode_image` of objective `{objective.name}`{what}, not `embedding`; "
        "the open_clip export's `encode_image` gives them"
    )


def run(cfg: ExportConfig, force: bool = False) -> Artifact:
    """Export a checkpoint artifact into ``cfg.out`` in the requested formats.

    Returns the published export Artifact (stats hold each format's status and max
    abs diff). Raises ConfigError for bad settings or an eval of another checkpoint,
    ArtifactError for a damaged input or a format that does not load back faithfully.
    """
    cfg.validate()
    if not cfg.out or not cfg.checkpoint:
        raise ConfigError("cxrkit export needs a checkpoint artifact and --out")
    _check_utf8(cfg.checkpoint, "checkpoint")
    _check_utf8(cfg.out, "--out")
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
    from cxrkit.export import card, preprocess
    from cxrkit.export.formats import Checks, snippets, write_formats

    src = _load_source(checkpoint)
    work = _fresh(writer.begin())
    try:
        checks = Checks(cfg.tolerance, cfg.onnx_tolerance, cfg.onnx_input_dtype, cfg.onnx_opset)
        results = write_formats(work, src, cfg.formats, checks)
        if not any(r["status"] == "ok" for r in results.values()):
            reasons = "; ".join(f"{name}: {r.get('reason')}" for name, r in results.items())
            raise ConfigError(
                f"--format {','.join(cfg.formats)}: no requested format applies to checkpoint "
                f"{cfg.checkpoint} ({reasons}); nothing published"
            )
    except (ArtifactError, ConfigError):
        # An export that failed its load-back check, or holds no format, is worthless;
        # unlike a long training run there is nothing to resume, so leave no temp dir.
        shutil.rmtree(work, ignore_errors=True)
        writer.release()
        raise
    meta = card.build_metadata(
        checkpoint,
        src.config,
        _encoder_info(src),
        results,
        metrics,
        evaluation.ref() if evaluation else None,
        cfg.onnx_input_dtype,
        src.transform,
        _local_paths(cfg, checkpoint, evaluation),
    )
    shutil.copyfile(Path(preprocess.__file__), work / "preprocess.py")
    card.write_card(work, meta, snippets(work, results))
    stats = _summary(results)
    schema = {"image_input": meta["inputs"]["image"], "outputs": meta["outputs"]}
    return writer.publish(schema=schema, stats=stats)


def _check_utf8(path: str, what: str) -> None:
    """InputError when ``path`` (as given or absolute) is not valid UTF-8: safetensors,
    timm and open_clip open files by UTF-8 paths only (a name from another locale)."""
    from cxrkit.io.path_scrub import printable_path

    for text in (str(path), str(Path(path).absolute())):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(
                f"{what} {printable_path(text)}: the path is not valid UTF-8, which "
                "safetensors, timm and open_clip cannot open; rename it"
            ) from None


def _local_paths(cfg: ExportConfig, checkpoint: Artifact, evaluation: Artifact | None) -> list:
    """Every local path this export was given or read, as typed: the card must name none.

    The eval artifact's params and inputs name the paths its metrics quote (``cxrkit
    eval`` writes the checkpoint and prompts paths as they were typed).
    """
    paths = [cfg.checkpoint, cfg.out, str(checkpoint.path)]
    if evaluation is not None:
        paths += [cfg.eval, str(evaluation.path)]
        paths += [ref.get("path") for ref in evaluation.manifest.get("inputs", [])]
        paths += [v for v in evaluation.params.values() if isinstance(v, str)]
    return [p for p in paths if p]


def _fresh(work: Path) -> Path:
    """Empty a build directory adopted from a killed export, keeping its in-progress marker.

    An export has nothing to resume (it takes seconds) and a killed one may have left a
    half-written file that a format writer would take as done; returns ``work``.
    """
    from cxrkit.artifacts.manifest import PARTIAL_MARKER

    for entry in work.iterdir():
        if entry.name == PARTIAL_MARKER:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return work


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
