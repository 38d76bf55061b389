"""GPU throughput per method preset: images/s, data wait, peak memory, FLOPs and MFU.

For each preset (default: mae, hd-mae, maco, mmclip, m3ae, those whose
objective is registered) the objective is built exactly as `cxrkit pretrain`
builds it (``cxrkit.config.resolve`` + ``cxrkit.stages.pretrain.build``) and
stepped by the real ``cxrkit.train.loop.Trainer`` (fused AdamW on CUDA,
Accelerate autocast: bf16 on CUDA, fp32 on CPU; ``train.compile`` on and off
with ``--compile``). Batches come from the real Parquet loader: a dataset
artifact written in a temp dir from the real pediatric JPEGs (random crops so
rows differ) with real IU report texts, read through the pretrain stage's own
ShardDataset construction (``stages.pretrain._shard_dataset``, private, called
here on purpose so the benchmark cannot drift from the stage) and
``cxrkit.io.shards.make_loader`` with the preset's ``data.num_workers``.
Presets that need annotations (contours, entities, prompts) get them from
``cxrkit.stages.annotate`` run on that dataset.

Per preset and compile setting it prints: images/s, seconds per step, the
fraction of the step spent blocked in ``next(loader)`` (each step ends with a
device synchronise, so this is time the accelerator waits for data), peak
memory (``torch.cuda.max_memory_allocated``; on CPU the process's peak RSS,
which only grows), FLOPs per optimiser step (forward + backward, counted by
``torch.utils.flop_counter.FlopCounterMode`` on one eager step; the optimiser's
element-wise work is not counted) and MFU = FLOPs / step time / the device's
dense bf16 peak. One optimiser step per micro-batch (``optim.accumulate`` = 1):
the figures are per micro-batch of ``--batch`` images.

Run on a GPU (sized for <= 5 min on one H100/H200; not yet timed on one):
  python benchmarks/gpu.py --json gpu.json
CPU smoke test (tiny shapes, the demo presets' models):
  OMP_NUM_THREADS=1 python benchmarks/gpu.py --tiny --presets mae --steps 2
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

DEFAULT_PRESETS = ("mae", "hd-mae", "maco", "mmclip", "m3ae")

# Dense bf16 peak TFLOPS by device name (first match wins: "A100" before "A10", "L40S" before "L4").
PEAK_BF16_TFLOPS = (
    ("H200", 989.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("A10", 125.0),
    ("L4", 121.0),
)

# He et al. 2022 MAE ViT-B/16 at 224 px, mask 0.75, 8 x 512 decoder: about 19 GFLOP per
# image forward (encoder on 50 tokens ~8.5, decoder on 197 tokens ~10) x 3 for fwd + bwd.
MAE_VITB_ANCHOR_GFLOP = 57.0

# --tiny: the demo presets' models (vit_tiny-sized, 32-64 px) at these settings.
TINY_SETS = ["data.num_workers=0", "data.shuffle_buffer=8"]


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a CUDA device by its name, or None when unknown."""
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


def preset_plan(name: str, tiny: bool) -> tuple[str | None, str]:
    """(preset to resolve, reason it is skipped or ''): tiny runs use the demo-NAME preset."""
    from cxrkit.config import load_preset
    from cxrkit.errors import CxrkitError
    from cxrkit.objectives.base import available

    for preset in (name, f"demo-{name}") if tiny else (name,):
        try:
            table = load_preset(preset)
        except CxrkitError:
            return None, f"no preset {preset!r}" + (" (--tiny runs demo-NAME)" * (preset != name))
        objective = table.get("objective", {}).get("name")
        if objective not in available():
            return None, f"objective {objective!r} is not registered"
    return preset, ""


def make_dataset(root: Path, size: int, count: int):
    """A dataset artifact of ``count`` SIZE x SIZE crops of the real JPEGs with real IU reports."""
    from PIL import Image

    from cxrkit.artifacts import ArtifactWriter
    from cxrkit.io import bundled
    from cxrkit.io.reports import iter_iu_reports
    from cxrkit.io.schema import DATASET_SCHEMA, REJECTS_SCHEMA

    margin = max(8, size // 8)
    bases = []
    for path in bundled.pediatric_jpegs():
        with Image.open(path) as image:
            grey = image.convert("L").resize((size + margin, size + margin), Image.BILINEAR)
            bases.append(np.asarray(grey, dtype=np.uint8))
    reports = []
    for report in iter_iu_reports():
        if report.findings or report.impression:
            reports.append(report)
        if len(reports) >= count:
            break
    rng = np.random.default_rng(0)
    rows = []
    for i in range(count):
        y, x = rng.integers(0, margin + 1, size=2)
        pixels = np.ascontiguousarray(bases[i % len(bases)][y : y + size, x : x + size])
        report = reports[i % len(reports)]
        rows.append(
            {
                "image_id": f"g{i:06d}",
                "study_id": f"s{i:06d}",
                "patient_id": f"p{i:06d}",
                "view": "PA",
                "pixels": pixels.tobytes(),
                "dtype": "uint8",
                "height": size,
                "width": size,
                "orig_height": size,
                "orig_width": size,
                "source_format": "jpeg",
                "report_findings": report.findings,
                "report_impression": report.impression,
                "report_text": report.text,
                "report_source": "iu_xml",
                "split": "train",
            }
        )
    writer = ArtifactWriter(
        root / f"dataset-{size}",
        "dataset",
        {"bench": "gpu", "size": size, "count": count},
        inputs=[{"kind": "raw", "id": "pediatric+iu", "path": "package"}],
    )
    work = writer.begin()
    table = pa.Table.from_pylist(rows, schema=DATASET_SCHEMA)
    pq.write_table(table, work / "shard-00000.parquet", row_group_size=64, compression="zstd")
    pq.write_table(REJECTS_SCHEMA.empty_table(), work / "rejects.parquet")
    return writer.publish()


def needs_annotations(objective: Any) -> bool:
    from cxrkit.io.fields import resolve_fields

    return any(f.requires_annotations for f in resolve_fields(objective.needs))


def annotate(root: Path, dataset, workers: int):
    """Run the annotate stage on the benchmark dataset (entities, labels, contours, prompts)."""
    from cxrkit.stages import annotate as stage

    out = root / f"annotations-{dataset.path.name}"
    return stage.run(stage.AnnotateConfig(dataset=str(dataset.path), out=str(out), workers=workers))


def fused_attention(objective: Any) -> bool | None:
    """True when every timm attention block uses scaled_dot_product_attention (None: none found)."""
    flags = [m.fused_attn for m in objective.modules() if hasattr(m, "fused_attn")]
    return all(flags) if flags else None


def count_flops(trainer: Any, batch: dict) -> int:
    """FLOPs of one eager optimiser step (forward + backward) on ``batch``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        trainer.train_step([batch])
    return int(counter.get_total_flops())


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


def resolve_config(preset: str, args: argparse.Namespace, compile_on: bool, data_sets: list[str]):
    from cxrkit.config import resolve
    from cxrkit.stages.pretrain import PretrainConfig

    cuda = torch.cuda.is_available() and not args.cpu
    sets = [
        "out=unused",
        f"train.precision={'bf16' if cuda else 'fp32'}",
        f"train.compile={'true' if compile_on else 'false'}",
        "optim.accumulate=1",
        *data_sets,
    ]
    if args.tiny:
        sets += TINY_SETS
    if args.batch:
        sets.append(f"data.batch_size={args.batch}")
    if args.image_size:
        sets += [f"data.image_size={args.image_size}", f"model.image_size={args.image_size}"]
    if args.workers is not None:
        sets.append(f"data.num_workers={args.workers}")
    return resolve(PretrainConfig, preset=preset, sets=sets, stage="pretrain")


def run_one(cfg: Any, dataset, annotations, args, flops: int | None) -> dict[str, Any]:
    """Build, warm up and time one preset at one compile setting; returns its row."""
    from cxrkit.io.shards import make_loader
    from cxrkit.stages.pretrain import _shard_dataset, build
    from cxrkit.train.loop import Trainer, make_accelerator

    accelerator = make_accelerator(cfg.train.precision, cpu=args.cpu or None)
    device = accelerator.device
    objective = build(cfg)
    trainer = Trainer(objective, cfg.optim, cfg.train, accelerator)
    data = _shard_dataset(cfg, dataset, objective, accelerator)
    loader = iter(make_loader(data, cfg.data.num_workers, 0, pin_memory=device.type == "cuda"))
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    row: dict[str, Any] = {
        "preset": cfg.preset,
        "objective": cfg.objective["name"],
        "arch": cfg.model.arch,
        "image_size": cfg.data.image_size,
        "batch": cfg.data.batch_size,
        "compile": cfg.train.compile,
        "precision": str(accelerator.mixed_precision),
        "num_workers": cfg.data.num_workers,
        "annotations": annotations is not None,
        "fused_adamw": bool(optimizer.defaults.get("fused")),
        "fused_attn": fused_attention(objective),
        "parameters": int(sum(p.numel() for p in objective.parameters())),
    }
    start = time.perf_counter()
    for _ in range(args.warmup):
        trainer.train_step([next(loader)])
    synchronise(device)
    row["warmup_s"] = time.perf_counter() - start
    if flops is None:  # eager runs count; a compiled run reuses the eager count
        flops = count_flops(trainer, next(loader))
        synchronise(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    waited = 0.0
    images = 0
    start = time.perf_counter()
    for _ in range(args.steps):
        before = time.perf_counter()
        batch = next(loader)
        waited += time.perf_counter() - before
        out = trainer.train_step([batch])
        synchronise(device)
        images += out.images
    total = time.perf_counter() - start
    loss = float(out.losses["loss"])
    step_s = total / args.steps
    row.update(
        {
            "steps": args.steps,
            "images_per_s": images / total,
            "step_s": step_s,
            "data_wait_fraction": waited / total,
            "peak_memory_bytes": peak_memory_bytes(device),
            "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_rss",
            "flops_per_step": flops,
            "gflop_per_image": flops / cfg.data.batch_size / 1e9,
            "tflops_achieved": flops / step_s / 1e12,
            "final_loss": loss,
        }
    )
    peak = args.peak_tflops or (
        peak_tflops(row_device_name(device)) if device.type == "cuda" else None
    )
    row["mfu"] = flops / step_s / (peak * 1e12) if peak else None
    del trainer, objective, loader, data, optimizer, accelerator
    gc.collect()  # the prepared model sits in reference cycles; free it before the next run
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def row_device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def print_row(row: dict[str, Any]) -> None:
    mfu = f"{100 * row['mfu']:5.1f} %" if row.get("mfu") is not None else "    n/a"
    print(
        f"{row['preset']:<12} compile {'on ' if row['compile'] else 'off'} "
        f"batch {row['batch']:>4} @ {row['image_size']:>4}px  "
        f"{row['images_per_s']:9.1f} img/s  {row['step_s'] * 1e3:9.1f} ms/step  "
        f"data wait {100 * row['data_wait_fraction']:5.1f} %  "
        f"peak mem {row['peak_memory_bytes'] / 2**30:6.2f} GiB  "
        f"{row['gflop_per_image']:8.2f} GFLOP/img  {row['tflops_achieved']:8.2f} TFLOPS  MFU {mfu}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(DEFAULT_PRESETS))
    parser.add_argument("--batch", type=int, default=None, help="default: the preset's")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument(
        "--warmup", type=int, default=5, help="untimed steps (compile happens here)"
    )
    parser.add_argument("--image-size", type=int, default=None, help="default: the preset's")
    parser.add_argument("--compile", default="off,on", help="train.compile settings: off,on")
    parser.add_argument("--workers", type=int, default=None, help="default: data.num_workers")
    parser.add_argument("--images", type=int, default=None, help="rows in the dataset")
    parser.add_argument("--annotate-workers", type=int, default=0, help="0 = all cores")
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the bf16 peak")
    parser.add_argument(
        "--tiny", action="store_true", help="CPU smoke shapes: demo presets, batch 2, 2 steps"
    )
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even with a GPU")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = parser.parse_args(argv)
    if args.tiny:
        args.batch = args.batch or 2
        args.warmup = min(args.warmup, 1)
    args.compile_settings = []
    for word in args.compile.split(","):
        if word.strip() not in ("on", "off"):
            parser.error(f"--compile takes on/off values, got {word!r}")
        args.compile_settings.append(word.strip() == "on")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print the table and return (and with --json write) the results."""
    args = parse_args(argv)
    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda") if cuda else torch.device("cpu")
    name = row_device_name(device)
    peak = args.peak_tflops or (peak_tflops(name) if cuda else None)
    print(f"device: {name}; dense bf16 peak: {f'{peak:g} TFLOPS' if peak else 'n/a'}")
    print(f"torch {torch.__version__}; precision {'bf16 autocast' if cuda else 'fp32'}")
    result: dict[str, Any] = {"device": name, "peak_tflops": peak, "rows": [], "skipped": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        datasets: dict[int, Any] = {}
        annotations: dict[int, Any] = {}
        for requested in [p.strip() for p in args.presets.split(",") if p.strip()]:
            preset, reason = preset_plan(requested, args.tiny)
            if preset is None:
                print(f"{requested:<12} skipped: {reason}")
                result["skipped"][requested] = reason
                continue
            probe = resolve_config(preset, args, False, [])
            size = probe.data.image_size
            if size not in datasets:
                count = args.images or max(4 * probe.data.batch_size, 32)
                datasets[size] = make_dataset(root, size, count)
            sets = [f"data.dataset={datasets[size].path}"]
            try:
                with torch.device("meta"):
                    needs = needs_annotations(_build(probe))
            except Exception:  # noqa: BLE001 - a text tower that refuses the meta device
                needs = needs_annotations(_build(probe))
            if needs:
                if size not in annotations:
                    start = time.perf_counter()
                    annotations[size] = annotate(root, datasets[size], args.annotate_workers)
                    print(f"(annotated {size}-px dataset in {time.perf_counter() - start:.1f} s)")
                sets.append(f"data.annotations={annotations[size].path}")
            flops = None
            for compile_on in sorted(args.compile_settings):  # eager first: it counts FLOPs
                cfg = resolve_config(preset, args, compile_on, sets)
                cfg = dataclasses.replace(cfg, preset=requested)
                row = run_one(cfg, datasets[size], annotations.get(size), args, flops)
                flops = row["flops_per_step"]
                row["device"] = name
                print_row(row)
                result["rows"].append(row)
    attn = {r["preset"]: r["fused_attn"] for r in result["rows"]}
    print(f"scaled-dot-product attention (timm fused_attn) on: {attn}")
    print(f"fused AdamW: {sorted({r['fused_adamw'] for r in result['rows']})}")
    for row in result["rows"]:
        if row["preset"] == "mae" and row["image_size"] == 224 and row["arch"].startswith("vit_b"):
            print(
                f"anchor: MAE ViT-B/16 224 counted {row['gflop_per_image']:.1f} GFLOP/image "
                f"fwd+bwd vs about {MAE_VITB_ANCHOR_GFLOP:g} expected"
            )
            break
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=_finite))
    return result


def _build(cfg: Any):
    from cxrkit.stages.pretrain import build

    return build(cfg)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


if __name__ == "__main__":
    main()
