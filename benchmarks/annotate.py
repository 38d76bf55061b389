"""`cxrkit annotate` throughput: reports/s and images/s per core, against naive baselines.

Run: ``python benchmarks/annotate.py [--reports N] [--images N] [--size 512]``.
Measured in CPU seconds of this one process (``time.process_time``), so the
figures are per core even on a shared machine. In the same run:

- text, ours: the model-free pipeline over ``nlp.pipe`` (scispaCy tokenizer,
  AbbreviationDetector, lexicon EntityRuler) + negation + labels;
- text, naive A: the same pipeline called once per report (``nlp(text)``, no pipe);
- text, naive B: regex-only keyword matching of the lexicon phrases, no negation
  (the cheapest thing one could call a labeler; far less accurate);
- images: chest contour + packbits on the real pediatric JPEGs resized to
  ``--size`` long side (the stored resolution), vs the naive baseline of running
  the same contour at full stored resolution (no internal downscale).
Target for the model-free text pipeline: >= 500 reports/s/core.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from labeler import read_reports  # noqa: E402

from cxrkit.text.labeler import Labeler, labels_from_entities  # noqa: E402
from cxrkit.text.lexicon import TERMS  # noqa: E402


def _cpu(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def bench_text(texts: list[str]) -> dict:
    labeler = Labeler()
    extractor = labeler.extractor
    list(labeler.label(texts[:64]))  # warm up
    ours = _cpu(lambda: list(labeler.label(texts)))
    naive = _cpu(
        lambda: [labels_from_entities(extractor.entities(extractor.nlp(t), t)) for t in texts]
    )
    phrases = sorted({p for term in TERMS for p in term.phrases}, key=len, reverse=True)
    keyword = re.compile(r"\b(?:" + "|".join(map(re.escape, phrases)) + r")\b", re.IGNORECASE)
    regex = _cpu(lambda: [keyword.findall(t) for t in texts])
    n = len(texts)
    return {"ours": n / ours, "naive_per_report_nlp": n / naive, "regex_keywords": n / regex}


def _images(count: int, size: int) -> list[np.ndarray]:
    from cxrkit.io.bundled import pediatric_jpegs

    out = []
    for path in itertools.islice(itertools.cycle(pediatric_jpegs()), count):
        image = Image.open(path).convert("L")
        image.thumbnail((size, size), Image.Resampling.BILINEAR)
        out.append(np.asarray(image))
    return out


def bench_images(count: int, size: int) -> dict:
    from cxrkit.vision.contour import chest_contour
    from cxrkit.vision.masks import pack_mask

    images = _images(count, size)
    ours = _cpu(lambda: [pack_mask(chest_contour(i).mask) for i in images])
    naive = _cpu(lambda: [pack_mask(chest_contour(i, work_size=max(i.shape)).mask) for i in images])
    return {"ours": count / ours, "naive_full_resolution": count / naive}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=0, help="reports to use (0 = all 3,955)")
    parser.add_argument("--images", type=int, default=16, help="images for the contour figures")
    parser.add_argument("--size", type=int, default=512, help="stored long side of the images")
    args = parser.parse_args()
    texts = [r["text"] for r in read_reports()]
    texts = texts[: args.reports] if args.reports else texts
    text = bench_text(texts)
    print(f"text ({len(texts)} real IU reports), reports/s per core (CPU time):")
    for name, rate in text.items():
        print(f"  {name:<22} {rate:8.0f}   ours / this = {text['ours'] / rate:5.2f}x")
    images = bench_images(args.images, args.size)
    print(f"images ({args.images} real pediatric JPEGs at {args.size} px), images/s per core:")
    for name, rate in images.items():
        print(f"  {name:<22} {rate:8.1f}   ours / this = {images['ours'] / rate:5.2f}x")


if __name__ == "__main__":
    main()
