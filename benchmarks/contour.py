"""Chest-contour throughput (cxrkit.vision.contour) and transform cost (cxrkit.vision.transforms).

Inputs: the 17 real radiographs shipped offline (the adult RG1 DICOM and the
16 pediatric JPEGs), decoded by the ingest pipeline and stored as ingest would
store them (long side --size, uint8; the DICOM as uint16). Times, in one
process on one core:

- contour:        ``chest_contour`` as shipped (works on a --work-size copy);
- full-res:       the same algorithm run at the stored resolution (no working copy);
- plain Otsu:     one Otsu threshold + largest component, the naive baseline
                  (fast, but it returns the body, not the thorax);

and prints images/s, the ratios, and how many of the 17 got quality "ok".
Then the per-image cost of TrainTransform / EvalTransform at --out px from the
same stored images (with the contour mask for the train transform).
Run: OMP_NUM_THREADS=1 python benchmarks/contour.py [--size 512] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import ndimage

from cxrkit.io import bundled
from cxrkit.io.dicom import read_dicom
from cxrkit.io.images import read_image
from cxrkit.io.intensity import quantise, resize_long_side
from cxrkit.vision.contour import WORK_SIZE, chest_contour
from cxrkit.vision.morphology import otsu_threshold
from cxrkit.vision.transforms import AugmentConfig, EvalTransform, TrainTransform


def stored_images(size: int) -> list[np.ndarray]:
    """The 17 real radiographs at `size` long side, as a dataset would store them."""
    pixels = [read_dicom(bundled.rg1_dicoms()["RG1_UNCR"]).pixels]
    dtypes = ["uint16"] + ["uint8"] * len(bundled.pediatric_jpegs())
    pixels += [read_image(path).pixels for path in bundled.pediatric_jpegs()]
    return [quantise(resize_long_side(p, size), d) for p, d in zip(pixels, dtypes, strict=True)]


def plain_otsu(image: np.ndarray) -> np.ndarray:
    """Naive baseline: global Otsu threshold, largest bright component, holes filled."""
    values = image.astype(np.float32)
    values = (values - values.min()) / max(float(values.max() - values.min()), 1e-6)
    mask = values > otsu_threshold(values.ravel())
    labels, count = ndimage.label(mask)
    if count > 1:
        mask = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    return ndimage.binary_fill_holes(mask)


def rate(function, images: list[np.ndarray], repeat: int) -> tuple[float, float]:
    """(images per CPU-second, images per wall-second) over `repeat` passes."""
    function(images[0])  # warm-up (imports, caches)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(repeat):
        for image in images:
            function(image)
    count = repeat * len(images)
    return count / (time.process_time() - cpu), count / (time.perf_counter() - wall)


def per_image_ms(function, inputs: list, repeat: int) -> float:
    function(*inputs[0])
    cpu = time.process_time()
    for _ in range(repeat):
        for args in inputs:
            function(*args)
    return 1e3 * (time.process_time() - cpu) / (repeat * len(inputs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="stored long side (px)")
    parser.add_argument("--out", type=int, default=224, help="transform output size (px)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = stored_images(args.size)
    print(f"{len(images)} real radiographs at {args.size} px long side, 1 thread")

    ok = sum(chest_contour(image).quality == "ok" for image in images)
    shipped_cpu, shipped_wall = rate(chest_contour, images, args.repeat)
    full_cpu, full_wall = rate(lambda im: chest_contour(im, work_size=max(im.shape)), images, 1)
    otsu_cpu, otsu_wall = rate(plain_otsu, images, args.repeat)
    print(
        f"contour (work {WORK_SIZE} px):  {shipped_cpu:7.1f} img/s/core  {shipped_wall:7.1f} wall"
    )
    print(f"same at full resolution:   {full_cpu:7.1f} img/s/core  {full_wall:7.1f} wall")
    print(f"plain Otsu baseline:       {otsu_cpu:7.1f} img/s/core  {otsu_wall:7.1f} wall")
    print(f"speed-up vs full resolution: {shipped_cpu / full_cpu:.1f}x; "
          f"cost vs plain Otsu: {otsu_cpu / shipped_cpu:.1f}x slower")  # fmt: skip
    full_ok = sum(chest_contour(im, work_size=max(im.shape)).quality == "ok" for im in images)
    print(f"quality ok: {ok}/{len(images)} (at full resolution: {full_ok}/{len(images)})")

    tensors = [torch.from_numpy(image) for image in images]
    masks = [torch.from_numpy(chest_contour(image).mask) for image in images]
    train = TrainTransform(AugmentConfig(), args.out)
    generator = torch.Generator().manual_seed(0)
    with_mask = [(t, m, generator) for t, m in zip(tensors, masks, strict=True)]
    no_mask = [(t, None, generator) for t in tensors]
    repeat = 20 * args.repeat
    print(f"TrainTransform {args.size}->{args.out}: "
          f"{per_image_ms(train, no_mask, repeat):.3f} ms/img, "
          f"{per_image_ms(train, with_mask, repeat):.3f} ms/img with contour (CPU time, 1 core)")  # fmt: skip
    evaluate = EvalTransform(args.out)
    print(f"EvalTransform  {args.size}->{args.out}: "
          f"{per_image_ms(evaluate, no_mask, repeat):.3f} ms/img")  # fmt: skip


if __name__ == "__main__":
    main()
