"""Feature extraction for `cxrkit eval`: batched + cached vs a naive per-image loop.

Builds, in a temp dir, a dataset artifact of N images stored at STORED px long
side (the real pediatric JPEGs, cropped at several offsets so rows differ), and a
random-init 1-channel ViT-B/16 (no hub). Then, in one run:

- naive:   one image at a time (decode, EvalTransform, encoder forward), no cache;
- batched: cxrkit.evaluate.features.extract_features (batches of --batch), cold cache;
- cached:  the same call again, answered from the feature cache.

Prints features/s for each, the batched/naive ratio, and seconds per 1,000 images.
Run: OMP_NUM_THREADS=2 python benchmarks/eval.py [--images 1000] [--naive-images 100]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from cxrkit.artifacts import ArtifactWriter
from cxrkit.io import bundled
from cxrkit.io.schema import DATASET_SCHEMA, REJECTS_SCHEMA


def make_dataset(root: Path, count: int, stored: int):
    """A dataset artifact of ``count`` uint8 images, long side ``stored`` (about 4:5 aspect)."""
    from PIL import Image

    bases = []
    for path in bundled.pediatric_jpegs():
        with Image.open(path) as image:
            grey = image.convert("L").resize((stored + 32, int(stored * 0.8) + 32))
            bases.append(np.asarray(grey, dtype=np.uint8))
    rng = np.random.default_rng(0)
    rows = []
    for i in range(count):
        y, x = rng.integers(0, 33, size=2)
        crop = np.ascontiguousarray(
            bases[i % len(bases)][y : y + int(stored * 0.8), x : x + stored]
        )
        rows.append(
            {"image_id": f"b{i:06d}", "pixels": crop.tobytes(), "dtype": "uint8",
             "height": crop.shape[0], "width": crop.shape[1], "split": "test"}
        )  # fmt: skip
    writer = ArtifactWriter(root / "ds", "dataset", {"bench": count, "stored": stored},
                            inputs=[{"kind": "raw", "id": "bench", "path": "pediatric"}])  # fmt: skip
    work = writer.begin()
    table = pa.Table.from_pylist(rows, schema=DATASET_SCHEMA)
    pq.write_table(table, work / "shard-00000.parquet", row_group_size=256, compression="zstd")
    pq.write_table(REJECTS_SCHEMA.empty_table(), work / "rejects.parquet")
    return writer.publish()


def naive(encoder, dataset, transform, limit: int, device) -> tuple[float, np.ndarray]:
    """One image per forward pass, nothing cached. Returns (seconds, features)."""
    from cxrkit.evaluate.features import iter_images

    start = time.perf_counter()
    out = []
    with torch.no_grad():
        for i, image in enumerate(iter_images(dataset)):
            if i == limit:
                break
            x = transform(torch.from_numpy(image), None)[0][None].to(device)  # (1, 1, S, S)
            out.append(encoder(x).cpu().numpy())
    return time.perf_counter() - start, np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images for the batched path")
    parser.add_argument("--naive-images", type=int, default=100, help="images for the naive loop")
    parser.add_argument("--stored", type=int, default=512, help="stored long side in pixels")
    parser.add_argument("--size", type=int, default=224, help="model input size")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--arch", default="vit_base_patch16_224")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from cxrkit.evaluate.encoders import pooled
    from cxrkit.evaluate.features import extract_features, read_rows
    from cxrkit.models.tower_configs import VisionConfig
    from cxrkit.models.vision import build_vision_encoder
    from cxrkit.vision.transforms import EvalTransform

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="cxrkit-bench-eval-") as tmp:
        os.environ["CXRKIT_CACHE"] = str(Path(tmp) / "cache")
        dataset = make_dataset(Path(tmp), args.images, args.stored)
        torch.manual_seed(0)
        encoder = build_vision_encoder(VisionConfig(arch=args.arch, image_size=args.size)).eval()
        encoder = encoder.to(device)
        transform = EvalTransform(args.size)
        rows = read_rows(dataset)
        print(f"{args.arch} at {args.size} px, stored {args.stored} px, device {device}, "
              f"torch threads {torch.get_num_threads()}", file=sys.stderr)  # fmt: skip

        naive_s, naive_features = naive(encoder, dataset, transform, args.naive_images, device)
        naive_rate = len(naive_features) / naive_s

        def encode(x: torch.Tensor) -> torch.Tensor:
            return pooled(encoder, x)

        start = time.perf_counter()
        features = extract_features(encode, dataset, rows, transform, args.batch, device, "bench")
        batched_s = time.perf_counter() - start
        start = time.perf_counter()
        again = extract_features(encode, dataset, rows, transform, args.batch, device, "bench")
        cached_s = time.perf_counter() - start

    agree = np.abs(features[: len(naive_features)] - naive_features).max()
    batched_rate = args.images / batched_s
    print(f"naive   (batch 1, no cache): {naive_rate:8.1f} features/s  ({len(naive_features)} images, "
          f"{1000 / naive_rate:.1f} s per 1,000, extrapolated)")  # fmt: skip
    print(f"batched (batch {args.batch}, cold):    {batched_rate:8.1f} features/s  ({args.images} images in "
          f"{batched_s:.1f} s; {1000 / batched_rate:.1f} s per 1,000)")  # fmt: skip
    print(
        f"cached  (second run):       {args.images / cached_s:8.0f} features/s  ({cached_s:.3f} s)"
    )
    print(f"ratio batched / naive: {batched_rate / naive_rate:.2f}x; "
          f"cached / naive: {args.images / cached_s / naive_rate:.0f}x; "
          f"max |batched - naive| feature difference {agree:.2e}")  # fmt: skip
    assert np.array_equal(features, again)


if __name__ == "__main__":
    main()
