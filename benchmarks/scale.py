"""Peak memory and CPU per image of ingest, annotate and the pretrain loader against corpus size.

Run: ``python benchmarks/scale.py [--sizes 200,400] [--image-size 128] [--work DIR]``.

For each size N it builds a synthetic MIMIC-CXR tree of N DICOMs replicated from the
real RG1 chest radiograph (``cxrkit.io.bundled``): ``files/pNN/pXXXXXXXX/sXXXXXXXX/
<sop>.dcm`` with the study's report beside the study folder (``sXXXXXXXX.txt``), so
ingest attaches reports the way it does for MIMIC-CXR. Each copy gets new Study,
Series and SOP Instance UIDs and a new patient name and id (so new pseudonyms after
ingest), 2 images per study and 2 studies per patient. To fit 50k files in disk and
time the pixels are the radiograph downscaled to ``--source-size`` on the long side
(default 160, so ~48 kB files, uncompressed 16-bit) plus faint per-copy noise (without
it every copy stores the same pixels and ingest drops them as duplicates). Reports are
the real IU reports (``torchxrayvision``), cycled, written MIMIC style (FINDINGS: /
IMPRESSION:).

Then, each in its own subprocess, so that the peak RSS (``ru_maxrss`` from ``wait4``)
and the CPU time are that stage's alone:

- ``ingest``: ``cxrkit ingest ROOT/files --out ds --image-size S --workers 1``;
- ``annotate``: ``cxrkit annotate ds --out ann --workers 1`` (entities, labels, contours);
- ``loader``: one pass over the train split through ``cxrkit.io.shards.ShardDataset`` +
  ``make_loader`` (the pretrain loader), with the annotation fields the image-text
  objectives read (contour, labels, entities, text) and the pretrain train transform;
- optional (``--stages``): ``partitions`` (``--partitions K`` ingests of one partition
  each, ``--num-shards K --shard-index i``; CPU summed, RSS the largest) and ``merge``
  (``cxrkit ingest-merge`` of those partitions).

It prints wall s, CPU ms per image (per image the stage handled: the loader's per
train-split image it read) and peak RSS per stage and size, and the ratio of the
largest size's RSS to the smallest's (flat = 1.0). Peak RSS is the largest of the
stage's processes (``ru_maxrss`` covers the waited-for children as a maximum, not a
sum): for ingest, whose decoding runs in one spawned worker beside the main process,
the larger of the two, not their total. ``--code DIR`` runs the stages
from another checkout (to compare before and after a change on the same data);
``--work DIR`` keeps the generated corpora and artifacts there (re-used when present)
instead of a temp dir removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
IMAGES_PER_STUDY = 2
STUDIES_PER_PATIENT = 2


# ---------------------------------------------------------------- corpus
def _reports(limit: int = 4000) -> list[str]:
    """Real IU report texts, MIMIC style (sections as headers)."""
    from cxrkit.io.reports import iter_iu_reports

    texts = []
    for report in iter_iu_reports():
        parts = [f"FINDINGS: {report.findings}" if report.findings else "",
                 f"IMPRESSION: {report.impression}" if report.impression else ""]  # fmt: skip
        text = "\n\n".join(p for p in parts if p)
        if text:
            texts.append(text)
        if len(texts) >= limit:
            break
    return texts


def _template(source_size: int):
    """The RG1 radiograph (uncompressed) downscaled so its long side is ``source_size``."""
    import pydicom
    from PIL import Image

    from cxrkit.io.bundled import rg1_dicoms

    ds = pydicom.dcmread(rg1_dicoms()["RG1_UNCR"])
    pixels = ds.pixel_array
    scale = source_size / max(pixels.shape)
    shape = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
    small = np.asarray(Image.fromarray(pixels.astype(np.int32)).resize(shape, Image.BILINEAR))
    small = small.astype(np.uint16)
    ds.Rows, ds.Columns = small.shape
    ds.PixelData = small.tobytes()
    return ds, small


def make_corpus(root: Path, count: int, source_size: int, seed: int = 0) -> dict:
    """Write ``count`` DICOMs + study reports under ``root/files`` (MIMIC layout). Returns info."""
    from pydicom.uid import generate_uid

    ds, base = _template(source_size)
    reports = _reports()
    rng = np.random.default_rng(seed)
    span = int(base.max()) - int(base.min())
    amplitude = max(2, span // 50)  # ~2 % of the range: every copy stores different pixels
    start, size = time.monotonic(), 0
    for i in range(count):
        study_index, patient_index = (
            i // IMAGES_PER_STUDY,
            i // (IMAGES_PER_STUDY * STUDIES_PER_PATIENT),
        )
        patient = f"p{10000000 + patient_index}"
        study = f"s{50000000 + study_index}"
        folder = root / "files" / patient[:3] / patient / study
        if i % IMAGES_PER_STUDY == 0:
            folder.mkdir(parents=True, exist_ok=True)
            text = reports[study_index % len(reports)]
            (folder.parent / f"{study}.txt").write_text(text + "\n")
        noise = rng.integers(0, amplitude, size=base.shape, dtype=np.uint16)
        ds.PixelData = np.minimum(base.astype(np.uint32) + noise, 65535).astype(np.uint16).tobytes()
        sop = generate_uid(entropy_srcs=["scale-sop", str(seed), str(i)])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.StudyInstanceUID = generate_uid(entropy_srcs=["scale-study", str(seed), study])
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=["scale-series", str(seed), study])
        ds.PatientName = f"Scale^Patient{patient_index}"
        ds.PatientID = f"SCALE{patient_index:08d}"
        path = folder / f"{sop}.dcm"
        ds.save_as(path, enforce_file_format=True)
        size += path.stat().st_size
    return {"files": count, "bytes": size, "seconds": round(time.monotonic() - start, 1),
            "source_shape": list(base.shape)}  # fmt: skip


# ---------------------------------------------------------------- measured stages
def measure(command: list[str], env: dict, log: Path, cwd: Path | None = None) -> dict:
    """Run ``command`` (in ``cwd``) to completion, its output to ``log``; its wall s, CPU s
    and peak RSS (MiB) from wait4. Raises RuntimeError with the log's tail if it fails."""
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        tail = log.read_text()[-2000:]
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}:\n{tail}")
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "rss_mib": usage.ru_maxrss / 1024,
    }  # fmt: skip  (Linux: ru_maxrss in KiB)


def loader_pass(dataset: str, annotations: str, image_size: int, batch: int) -> dict:
    """One pass over the train split through the pretrain loader; returns counts."""
    from cxrkit.artifacts import open_artifact
    from cxrkit.io.dataset import dataset_shards
    from cxrkit.io.shards import ShardDataset, make_loader
    from cxrkit.vision.transforms import AugmentConfig, TrainTransform

    before = _rss_mib()
    data = ShardDataset(
        dataset_shards(open_artifact(dataset, kind="dataset")),
        transform=TrainTransform(AugmentConfig(), image_size),
        batch_size=batch,
        needs=frozenset({"image", "contour", "labels", "entities", "text"}),
        split="train",
        annotations=open_artifact(annotations, kind="annotations"),
        loop=False,
    )
    # What the join state costs for the whole pass (the index of the annotations).
    built = _rss_mib() - before
    images = entities = 0
    for item in make_loader(data, num_workers=0):
        images += int(item["image"].shape[0])
        entities += sum(len(e) for e in item["entities"])
    result = {"images": images, "entities": entities, "dataset_built_mib": built}
    print(json.dumps(result))
    return result


def _rss_mib() -> float:
    """Current resident set size of this process (Linux /proc), MiB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_size(count: int, args: argparse.Namespace, work: Path, env: dict) -> dict:
    """Generate (or reuse) a corpus of ``count`` images and measure each stage on it."""
    root = work / f"corpus-{count}"
    marker = root / "corpus.json"
    if marker.is_file():
        corpus = json.loads(marker.read_text())
    else:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        corpus = make_corpus(root, count, args.source_size)
        marker.write_text(json.dumps(corpus))
    tag = args.tag or "run"
    ds, ann = root / f"ds-{args.dataset_tag or tag}", root / f"ann-{tag}"
    python = [sys.executable]
    groups = (
        ["--set", f"row_group_bytes={int(args.row_group_mb * 2**20)}"] if args.row_group_mb else []
    )
    stages = {
        "ingest": python + ["-m", "cxrkit", "ingest", str(root / "files"), "--out", str(ds),
                            "--image-size", str(args.image_size), "--workers", "1",
                            "--salt-file", str(work / "salt.hex"), "--force", *groups],
        "annotate": python + ["-m", "cxrkit", "annotate", str(ds), "--out", str(ann),
                              "--workers", "1", "--force"],
        "loader": python + [str(Path(__file__).resolve()), "--loader-pass", str(ds), str(ann),
                            "--image-size", str(args.loader_size)],
    }  # fmt: skip
    parts = [root / f"part-{tag}-{i}" for i in range(args.partitions)]
    stages["partitions"] = [
        stages["ingest"][:6] + [str(p), *stages["ingest"][7:], "--num-shards",
                                str(args.partitions), "--shard-index", str(i)]
        for i, p in enumerate(parts)
    ]  # fmt: skip
    stages["merge"] = python + ["-m", "cxrkit", "ingest-merge", *map(str, parts), "--out",
                                str(root / f"merged-{tag}"), "--force"]  # fmt: skip
    result = {"images": count, "corpus": corpus, "stages": {}}
    for name in args.stages:
        if name == "partitions":  # one ingest per partition, in turn: CPU summed, RSS the max
            runs = [measure(c, env, root / f"{name}-{tag}-{i}.log")
                    for i, c in enumerate(stages[name])]  # fmt: skip
            figures = {"wall_s": sum(r["wall_s"] for r in runs),
                       "cpu_s": sum(r["cpu_s"] for r in runs),
                       "rss_mib": max(r["rss_mib"] for r in runs)}  # fmt: skip
        else:
            figures = measure(stages[name], env, root / f"{name}-{tag}.log")
        if name == "loader":  # the pass prints its counts last, as one JSON line
            last = (root / f"{name}-{tag}.log").read_text().strip().splitlines()[-1]
            figures.update(json.loads(last))
        # Per image the stage handled: the loader reads the train split, not all `count`.
        handled = figures["images"] if name == "loader" else count
        figures["cpu_ms_per_image"] = 1000 * figures["cpu_s"] / max(1, handled)
        result["stages"][name] = figures
        print(f"  {count:>7} {name:<9} wall {figures['wall_s']:7.1f} s  "
              f"cpu {figures['cpu_ms_per_image']:7.2f} ms/img  "
              f"peak RSS {figures['rss_mib']:7.1f} MiB"
              + (f"  (dataset + annotation index built: +{figures['dataset_built_mib']:.0f} MiB)"
                 if "dataset_built_mib" in figures else ""), flush=True)  # fmt: skip
    if "ingest" in args.stages:
        manifest = json.loads((ds / "manifest.json").read_text())
        result["rows"] = manifest["stats"]["rows"]
        if result["rows"] != count:
            raise RuntimeError(
                f"ingest kept {result['rows']} of {count} images: {manifest['stats']}"
            )
    return result


def table(results: list[dict], stages: list[str]) -> str:
    """RSS and CPU per stage against size, plus the largest/smallest RSS ratio."""
    lines = ["| images | " + " | ".join(f"{s} RSS MiB | {s} CPU ms/img" for s in stages) + " |",
             "|---" * (1 + 2 * len(stages)) + "|"]  # fmt: skip
    for r in results:
        cells = [f"{r['stages'][s]['rss_mib']:.0f} | {r['stages'][s]['cpu_ms_per_image']:.1f}"
                 for s in stages]  # fmt: skip
        lines.append(f"| {r['images']} | " + " | ".join(cells) + " |")
        if "loader" in r["stages"]:
            built = r["stages"]["loader"]["dataset_built_mib"]
            lines[-1] += f" loader index +{built:.0f} MiB"
    if len(results) > 1:
        first, last = results[0], results[-1]
        ratios = [f"{s} {last['stages'][s]['rss_mib'] / first['stages'][s]['rss_mib']:.2f}x"
                  for s in stages]  # fmt: skip
        lines.append(f"peak RSS {last['images']} / {first['images']} images: " + ", ".join(ratios))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="200,400", help="Corpus sizes (images), comma list.")
    parser.add_argument("--image-size", type=int, default=128, help="Stored size (ingest).")
    parser.add_argument("--source-size", type=int, default=160, help="Long side of the copies.")
    parser.add_argument("--loader-size", type=int, default=64, help="Loader output size.")
    parser.add_argument(
        "--stages",
        default="ingest,annotate,loader",
        help="Any of ingest, annotate, loader, partitions (--partitions ingests of one "
        "partition each), merge (ingest-merge of those partitions).",
    )
    parser.add_argument("--partitions", type=int, default=4, help="For partitions/merge.")
    parser.add_argument(
        "--row-group-mb", type=float, help="Dataset row-group size (default: ingest's 100 MB)."
    )
    parser.add_argument("--work", type=Path, help="Keep corpora and artifacts here.")
    parser.add_argument("--code", type=Path, default=REPO, help="Checkout to run stages from.")
    parser.add_argument("--tag", default="", help="Name of this run's annotations/logs.")
    parser.add_argument(
        "--dataset-tag", default="", help="Use the dataset of that run (default: this --tag)."
    )
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    parser.add_argument("--loader-pass", nargs=2, metavar=("DATASET", "ANNOTATIONS"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args(argv)
    if args.loader_pass:
        return loader_pass(*args.loader_pass, args.loader_size, batch=32)
    args.stages = [s for s in args.stages.split(",") if s]
    sizes = [int(s) for s in args.sizes.split(",")]
    env = {**os.environ, "PYTHONPATH": str(args.code.resolve()), "OMP_NUM_THREADS": "1",
           "NO_COLOR": "1", "HF_HUB_OFFLINE": "1"}  # fmt: skip
    work = args.work or Path(tempfile.mkdtemp(prefix="cxrkit-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"scale benchmark: {platform.node()} {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"code {args.code}, stored {args.image_size} px, sources {args.source_size} px", flush=True)  # fmt: skip
    try:
        results = [run_size(n, args, work, env) for n in sizes]
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(table(results, args.stages))
    out = {"sizes": sizes, "image_size": args.image_size, "results": results}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
