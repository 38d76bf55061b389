"""Loader throughput: Parquet shards (cxrkit.io.shards) vs PNG files decoded with PIL.

Builds, in a temp dir, N images at SIZE x SIZE from the real pediatric JPEGs
(each JPEG cropped at several offsets so the bytes differ), stored once as a
dataset artifact (raw uint8, zstd) and once as PNG files, then times one
process (one core, no workers) producing normalised float tensors from each:

- parquet: ShardDataset batches (row-group read + frombuffer + normalise + collate);
- png:     PIL open + decode + the same normalise + stack.

Prints img/s for each and the ratio; also the Parquet path with the full
TrainTransform (augmentation) when cxrkit.vision.transforms is installed.
Run: OMP_NUM_THREADS=1 python benchmarks/loader.py [--images 2048] [--size 224]
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
from cxrkit.io.dataset import dataset_shards
from cxrkit.io.schema import DATASET_SCHEMA, REJECTS_SCHEMA
from cxrkit.io.shards import ShardDataset


def normalise(image: torch.Tensor, contour, generator):
    """Decode-only transform: uint8 (H, W) -> float (1, H, W) in [-1, 1]."""
    return image.to(torch.float32)[None].mul_(2.0 / 255.0).sub_(1.0), contour


def make_images(count: int, size: int) -> list[np.ndarray]:
    from PIL import Image

    bases = []
    for path in bundled.pediatric_jpegs():
        with Image.open(path) as image:
            grey = image.convert("L")
            grey.thumbnail((size + 32, size + 32))
            bases.append(np.asarray(grey.resize((size + 32, size + 32)), dtype=np.uint8))
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        y, x = rng.integers(0, 33, size=2)
        out.append(np.ascontiguousarray(bases[i % len(bases)][y : y + size, x : x + size]))
    return out


def write_parquet(root: Path, images: list[np.ndarray]):
    rows = [
        {
            "image_id": f"b{i:06d}",
            "pixels": im.tobytes(),
            "dtype": "uint8",
            "height": im.shape[0],
            "width": im.shape[1],
            "split": "train",
        }
        for i, im in enumerate(images)
    ]
    writer = ArtifactWriter(
        root / "ds",
        "dataset",
        {"bench": len(images)},
        inputs=[{"kind": "raw", "id": "bench", "path": "pediatric"}],
    )
    work = writer.begin()
    table = pa.Table.from_pylist(rows, schema=DATASET_SCHEMA)
    pq.write_table(table, work / "shard-00000.parquet", row_group_size=512, compression="zstd")
    pq.write_table(REJECTS_SCHEMA.empty_table(), work / "rejects.parquet")
    return writer.publish()


def write_pngs(root: Path, images: list[np.ndarray]) -> list[Path]:
    from PIL import Image

    paths = []
    for i, image in enumerate(images):
        path = root / "png" / f"{i:06d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def time_parquet(artifact, count: int, batch: int, transform) -> tuple[float, float]:
    data = ShardDataset(
        dataset_shards(artifact), transform=transform, batch_size=batch, shuffle_buffer=256, seed=0
    )
    it = iter(data)
    next(it)  # index built, files open
    start, cpu = time.perf_counter(), time.process_time()
    seen = 0
    while seen < count:
        seen += next(it)["image"].shape[0]
    return seen / (time.process_time() - cpu), seen / (time.perf_counter() - start)


def time_png(paths: list[Path], batch: int) -> tuple[float, float]:
    from PIL import Image

    order = np.random.default_rng(0).permutation(len(paths))
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(order), batch):
        tensors = []
        for j in order[i : i + batch]:
            with Image.open(paths[j]) as image:
                array = np.asarray(image.convert("L"), dtype=np.uint8)
            tensors.append(normalise(torch.from_numpy(array.copy()), None, None)[0])
        torch.stack(tensors)
    return len(order) / (time.process_time() - cpu), len(order) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        images = make_images(args.images, args.size)
        artifact = write_parquet(root, images)
        paths = write_pngs(root, images)
        parquet_cpu, parquet_wall = time_parquet(artifact, args.images, args.batch, normalise)
        png_cpu, png_wall = time_png(paths, args.batch)
        print(
            f"images {args.images} at {args.size}x{args.size}, batch {args.batch}, 1 process, "
            f"torch threads 1, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; "
            "img/s per CPU-second (what one core does) and per wall-second (includes waiting "
            "for a busy machine)"
        )
        print(
            f"parquet (cxrkit.io.shards): {parquet_cpu:8.0f} img/s/core  {parquet_wall:8.0f} wall"
        )
        print(f"png files (PIL):            {png_cpu:8.0f} img/s/core  {png_wall:8.0f} wall")
        print(f"ratio parquet / png:        {parquet_cpu / png_cpu:8.2f}x")
        try:
            from cxrkit.vision.transforms import AugmentConfig, TrainTransform
        except ImportError:
            print(
                "(cxrkit.vision.transforms not installed: skipping the augmented run)",
                file=sys.stderr,
            )
            return
        augmented, augmented_wall = time_parquet(
            artifact, args.images, args.batch, TrainTransform(AugmentConfig(), args.size)
        )
        print(
            f"parquet + TrainTransform:   {augmented:8.0f} img/s/core  {augmented_wall:8.0f} wall"
        )


if __name__ == "__main__":
    main()
