"""The model card (``README.md``) and machine-readable ``metadata.json`` of an export.

Both are rendered from one dict built by :func:`build_metadata`, so they never
disagree. The metadata follows the spirit of a MONAI bundle's ``metadata.json``:
what goes in (shape, dtype, range, photometric convention), what comes out,
the preprocessing, intended use, and where the weights came from (the lineage
back to the raw inputs, with artifact ids and content hashes).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cxrkit import __version__
from cxrkit.artifacts import Artifact, lineage, read_manifest
from cxrkit.export.card_text import (
    public_path,
    scrub_known_paths,
    scrub_local_paths,
    summarise_metrics,
)
from cxrkit.models.checkpoint import CheckpointConfig

METADATA_FORMAT = "cxrkit-export-metadata/1"
INTENDED_USE = (
    "Research only: a feature extractor for chest radiographs, to study linear probes, "
    "fine-tuning, retrieval and zero-shot methods. Not a medical device; not for diagnosis, "
    "triage or any clinical decision."
)
LIMITATIONS = [
    "Trained on the datasets listed under training data only; performance on other "
    "hospitals, scanners, populations, views (e.g. lateral, pediatric) is unknown.",
    "Self-supervised features carry no calibrated probabilities; any classifier built on "
    "them needs its own validation.",
    "Biases of the training data (sex, age, disease prevalence, devices) pass into the features.",
    "Inputs must follow the preprocessing described here; inverted (MONOCHROME1) or differently "
    "windowed images give meaningless features.",
]


def content_hash(manifest: dict) -> str:
    """sha256 over an artifact's listed files (path + sha256), a fingerprint of its data."""
    entries = sorted((f["path"], f["sha256"]) for f in manifest.get("files", []))
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def lineage_rows(checkpoint: Artifact) -> list[dict[str, Any]]:
    """The checkpoint's lineage back to the raw inputs, each row with its content hash and rows.

    Rows: depth, kind, id, path, found, and for artifacts found on disk
    ``content_sha256``, ``files`` and ``rows`` (Parquet rows, rejects excluded).
    """
    rows = []
    for row in lineage(checkpoint.path):
        row = dict(row)
        manifest_path = Path(row["path"]) / "manifest.json"
        if row["kind"] != "raw" and manifest_path.is_file():
            manifest = read_manifest(Path(row["path"]))
            row["content_sha256"] = content_hash(manifest)
            row["files"] = len(manifest.get("files", []))
            counts = [
                f.get("rows")
                for f in manifest.get("files", [])
                if f.get("rows") is not None and not f["path"].endswith("rejects.parquet")
            ]
            if counts:
                row["rows"] = int(sum(counts))
            if isinstance(manifest.get("stats", {}).get("split_counts"), dict):
                row["split_counts"] = manifest["stats"]["split_counts"]
        rows.append(row)
    return rows


def _training_data(rows: list[dict]) -> list[dict[str, Any]]:
    keys = ("kind", "id", "path", "rows", "split_counts", "content_sha256")
    return [
        {k: row.get(k) for k in keys}
        for row in rows
        if row["kind"] in ("dataset", "annotations", "physio", "pairs")
    ]


def _training_params(checkpoint: Artifact) -> dict[str, Any]:
    """The params of the run that trained these weights.

    A pretrain checkpoint holds them; a distilled student (``cxrkit distill``) holds only
    ``synthetic_pairs`` and lists its training run as an input checkpoint, whose params
    hold the recipe (PaCX settings, preset, optimiser). Returns ``{}`` when none is found.
    """
    if "objective" in checkpoint.params:
        return checkpoint.params
    for row in lineage(checkpoint.path):  # finds inputs moved together with the checkpoint
        if row["depth"] == 1 and row["kind"] == "checkpoint" and row["found"]:
            params = read_manifest(Path(row["path"])).get("params", {})
            if "objective" in params:
                return params
    return {}


def _starting_weights(rows: list[dict]) -> list[dict[str, Any]]:
    """Weights files and folders the run's settings named (an ImageNet-MAE start, a text
    model folder), anywhere in the lineage: setting, content sha256, file name."""
    return [
        {"setting": row["setting"], "sha256": row["id"], "path": row["path"]}
        for row in rows
        if row.get("setting")
    ]


def _method(checkpoint: Artifact, ckpt_config: CheckpointConfig) -> dict[str, Any]:
    params = _training_params(checkpoint)
    objective_cfg = ckpt_config.objective_config
    method = {
        "objective": ckpt_config.objective,
        "preset": params.get("preset") or checkpoint.stats.get("preset") or "not recorded",
        "objective_config": {k: v for k, v in objective_cfg.items() if k != "model"},
        "train": params.get("train", {}),
        "optim": params.get("optim", {}),
        "data": {k: v for k, v in params.get("data", {}).items() if k != "augment"},
        "checkpoint_stats": {
            k: v for k, v in checkpoint.stats.items() if not isinstance(v, dict | list)
        },
    }
    trained_as = params.get("objective", {})
    if isinstance(trained_as, dict) and trained_as.get("name") not in (None, ckpt_config.objective):
        method["training_objective"] = trained_as  # e.g. pacx for a distilled mae student
    return method


def _preprocessing(pre: dict, transform: dict | None) -> dict[str, Any]:
    """The exact input transform, step by step (what ``preprocess.py`` in the export does)."""
    size = int(pre.get("image_size") or 0)
    t = transform or {}
    low, high = t.get("low_pct", 0.5), t.get("high_pct", 99.5)
    store, dtype = t.get("store_size", 512), t.get("store_dtype", "uint8")
    reduced = (
        f"; a JPEG decoded at the smallest 1/2, 1/4 or 1/8 DCT scale whose long side is "
        f"still >= {store} px, as ingest did (decode_reduce {t.get('decode_reduce', 'lossy')})"
        if t.get("decode_reduce", "lossy") != "off"
        else "; JPEGs decoded in full (decode_reduce off)"
    )
    return {
        "input_size": [size, size],
        "channels": int(pre.get("in_chans", 1)),
        "mean": pre.get("mean"),
        "std": pre.get("std"),
        "photometric": pre.get("photometric", "MONOCHROME2"),
        "transform": transform,
        "function": "preprocess.py in this export: preprocess(image, **transform_config('.'))",
        "steps": [
            "grey levels: DICOM after modality and VOI LUT with MONOCHROME1 inverted (bright "
            "bone); PNG/JPEG as stored (colour to luminance), turned upright by the file's "
            "EXIF orientation, scaled to [0, 1] by 255 or 65535" + reduced,
            f"percentile window: clip to the {low:g} and {high:g} percentiles of the image, "
            "stretch linearly to [0, 1] (applied at ingest)",
            f"stored image: downscale the long side to {store} px (bilinear, antialiased, never "
            f"upscaled) and round to {dtype} (as the training dataset stored it)",
            f"model input: resize the long side to {size} px (bilinear, antialiased) and "
            f"centre-pad to {size} x {size} with black (letterbox, no crop)",
            f"normalise (x - {pre.get('mean')}) / {pre.get('std')}",
        ],
        "timm_create_transform": "not exact: use crop_mode='border' (letterbox) at best; it "
        "pads with the mean grey and has no percentile window. Use preprocess.py.",
    }


def _inputs_outputs(pre: dict, encoder_info: dict, onnx_input_dtype: str) -> dict[str, Any]:
    """MONAI-bundle-like description of the network's input and outputs."""
    size = int(pre.get("image_size") or 0)
    width = encoder_info["embed_dim"]
    image = {
        "type": "image",
        "modality": "X-ray (CR/DX), frontal",
        "num_channels": int(pre.get("in_chans", 1)),
        "spatial_shape": [size, size],
        "dtype": "float32",
        "value_range": [-1.0, 1.0],
        "photometric": "MONOCHROME2 (bright bone)",
        "onnx": {
            "dtype": onnx_input_dtype,
            "value_range": [0, 255] if onnx_input_dtype == "uint8" else [0.0, 1.0],
            "normalisation": "inside the graph",
        },
    }
    outputs = {
        "embedding": {
            "type": "feature",
            "shape": ["batch", width],
            "pooling": encoder_info["model_args"]["global_pool"],
        },
        "tokens": {"type": "feature", "shape": ["batch", encoder_info["num_tokens"], width]},
    }
    return {"inputs": {"image": image}, "outputs": outputs}


def build_metadata(
    checkpoint: Artifact,
    ckpt_config: CheckpointConfig,
    encoder_info: dict,
    formats: dict[str, dict],
    eval_metrics: dict | None,
    eval_ref: dict | None,
    onnx_input_dtype: str,
    transform: dict | None = None,
    local_paths: Iterable[str] = (),
) -> dict[str, Any]:
    """Everything the card says, as one JSON-ready dict.

    Takes the checkpoint artifact and its config.json, ``encoder_info`` (arch,
    vision_config, model_args, embed_dim, num_tokens), the per-format results, the
    eval metrics (or None) with the eval artifact's ref, the ONNX input dtype and the
    exact input transform (:func:`cxrkit.stages.export.input_transform`) and the local
    paths the run was given (``local_paths``: as typed, relative ones included). Paths
    are reduced to directory names: the card travels, local paths must not.
    """
    pre = ckpt_config.preprocessing.to_dict()
    local_rows = lineage_rows(checkpoint)
    rows = [{**r, "path": public_path(r["path"])} for r in local_rows]
    evaluation = None
    if eval_metrics is not None:
        ref = {**eval_ref, "path": public_path(eval_ref.get("path"))} if eval_ref else None
        metrics = {**eval_metrics}
        if isinstance(metrics.get("dataset"), dict):
            metrics["dataset"] = {
                **metrics["dataset"],
                "path": public_path(metrics["dataset"].get("path")),
            }
        evaluation = {
            "artifact": ref,
            "metrics": metrics,
            "summary": summarise_metrics(eval_metrics),
        }
    meta = {
        "format": METADATA_FORMAT,
        "cxrkit_version": __version__,
        "name": f"cxrkit {ckpt_config.objective} {encoder_info['arch']}",
        "task": "chest X-ray image representation (feature extraction)",
        "intended_use": INTENDED_USE,
        "limitations": LIMITATIONS,
        "architecture": encoder_info,
        "method": _method(checkpoint, ckpt_config),
        "preprocessing": _preprocessing(pre, transform),
        **_inputs_outputs(pre, encoder_info, onnx_input_dtype),
        "checkpoint": {
            "id": checkpoint.id,
            "path": public_path(checkpoint.path),
            "content_sha256": content_hash(checkpoint.manifest),
        },
        "training_data": _training_data(rows),
        "starting_weights": _starting_weights(rows),
        "lineage": rows,
        "eval": evaluation,
        "formats": formats,
    }
    known = [checkpoint.path, *local_paths, *(r["path"] for r in local_rows)]
    return scrub_local_paths(scrub_known_paths(meta, [p for p in known if p]))


_PRECISION = {
    "no": "fp32",
    "fp32": "fp32",
    "bf16": "bf16 mixed precision",
    "fp16": "fp16 mixed precision",
    "fp8": "fp8 mixed precision",
}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def _card_head(meta: dict) -> list[str]:
    arch, method, pre = meta["architecture"], meta["method"], meta["preprocessing"]
    args = arch["model_args"]
    lines = [
        f"# {meta['name']}",
        "",
        f"**Intended use.** {meta['intended_use']}",
        "",
        "## Architecture",
        "",
        f"- image encoder: timm `{arch['arch']}`, {args['depth']} blocks, "
        f"width {arch['embed_dim']}, patch {args['patch_size']}, "
        f"input {pre['channels']} x {pre['input_size'][0]} x {pre['input_size'][1]}",
        f"- outputs: `embedding` (batch, {arch['embed_dim']}), pooled by "
        f"`{args['global_pool']}`; `tokens` (batch, {arch['num_tokens']}, {arch['embed_dim']})",
        f"- eval features: {arch.get('eval_features', 'not recorded')}",
        "",
        "## Method",
        "",
        f"- objective: `{method['objective']}`, preset: {method['preset']}",
        f"- objective settings: `{json.dumps(method['objective_config'], sort_keys=True)}`",
    ]
    if method.get("training_objective"):
        trained = method["training_objective"]
        lines.append(
            f"- trained as `{trained.get('name')}` with: `{json.dumps(trained, sort_keys=True)}`"
        )
    if method.get("optim") or method.get("train"):
        lines.append(
            f"- optimiser: `{json.dumps(method['optim'], sort_keys=True)}`; "
            f"training: `{json.dumps(method['train'], sort_keys=True)}`"
        )
    stats = dict(method["checkpoint_stats"])
    if "precision" in stats:
        stats["precision"] = _PRECISION.get(str(stats["precision"]), stats["precision"])
    return lines + [f"- {k.replace('_', ' ')}: {_fmt(v)}" for k, v in stats.items()]


def _card_data(meta: dict) -> list[str]:
    lines = [
        "",
        "## Training data",
        "",
        "| kind | id | rows | splits | content sha256 | path |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {d['kind']} | `{d['id'][:16]}` | {d.get('rows') or ''} | "
        f"{_fmt(d['split_counts']) if d.get('split_counts') else ''} | "
        f"`{(d.get('content_sha256') or '')[:16]}` | {d['path']} |"
        for d in meta["training_data"]
    ] or ["| (none recorded) | | | | | |"]
    if meta.get("starting_weights"):
        lines += [
            "",
            "## Starting weights",
            "",
            "| setting | content sha256 | file |",
            "|---|---|---|",
        ]
        lines += [
            f"| `{w['setting']}` | `{w['sha256'][:16]}` | {w['path']} |"
            for w in meta["starting_weights"]
        ]
    lines += ["", "## Lineage (back to the raw inputs)", "", "```"]
    lines += [
        f"{'  ' * r['depth']}{r['kind']:<12} {r['id'][:16]}  {r['path']}"
        + (f"  ({r['setting']})" if r.get("setting") else "")
        + ("" if r["found"] else "  [missing]")
        for r in meta["lineage"]
    ]
    lines += ["```", "", "## Evaluation", ""]
    if not meta["eval"]:
        return lines + ["No eval artifact was given (`cxrkit export --eval EVAL_DIR` adds one)."]
    ref = meta["eval"]["artifact"] or {}
    metrics = meta["eval"]["metrics"]
    lines += [f"From eval artifact `{ref.get('id', '')[:16]}` ({ref.get('path', '')})."]
    warnings = metrics.get("warnings") if isinstance(metrics.get("warnings"), list) else []
    lines += [line for note in warnings for line in ("", f"> warning: {note}")]
    lines += [
        "",
        f"n = {metrics.get('n_scored', '?')} scored images, protocol {metrics.get('protocol', '?')}.",
    ]
    summary = meta["eval"].get("summary") or []
    if not summary:
        return lines + ["", "No task produced numbers (see metadata.json under eval.metrics)."]
    columns = list(summary[0])
    lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row.get(c, "") for c in columns) + " |" for row in summary]
    return lines + ["", "Per-class numbers and counts: `metadata.json` under eval.metrics."]


def _card_use(meta: dict, snippets: dict[str, str]) -> list[str]:
    pre = meta["preprocessing"]
    size = pre["input_size"][0]
    lines = ["", "## Preprocessing", ""] + [f"{i}. {s}" for i, s in enumerate(pre["steps"], 1)]
    lines += [
        "",
        "`preprocess.py` in this export applies exactly these steps (numpy, Pillow, torch only):",
        "",
        "```python",
        "from preprocess import preprocess, transform_config",
        f"x = preprocess('image.jpg', **transform_config('.'))  # (1, 1, {size}, {size}) float32",
        "```",
        "",
        f"timm's `create_transform`: {pre['timm_create_transform']}",
    ]
    lines += [
        "",
        "## Formats and load-back checks",
        "",
        "| format | status | max abs diff vs cxrkit | note |",
        "|---|---|---|---|",
    ]
    for name, result in meta["formats"].items():
        diff = result.get("max_abs_diff")
        lines.append(
            f"| {name} | {result['status']} | {'' if diff is None else f'{diff:.3g}'} "
            f"| {result.get('reason') or result.get('path', '')} |"
        )
    for name, code in snippets.items():
        lines += ["", f"### Load with {name}", "", "```python", code, "```"]
    lines += ["", "## Limitations", ""] + [f"- {item}" for item in meta["limitations"]]
    return lines + [
        "",
        f"Checkpoint `{meta['checkpoint']['id'][:16]}`; cxrkit {meta['cxrkit_version']}."
        " Machine-readable: `metadata.json`.",
        "",
    ]


def render_card(meta: dict, snippets: dict[str, str]) -> str:
    """Markdown model card from :func:`build_metadata` output and per-format load snippets."""
    return "\n".join(_card_head(meta) + _card_data(meta) + _card_use(meta, snippets))


def write_card(out_dir: Path, meta: dict, snippets: dict[str, str]) -> None:
    """Write ``README.md`` and ``metadata.json`` into ``out_dir``."""
    (out_dir / "metadata.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    (out_dir / "README.md").write_text(render_card(meta, snippets))
