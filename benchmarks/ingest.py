"""Ingest throughput: `cxrkit ingest` against a naive single-process pydicom + PIL loop.

Run: ``python benchmarks/ingest.py [--copies N] [--image-size PX] [--workers 1,2]
[--repeat N] [--profile]``. Prints plain text: one table of whole-stage throughput, one
per encoding, the worker start-up cost, and with ``--profile`` a cProfile of a
workers=1 run.

Inputs (real data only, from :mod:`cxrkit.io.bundled`, written to a temp dir that is
removed at the end):
- the RG1 adult chest radiograph (CR, 1955x1841, 15-bit) in its four bundled encodings:
  uncompressed (UNCR, UNCI), JPEG 2000 lossless (J2KR) and lossy (J2KI). Each of the
  ``--copies`` copies gets a new SOPInstanceUID *and* a few rows cropped off the top,
  re-encoded in the file's own transfer syntax (lossy at the original's compression
  ratio). The crop matters: ingest also drops inputs whose stored pixels equal an
  earlier input's, so copies differing only in their UID would end up as
  ``duplicate`` rejects and the stage would write fewer rows than the baseline makes;
- the 16 pediatric chest JPEGs, once each.

Protocol:
- naive: for each file, ``pydicom.dcmread(...).pixel_array`` (or ``PIL.Image.open``),
  min-max normalise to [0, 1], PIL bilinear resize of the long side to ``--image-size``,
  ``np.uint8``. One process, nothing written.
- cxrkit: ``cxrkit.stages.ingest.run(IngestConfig(...))`` for each ``--workers`` value,
  timed end to end: planning, worker start-up (spawn), decode + the full intensity
  pipeline (modality/VOI LUT, MONOCHROME1 inversion, percentile window), hashing,
  pseudonyms, chunk Parquet files, shard merge with duplicate check, manifest.
- "ratio vs naive" = cxrkit img/s per worker / naive img/s (target >= 1);
  "scaling" = img/s at w workers / (w x img/s at 1 worker) (target near 1). Both are
  wall-clock figures. "CPU ratio" = naive CPU s / cxrkit CPU s (user + system, worker
  processes included): on a shared, loaded machine it is the steadier figure.
- per encoding: each file's pixel work alone (cxrkit: sniff + ``read_dicom`` /
  ``read_image`` + ``resize_long_side`` + ``quantise``, as ingest calls them) vs the naive
  loop, in CPU ms per image; "stage overhead" = the rest of a workers=1 run's CPU time.
- a short warm-up decodes one file of each kind first, so neither side pays imports;
  ``--repeat N`` keeps the best of N rounds, each round running every measurement once.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.uid import JPEG2000, JPEG2000Lossless, generate_uid

from cxrkit.io import images, intensity, sniff
from cxrkit.io.bundled import pediatric_jpegs, rg1_dicoms
from cxrkit.io.dicom import read_dicom
from cxrkit.stages.ingest import IngestConfig, run

GROUPS = ("uncompressed", "jpeg2000 lossless", "jpeg2000 lossy", "jpeg")


def group_of(path: Path) -> str:
    """The encoding group of a benchmark input file, from its name (see build_inputs)."""
    if path.name.startswith("ped-"):
        return "jpeg"
    if "_J2KR" in path.name:
        return "jpeg2000 lossless"
    return "jpeg2000 lossy" if "_J2KI" in path.name else "uncompressed"


@dataclass(frozen=True)
class Timing:
    """Wall and CPU seconds of one measurement (CPU = user + system, children included)."""

    wall: float
    cpu: float

    def best(self, other: Timing | None) -> Timing:
        """Field-wise minimum: the best of two repeats."""
        if other is None:
            return self
        return Timing(min(self.wall, other.wall), min(self.cpu, other.cpu))


def _cpu_seconds() -> float:
    # os.times() counts children (ingest's workers, once joined) but only in 10 ms ticks;
    # process_time() is exact for this process.
    times = os.times()
    return time.process_time() + times.children_user + times.children_system


def timed(fn, *args) -> tuple[Timing, object]:
    """Call ``fn(*args)``; returns its Timing and its result."""
    wall, cpu = time.perf_counter(), _cpu_seconds()
    result = fn(*args)
    return Timing(time.perf_counter() - wall, _cpu_seconds() - cpu), result


def per_file(fn, files: list[Path], size: int) -> dict[Path, Timing]:
    """Timing of ``fn(path, size)`` for each file, one process."""
    return {path: timed(fn, path, size)[0] for path in files}


def total(timings: dict[Path, Timing] | list[Timing]) -> Timing:
    """Sum of timings."""
    values = list(timings.values()) if isinstance(timings, dict) else timings
    return Timing(sum(t.wall for t in values), sum(t.cpu for t in values))


# ---------------------------------------------------------------- inputs


def _write_copy(source: Path, pixels: np.ndarray, crop: int, copy: int, target: Path) -> None:
    """One RG1 copy: ``crop`` rows removed from the top, new UIDs, same transfer syntax."""
    ds = pydicom.dcmread(source)
    syntax = ds.file_meta.TransferSyntaxUID
    cropped = np.ascontiguousarray(pixels[crop:])  # (H - crop, W)
    uid = generate_uid(entropy_srcs=[source.name, str(copy), "cxrkit-benchmark"])
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.Rows = cropped.shape[0]
    if syntax == JPEG2000Lossless:
        ds.compress(JPEG2000Lossless, cropped)
    elif syntax == JPEG2000:
        # Keep the original's compression ratio so decode cost stays comparable.
        ratio = pixels.size * pixels.itemsize / len(ds.PixelData)
        ds.compress(JPEG2000, cropped, j2k_cr=[round(ratio, 1)])
    else:
        ds.PixelData = cropped.astype(pixels.dtype).tobytes()
    ds.save_as(target, enforce_file_format=True)


def build_inputs(directory: Path, copies: int) -> list[Path]:
    """Write the benchmark inputs into ``directory``; returns their paths, sorted."""
    directory.mkdir(parents=True)
    dicoms = rg1_dicoms()
    # All copies start from the lossless pixels (the lossy original was made from them).
    pixels = pydicom.dcmread(dicoms["RG1_UNCR"]).pixel_array  # (1955, 1841) uint16
    names = sorted(dicoms)
    for copy in range(copies):
        for k, name in enumerate(names):
            crop = 1 + copy * len(names) + k  # unique per file: no two stored images alike
            target = directory / f"c{copy:03d}-{name}.dcm"
            _write_copy(dicoms[name], pixels, crop, copy, target)
    for jpeg in pediatric_jpegs():
        shutil.copyfile(jpeg, directory / f"ped-{jpeg.name}")
    return sorted(directory.iterdir())


# ---------------------------------------------------------------- naive baseline


def naive_one(path: Path, size: int) -> np.ndarray:
    """Decode, min-max normalise, resize the long side to ``size``, uint8. Returns (h, w)."""
    if path.suffix == ".dcm":
        arr = pydicom.dcmread(path).pixel_array
    else:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("L"))
    arr = arr.astype(np.float32)
    low, high = float(arr.min()), float(arr.max())
    arr = (arr - low) / max(high - low, 1e-6)
    height, width = arr.shape
    scale = size / max(height, width)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = Image.fromarray(arr, mode="F").resize(new_size, Image.Resampling.BILINEAR)
    return (np.asarray(small) * 255 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------- cxrkit


def cxrkit_pass(
    sources: list[str], size: int, workers: int, out: Path, salt: Path
) -> tuple[Timing, dict]:
    """Timing of one full ingest run and its stats; the output is deleted after."""
    cfg = IngestConfig(
        sources=sources, out=str(out), image_size=size, workers=workers, salt_file=str(salt)
    )
    timing, artifact = timed(run, cfg)
    stats = dict(artifact.stats)
    shutil.rmtree(out)
    return timing, stats


def pipeline_one(path: Path, size: int) -> np.ndarray:
    """cxrkit's per-file pixel work, as ingest calls it: sniff, decode + intensity, resize, quantise."""
    if sniff.sniff_format(path) == "dicom":
        decoded = read_dicom(path)
    else:
        decoded = images.read_image(path)
    return intensity.quantise(intensity.resize_long_side(decoded.pixels, size), "uint8")


def startup_seconds() -> float:
    """Wall time of a fresh interpreter importing what an ingest worker imports.

    A spawned worker pays about this before its first file (plus pickling its state).
    """
    code = "import cxrkit.stages.ingest, cxrkit.io.dicom, cxrkit.io.decode, cxrkit.io.deid"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def profile_pass(sources: list[str], size: int, out: Path, salt: Path, top: int = 18) -> str:
    """cProfile of a workers=1 ingest run (all in this process): top functions by own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    cxrkit_pass(sources, size, 1, out, salt)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    lines = text.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(lines[start:])


# ---------------------------------------------------------------- report


def _row(cells: list[object], widths: list[int]) -> str:
    pairs = enumerate(zip(cells, widths, strict=True))
    return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in pairs)


def table(header: list[str], rows: list[list[object]]) -> str:
    """A plain-text table, first column left-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [_row(header, widths), _row(["-" * w for w in widths], widths)]
    return "\n".join(lines + [_row(r, widths) for r in rows])


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


STAGE_HEADER = (
    "mode|workers|images|seconds|img/s|img/s/worker|ratio vs naive|scaling vs w=1|"
    "CPU s|img/CPU-s|CPU ratio"
)
GROUP_HEADER = "encoding|images|naive CPU ms/img|cxrkit CPU ms/img|ratio|naive wall|cxrkit wall"


def stage_table(n_images: int, naive: Timing, runs: dict[int, Timing]) -> str:
    """The main table: naive, then cxrkit for each worker count.

    "ratio" and "scaling" use wall time; "CPU ratio" = naive CPU s / cxrkit CPU s
    (all processes), which background load on a shared machine hardly moves.
    """
    naive_rate = n_images / naive.wall
    rate_1 = n_images / runs[1].wall if 1 in runs else None
    rows = [["naive pydicom+PIL", 1, n_images, _fmt(naive.wall), _fmt(naive_rate)]]
    rows[0] += [_fmt(naive_rate), "1.00", "-", _fmt(naive.cpu), _fmt(n_images / naive.cpu), "1.00"]
    for workers, timing in sorted(runs.items()):
        rate = n_images / timing.wall
        scaling = rate / (workers * rate_1) if rate_1 else None
        row = ["cxrkit ingest", workers, n_images, _fmt(timing.wall), _fmt(rate)]
        row += [_fmt(x) for x in (rate / workers, rate / workers / naive_rate, scaling)]
        rows.append(row + [_fmt(x) for x in (timing.cpu, n_images / timing.cpu)])
        rows[-1].append(_fmt(naive.cpu / timing.cpu))
    return table(STAGE_HEADER.split("|"), rows)


def group_table(naive: dict[Path, Timing], pipeline: dict[Path, Timing]) -> str:
    """Per-encoding cost per file: the naive loop vs cxrkit's pixel pipeline (one process)."""
    rows = []
    for group in GROUPS:
        paths = [p for p in naive if group_of(p) == group]
        if not paths:
            continue
        ours, theirs, n = (
            total([pipeline[p] for p in paths]),
            total([naive[p] for p in paths]),
            len(paths),
        )
        rows.append([group, n, _fmt(1000 * theirs.cpu / n, 1), _fmt(1000 * ours.cpu / n, 1)])
        rows[-1] += [_fmt(theirs.cpu / ours.cpu), _fmt(theirs.wall, 1), _fmt(ours.wall, 1)]
    return table(GROUP_HEADER.split("|"), rows)


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=6, help="copies of each RG1 encoding")
    parser.add_argument("--image-size", type=int, default=512, help="stored long side (px)")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--no-by-format", action="store_true", help="skip the per-encoding pass")
    parser.add_argument("--repeat", type=int, default=1, help="best of N rounds (noisy hosts)")
    parser.add_argument("--profile", action="store_true", help="cProfile a workers=1 run")
    parser.add_argument("--tmp", default=None, help="parent of the temp dir (default: system)")
    args = parser.parse_args(argv)
    args.workers = sorted({int(w) for w in args.workers.split(",") if w.strip()})
    if min(args.copies, args.repeat, *args.workers, 1) < 1 or not args.workers:
        parser.error("--copies, --repeat and every --workers value must be >= 1")
    return args


def _header(args: argparse.Namespace, files: list[Path], build_s: float) -> str:
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for path in files:
        counts[group_of(path)] += 1
        sizes[group_of(path)] += path.stat().st_size
    mix = ", ".join(f"{counts[g]} {g} ({sizes[g] / 1e6:.1f} MB)" for g in GROUPS if counts[g])
    return (
        f"machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}"
        f"\nversions: pydicom {pydicom.__version__}, numpy {np.__version__}, "
        f"Pillow {Image.__version__}\n"
        f"inputs: {len(files)} images = {mix}; built in {build_s:.1f} s\n"
        f"image size: {args.image_size} px long side, uint8; workers: {args.workers}"
    )


def _best(old: dict, new: dict) -> dict:
    """Merge Timing dicts keeping the best of the two for a key present in both."""
    return old | {key: value.best(old.get(key)) for key, value in new.items()}


def measure(args: argparse.Namespace, files: list[Path], tmp: Path) -> tuple[dict, dict, dict]:
    """Best-of-``--repeat`` Timings: naive per file, cxrkit pipeline per file, stage runs.

    Each repeat runs every measurement once, in turn, so background load hits all alike.
    """
    salt = tmp / "salt.hex"
    salt.write_text(secrets.token_hex(32))  # made here: ingest would warn that it made one
    for group in GROUPS:  # warm-up: imports, decoder plugins, first-call caches
        path = next(p for p in files if group_of(p) == group)
        naive_one(path, args.image_size)
        pipeline_one(path, args.image_size)
    naive: dict[Path, Timing] = {}
    pipeline: dict[Path, Timing] = {}
    runs: dict[int, Timing] = {}
    for _ in range(args.repeat):
        naive = _best(naive, per_file(naive_one, files, args.image_size))
        for workers in args.workers:
            out = tmp / f"out-w{workers}"
            timing, stats = cxrkit_pass([str(tmp / "in")], args.image_size, workers, out, salt)
            runs = _best(runs, {workers: timing})
            if stats.get("rows") != len(files):
                print(
                    f"warning: workers={workers}: {stats.get('rows')} rows of {len(files)} "
                    f"inputs; rejects {stats.get('rejects_by_reason')}"
                )
        if not args.no_by_format:
            pipeline = _best(pipeline, per_file(pipeline_one, files, args.image_size))
    return naive, pipeline, runs


def benchmark(args: argparse.Namespace, tmp: Path) -> None:
    """Build inputs, run every measurement, print the report."""
    start = time.perf_counter()
    files = build_inputs(tmp / "in", args.copies)
    print(_header(args, files, time.perf_counter() - start), flush=True)
    if max(args.workers) > (os.cpu_count() or 1):
        print(f"note: more workers than the {os.cpu_count()} CPUs here", flush=True)
    naive, pipeline, runs = measure(args, files, tmp)
    print("\nwhole stage (cxrkit timed end to end, Parquet included)")
    print(stage_table(len(files), total(naive), runs), flush=True)
    if pipeline:
        print(
            "\nper encoding, per-file pixel work only (cxrkit: sniff + read_dicom/read_image"
            " + resize_long_side + quantise; no hashing, pseudonyms or Parquet); wall in s"
        )
        print(group_table(naive, pipeline))
        if 1 in runs:
            rest = runs[1].cpu - total(pipeline).cpu
            print(
                f"stage overhead at workers=1 (stage CPU s - pixel-work CPU s): {rest:.2f} s "
                f"= {1000 * rest / len(files):.1f} ms/img"
            )
    print(
        f"worker start-up (fresh interpreter importing the ingest modules): "
        f"{startup_seconds():.2f} s wall"
    )
    if args.profile:
        print("\ncProfile of cxrkit ingest, workers=1, all inputs (top by own time)")
        salt = tmp / "salt.hex"
        print(profile_pass([str(tmp / "in")], args.image_size, tmp / "out-profile", salt))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="cxrkit-bench-ingest-", dir=args.tmp))
    try:
        benchmark(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
