"""`cxrkit annotate`: dataset -> annotations (entities, CheXpert labels, chest contours, prompts).

One row per dataset image in ``annotations.parquet`` (ANNOTATIONS_SCHEMA), plus
``prompts.json`` and, with ``preview``, ``preview.png``. Work is done per
dataset row group ("chunk"); each finished chunk is a file under the temp
dir's ``.work/`` so a killed run resumes where it stopped. Chunks run in
``workers`` processes, each building the spaCy pipeline once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cxrkit.artifacts import Artifact, ArtifactWriter, open_artifact
from cxrkit.artifacts.manifest import canonical_json
from cxrkit.config import doc, to_dict
from cxrkit.errors import ConfigError, WorkerDied
from cxrkit.io.annotations import ANNOTATIONS_FILE
from cxrkit.io.dataset import dataset_shards
from cxrkit.io.parquet import write_table_atomic
from cxrkit.io.schema import ANNOTATIONS_SCHEMA, ANNOTATIONS_SCHEMA_VERSION
from cxrkit.reporting import progress
from cxrkit.text.classes import CHEXPERT_CLASSES

log = logging.getLogger(__name__)

_READ_COLUMNS = ["image_id", "report_text", "pixels", "dtype", "height", "width"]


@dataclass
class AnnotateConfig:
    """Settings of `cxrkit annotate` (see ``cxrkit annotate --help``)."""

    dataset: str = doc("Input dataset artifact directory (from `cxrkit ingest`).", "")
    out: str = doc("Output annotations artifact directory.", "")
    workers: int = doc("Processes (0 = all cores). Does not change the output.", 1)
    scispacy_model: str | None = doc(
        "scispaCy/spaCy model (directory or package name) whose NER is merged with the lexicon; "
        "None = the model-free pipeline.",
        None,
    )
    abbreviations: bool = doc(
        "Run scispaCy's AbbreviationDetector (short forms inherit classes).", True
    )
    contours: bool = doc("Compute chest-contour masks (false = quality 'none', no mask).", True)
    preview: int = doc("Write preview.png with this many images and their contours (0 = none).", 0)
    prompts: str | None = doc(
        "Prompt set JSON replacing the shipped default (see text/prompts.py).", None
    )
    batch_size: int = doc("Reports per nlp.pipe batch. Does not change the output.", 256)
    sections: str = doc(
        "Report sections that make labels: 'findings+impression' (findings, impression and "
        "header-less text; the default here, recorded in the manifest) or 'impression' "
        "(CheXpert's, the default of `cxrkit label`).",
        "findings+impression",
    )

    def validate(self) -> None:
        from cxrkit.text.labeler import SECTION_POLICIES

        if self.sections not in SECTION_POLICIES:
            raise ConfigError(
                f"sections: {self.sections!r} is not one of {', '.join(SECTION_POLICIES)}"
            )
        if self.workers < 0:
            raise ConfigError(f"workers: {self.workers} is negative; use 0 for all cores")
        if self.preview < 0:
            raise ConfigError(f"preview: {self.preview} is negative")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: {self.batch_size} must be >= 1")


def labeler_fingerprint() -> str:
    """sha256 over the lexicon patterns and cue lists: a rule change gives a new artifact id."""
    from cxrkit.text import negation
    from cxrkit.text.labeler import RULES_VERSION
    from cxrkit.text.lexicon import entity_ruler_patterns, statement_regexes

    cues = {k: list(v) for k, v in negation._KINDS.items()}
    payload = canonical_json({"patterns": entity_ruler_patterns(), "cues": cues,
                              "statements": [list(s) for s in statement_regexes()],
                              "rules": RULES_VERSION,
                              "windows": [negation.PRE_WINDOW, negation.POST_WINDOW,
                                          negation.OR_GAP]})  # fmt: skip
    return hashlib.sha256(payload.encode()).hexdigest()


def _id_params(cfg: AnnotateConfig, prompts: dict) -> dict:
    """Params that define the output (not out/workers/batch_size), plus rule and prompt identity."""
    from cxrkit.text.prompts import prompts_sha256

    params = to_dict(cfg)
    for key in ("out", "workers", "batch_size", "dataset"):
        params.pop(key)
    params.update({"labeler_sha256": labeler_fingerprint(), "prompts_version": prompts["version"],
                   "prompts_sha256": prompts_sha256(prompts)})  # fmt: skip
    return params


def run(cfg: AnnotateConfig, force: bool = False) -> Artifact:
    """Annotate a dataset artifact; returns the published annotations Artifact.

    Raises ConfigError for missing settings, ArtifactError for a missing or
    corrupt dataset, InputError for an unusable prompts file or model.
    """
    from cxrkit.text.prompts import load_prompts, prompts_bytes

    if not cfg.dataset or not cfg.out:
        raise ConfigError("annotate needs a DATASET artifact and --out DIR")
    dataset = open_artifact(cfg.dataset, kind="dataset", verify_files=True)
    prompts = load_prompts(cfg.prompts)
    writer = ArtifactWriter(Path(cfg.out), "annotations", _id_params(cfg, prompts),
                            inputs=[dataset], schema_version=ANNOTATIONS_SCHEMA_VERSION,
                            force=force)  # fmt: skip
    if (done := writer.up_to_date()) is not None:
        return done
    tmp = writer.begin()
    scratch = tmp / ".work"
    scratch.mkdir(exist_ok=True)
    chunks = _plan(dataset)
    timing = _run_chunks(cfg, chunks, scratch)
    stats, head = _combine_chunks(
        [scratch / _chunk_name(c) for c in chunks], tmp / ANNOTATIONS_FILE, cfg.preview * 4
    )
    (tmp / "prompts.json").write_bytes(prompts_bytes(prompts))
    if cfg.preview and cfg.contours and head:
        _write_preview(dataset, head, cfg.preview, tmp / "preview.png")
    stats.update(timing)
    schema = {"arrow": str(ANNOTATIONS_SCHEMA), "classes": CHEXPERT_CLASSES}
    return writer.publish(schema=schema, stats=stats)


def _plan(dataset: Artifact) -> list[tuple[str, int]]:
    """(shard file name, row group) per chunk, in dataset order."""
    chunks = []
    for shard in dataset_shards(dataset, allow_empty=True):
        groups = pq.ParquetFile(shard).metadata.num_row_groups
        chunks += [(shard.name, g) for g in range(groups)]
    return chunks


def _chunk_name(chunk: tuple[str, int]) -> str:
    return f"chunk-{Path(chunk[0]).stem}-{chunk[1]:05d}.parquet"


_WORKER: dict = {}


def _init_worker(cfg_dict: dict, dataset_path: str) -> None:
    """Build the labeler once per process (it is the expensive part to create)."""
    import cxrkit.vision.contour  # noqa: F401  (import outside the timed contour loop)
    from cxrkit.config import from_dict
    from cxrkit.text.labeler import Labeler
    from cxrkit.workers import exit_with_parent

    exit_with_parent()  # a killed annotate must not leave its workers behind (no-op in-process)
    cfg = from_dict(AnnotateConfig, cfg_dict)
    if not cfg.scispacy_model:  # the model-free pipeline never uses thinc's torch layers
        from cxrkit.text.lean import import_spacy_without_torch

        import_spacy_without_torch()  # a no-op where torch is already imported
    _WORKER.update(cfg=cfg, dataset=Path(dataset_path),
                   labeler=Labeler(cfg.scispacy_model, cfg.abbreviations,
                                   sections=cfg.sections))  # fmt: skip


def _process_chunk(args: tuple[tuple[str, int], str]) -> dict:
    """Annotate one row group and write its chunk file; returns counts and timings."""
    chunk, scratch = args
    cfg, labeler = _WORKER["cfg"], _WORKER["labeler"]
    data = pq.ParquetFile(_WORKER["dataset"] / chunk[0]).read_row_group(
        chunk[1], columns=_READ_COLUMNS
    )
    rows = data.to_pylist()
    start = time.process_time()
    results = list(labeler.label((r["report_text"] for r in rows), batch_size=cfg.batch_size))
    text_s = time.process_time() - start
    start = time.process_time()
    contours = [_contour(r) if cfg.contours else (None, None, "none") for r in rows]
    contour_s = time.process_time() - start
    out = [{"image_id": r["image_id"], "labels": labels,
            "entities": [e.as_dict() for e in entities],
            "contour_mask": mask, "contour_bbox": bbox, "contour_quality": quality}
           for r, (labels, entities), (mask, bbox, quality) in zip(rows, results, contours, strict=True)]  # fmt: skip
    write_table_atomic(
        pa.Table.from_pylist(out, schema=ANNOTATIONS_SCHEMA), Path(scratch) / _chunk_name(chunk)
    )
    return {"rows": len(rows), "text_s": text_s, "contour_s": contour_s}


def _contour(row: dict) -> tuple[bytes | None, list[int] | None, str]:
    """(packed mask, bbox, quality) for one dataset row; "none" when the pixels are unusable."""
    from cxrkit.vision.contour import chest_contour
    from cxrkit.vision.masks import pack_mask

    height, width = row["height"], row["width"]
    try:
        image = np.frombuffer(row["pixels"], dtype=np.dtype(row["dtype"])).reshape(height, width)
    except (TypeError, ValueError) as exc:
        log.warning("image %s: pixels unusable for a contour (%s)", row["image_id"], exc)
        return None, None, "none"
    result = chest_contour(image)
    return pack_mask(result.mask), [int(v) for v in result.bbox], result.quality


def _run_chunks(cfg: AnnotateConfig, chunks: list[tuple[str, int]], scratch: Path) -> dict:
    """Process the chunks not on disk yet. Returns throughput figures for this call."""
    todo = [c for c in chunks if not (scratch / _chunk_name(c)).exists()]
    if len(todo) < len(chunks):
        log.info("resuming: %d of %d chunks already done", len(chunks) - len(todo), len(chunks))
    workers = min(cfg.workers or os.cpu_count() or 1, max(len(todo), 1))
    totals: Counter = Counter()
    wall = time.monotonic()
    init_args = (to_dict(cfg), str(Path(cfg.dataset)))
    with progress("annotate", total=len(todo)) as bar:
        if workers <= 1:
            _init_worker(*init_args)
            for chunk in todo:
                totals.update(_process_chunk((chunk, str(scratch))))
                bar.advance(1, rows=totals["rows"])
        else:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                                     initializer=_init_worker, initargs=init_args) as pool:  # fmt: skip
                try:
                    for result in pool.map(_process_chunk, [(c, str(scratch)) for c in todo]):
                        totals.update(result)
                        bar.advance(1, rows=totals["rows"])
                except BrokenProcessPool as exc:
                    from cxrkit.workers import death_causes

                    kept = sum((scratch / _chunk_name(c)).exists() for c in chunks)
                    raise WorkerDied(
                        f"an annotate worker process died ({death_causes(pool)}); {kept} of "
                        f"{len(chunks)} chunk(s) finished and are kept in {scratch.parent}; "
                        "re-run the same command to resume (fewer --workers use less memory)"
                    ) from exc
    wall = time.monotonic() - wall
    rows = totals["rows"]
    return {
        "rows_processed_this_run": rows,
        "workers": workers,
        "wall_s": round(wall, 2),
        "reports_per_s_per_core": round(rows / totals["text_s"], 1) if totals["text_s"] else None,
        "images_per_s_per_core": round(rows / totals["contour_s"], 1)
        if totals["contour_s"]
        else None,
        "rows_per_s_wall": round(rows / wall, 1) if wall and rows else None,
    }


def _combine_chunks(files: list[Path], out: Path, head_rows: int) -> tuple[dict, list[dict]]:
    """Append the chunk files to ``out`` one at a time (one row group each, dataset order).

    Memory stays at one chunk (one dataset row group) whatever the corpus size;
    the stats are accumulated on the way. Returns (stats, the first ``head_rows``
    rows as dicts, for the preview).
    """
    tally = AnnotationTally()
    head: list[dict] = []
    with pq.ParquetWriter(out, ANNOTATIONS_SCHEMA, compression="zstd") as writer:
        if not files:
            writer.write_table(ANNOTATIONS_SCHEMA.empty_table())
        for path in files:
            table = pq.read_table(path, schema=ANNOTATIONS_SCHEMA)
            writer.write_table(table)
            tally.add(table)
            if len(head) < head_rows:
                head += table.slice(0, head_rows - len(head)).to_pylist()
    return tally.stats(), head


class AnnotationTally:
    """Stats of an annotations table accumulated chunk by chunk (see :func:`annotation_stats`)."""

    def __init__(self) -> None:
        self.rows = 0
        self.counts = np.zeros((4, len(CHEXPERT_CLASSES)), dtype=np.int64)  # pos/neg/unc/NaN
        self.entities = 0
        self.without_entities = 0
        self.quality: Counter = Counter()

    def add(self, table: pa.Table) -> None:
        """Count one chunk's rows."""
        rows = table.num_rows
        labels = np.array(table.column("labels").to_pylist(), dtype=np.float32).reshape(
            rows, len(CHEXPERT_CLASSES)
        )  # (n, 14)
        self.counts += np.stack(
            [(labels == 1).sum(0), (labels == 0).sum(0), (labels == -1).sum(0),
             np.isnan(labels).sum(0)]
        )  # fmt: skip
        n_entities = [len(e) for e in table.column("entities").to_pylist()]
        self.entities += sum(n_entities)
        self.without_entities += sum(1 for n in n_entities if n == 0)
        self.quality.update(table.column("contour_quality").to_pylist())
        self.rows += rows

    def stats(self) -> dict:
        """rows, label prevalence per class, entities per report, contour quality counts."""
        keys = ("positive", "negative", "uncertain", "not_mentioned")
        prevalence = {
            name: {key: int(self.counts[k, i]) for k, key in enumerate(keys)}
            for i, name in enumerate(CHEXPERT_CLASSES)
        }
        return {
            "rows": self.rows,
            "entities_per_report": round(self.entities / self.rows, 2) if self.rows else 0.0,
            "reports_without_entities": self.without_entities,
            "contour_quality": dict(self.quality),
            "label_prevalence": prevalence,
        }


def annotation_stats(table: pa.Table) -> dict:
    """rows, label prevalence per class, entities per report, contour quality counts."""
    tally = AnnotationTally()
    tally.add(table)
    return tally.stats()


def _write_preview(dataset: Artifact, head: list[dict], count: int, path: Path) -> None:
    """preview.png: the first ``count`` images with a contour, mask overlaid.

    ``head``: the first rows of the annotations table; the dataset is read one
    row group at a time until the images are found.
    """
    from cxrkit.vision.masks import preview_grid, unpack_mask

    wanted = {}
    for row in head[: max(count * 4, count)]:
        if row["contour_mask"] is not None and len(wanted) < count:
            wanted[row["image_id"]] = row
    images, masks, titles = [], [], []
    for group in _plan(dataset):
        if len(images) >= len(wanted):
            break
        data = pq.ParquetFile(dataset.path / group[0]).read_row_group(
            group[1], columns=_READ_COLUMNS
        )
        for row in data.to_pylist():
            hit = wanted.get(row["image_id"])
            if hit is None:
                continue
            h, w = row["height"], row["width"]
            images.append(np.frombuffer(row["pixels"], dtype=np.dtype(row["dtype"])).reshape(h, w))
            masks.append(unpack_mask(hit["contour_mask"], h, w))
            titles.append(hit["contour_quality"])
    if images:
        preview_grid(images, masks, path, titles=titles)
