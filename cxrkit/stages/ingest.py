"""`cxrkit ingest`: DICOM/PNG/JPEG chest X-rays + reports -> a dataset artifact.

Work is cut into fixed chunks of files; each finished chunk is written into the
artifact's temp dir (``.work/chunk-NNNNN.parquet``), so a killed ingest resumes
at the first unfinished chunk. Chunks are combined into size-bounded shards at
the end, duplicates (same source bytes) are moved to the rejects table there.
Output depends only on the inputs, the config and the salt, never on
``--workers``: the same command gives the same artifact id and shard hashes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from cxrkit.artifacts import Artifact, ArtifactWriter, sha256_file
from cxrkit.config import doc, to_dict
from cxrkit.errors import ConfigError
from cxrkit.io import sources as src
from cxrkit.io.parquet import ROW_GROUP_BYTES, SHARD_MAX_BYTES, ShardWriter, write_table_atomic
from cxrkit.io.schema import DATASET_SCHEMA, DATASET_SCHEMA_VERSION, REJECTS_SCHEMA
from cxrkit.reporting import progress

log = logging.getLogger(__name__)


@dataclasses.dataclass
class IngestConfig:
    """Settings of `cxrkit ingest` (every field can be set with --set)."""

    sources: list[str] = doc("Directories, files or globs of DICOM/PNG/JPEG images.", [])
    out: str = doc("Output dataset artifact directory.", "")
    reports: str | None = doc(
        "Reports: a MIMIC-CXR tree, a dir of IU XML files, or an IU .tgz.", None
    )
    mapping: str | None = doc(
        "CSV mapping image_path -> report_path|report_text, study_id, "
        "patient_id, split, label columns.",
        None,
    )
    image_size: int = doc(
        "Long side of the stored image in pixels (downscale only, aspect kept).", 512
    )
    dtype: Literal["uint8", "uint16"] = doc("Stored pixel type.", "uint8")
    min_size: int = doc("Reject images whose original short side is below this (too_small).", 128)
    window_low_pct: float = doc("Robust normalisation: lower percentile clipped to black.", 0.5)
    window_high_pct: float = doc("Robust normalisation: upper percentile clipped to white.", 99.5)
    workers: int = doc("Decode processes (0 = all cores). Does not change the output.", 1)
    shard_index: int | None = doc("This partition's index (or SLURM_ARRAY_TASK_ID).", None)
    num_shards: int | None = doc("Number of partitions (then merge with ingest-merge).", None)
    salt_file: str = doc(
        "HMAC salt for pseudonyms; created if absent; keep it private. "
        "Never stored in the artifact.",
        "~/.config/cxrkit/salt.hex",
    )
    allow_burned_in: bool = doc("Keep images flagged BurnedInAnnotation=YES.", False)
    keep_paths: bool = doc("Store raw source paths (otherwise only a salted hash).", False)
    check_chest: bool = doc(
        "Reject DICOMs whose modality/body part say they are not chest X-rays.", True
    )
    val_fraction: float = doc("Patients assigned to val when no split is given.", 0.1)
    test_fraction: float = doc("Patients assigned to test when no split is given.", 0.1)
    shard_max_bytes: int = doc("Upper bound on a shard's size in bytes.", SHARD_MAX_BYTES)
    row_group_bytes: int = doc("Target row-group size in bytes.", ROW_GROUP_BYTES)
    chunk_files: int = doc("Files per resumable unit of work. Does not change the output.", 64)

    def validate(self) -> None:
        if self.image_size < 16:
            raise ConfigError(f"image_size {self.image_size} is too small (>= 16)")
        if not 0 <= self.val_fraction + self.test_fraction < 1:
            raise ConfigError("val_fraction + test_fraction must be in [0, 1)")
        if not 0 <= self.window_low_pct < self.window_high_pct <= 100:
            raise ConfigError("need 0 <= window_low_pct < window_high_pct <= 100")


# ---------------------------------------------------------------- per-file work (in workers)
_ctx: dict = {}


def _init_worker(state: dict) -> None:
    from cxrkit.io.deid import Pseudonymizer
    from cxrkit.io.report_index import ReportIndex

    # pydicom logs warnings that quote file paths; the reader records them itself.
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    _ctx.clear()
    _ctx.update(state)
    _ctx["pseudo"] = Pseudonymizer(state["salt"])
    _ctx["reports"] = ReportIndex.build(Path(state["reports"])) if state["reports"] else None


def _process(item: tuple[str, dict | None]) -> dict:
    """Decode one file into a dataset row, or a reject. Never raises for bad input."""
    from cxrkit.errors import Reject

    path_str, mapped = item
    path = Path(path_str)
    shown = path_str if _ctx["cfg"]["keep_paths"] else _ctx["pseudo"].path_token(path_str)
    try:
        return {"row": _build_row(path, mapped)}
    except Reject as rej:
        return {"reject": {"path": shown, "reason": rej.reason, "detail": rej.detail}}
    except MemoryError:
        raise
    except Exception as exc:  # an unforeseen decoder failure must not stop a 377k-image run
        from cxrkit.io.decoded import scrub_path

        detail = scrub_path(f"{type(exc).__name__}: {exc}", path)
        return {"reject": {"path": shown, "reason": "corrupt_pixels", "detail": detail}}


def _build_row(path: Path, mapped: dict | None) -> dict:
    from cxrkit.errors import Reject
    from cxrkit.io import intensity
    from cxrkit.io.decode import read_any

    cfg = _ctx["cfg"]
    if not path.is_file():
        raise Reject("missing_file", "listed in the mapping CSV but not found")
    source_sha = sha256_file(path)
    decoded = read_any(
        path,
        allow_burned_in=cfg["allow_burned_in"],
        check_chest=cfg["check_chest"],
        low_pct=cfg["window_low_pct"],
        high_pct=cfg["window_high_pct"],
    )
    orig_h, orig_w = decoded.pixels.shape
    if min(orig_h, orig_w) < cfg["min_size"]:
        raise Reject("too_small", f"{orig_w}x{orig_h} < min_size {cfg['min_size']}")
    pixels = intensity.resize_long_side(decoded.pixels, cfg["image_size"])
    stored = intensity.quantise(pixels, cfg["dtype"])
    meta = decoded.meta or {}
    return _row_from(
        path,
        mapped,
        source_sha,
        decoded.source_format,
        decoded.photometric,
        meta,
        stored,
        orig_h,
        orig_w,
    )


def _row_from(
    path: Path,
    mapped: dict | None,
    source_sha: str,
    fmt: str,
    photometric: str,
    meta: dict,
    stored,
    orig_h: int,
    orig_w: int,
) -> dict:
    from cxrkit.io.deid import safe_harbor_age

    pseudo = _ctx["pseudo"]
    mapped = mapped or {}
    index = _ctx["reports"]
    layout_keys = index.patient_study_for_image(path) if index is not None else None
    patient_raw = (
        mapped.get("patient_id")
        or meta.get("patient_id")
        or (layout_keys[0] if layout_keys else None)
        or f"image:{source_sha}"
    )
    study_raw = (
        mapped.get("study_id")
        or meta.get("study_uid")
        or (layout_keys[1] if layout_keys else None)
        or f"image:{source_sha}"
    )
    image_raw = meta.get("sop_uid") or source_sha
    report = _report_for(path, mapped, index)
    patient_id = pseudo.pseudonym("patient", str(patient_raw))
    split = mapped.get("split") or _split_for(patient_id)
    labels = mapped.get("labels") or None
    return {
        "image_id": pseudo.pseudonym("image", str(image_raw)),
        "study_id": pseudo.pseudonym("study", str(study_raw)),
        "patient_id": patient_id,
        "view": meta.get("view") or "UNKNOWN",
        "sex": meta.get("sex"),
        "age": safe_harbor_age(meta.get("age")),
        "study_date": pseudo.shift_date(meta.get("study_date"), str(patient_raw)),
        "pixels": stored.tobytes(),
        "dtype": str(stored.dtype),
        "height": int(stored.shape[0]),
        "width": int(stored.shape[1]),
        "orig_height": int(orig_h),
        "orig_width": int(orig_w),
        "pixel_spacing": meta.get("pixel_spacing"),
        "source_sha256": source_sha,
        "source_path": str(path) if _ctx["cfg"]["keep_paths"] else pseudo.path_token(str(path)),
        "source_format": fmt,
        "photometric": photometric,
        "labels": json.dumps(labels, sort_keys=True) if labels else None,
        "report_findings": report.findings if report else None,
        "report_impression": report.impression if report else None,
        "report_text": report.text if report else None,
        "report_source": report.source if report else "none",
        "split": split,
    }


def _report_for(path: Path, mapped: dict, index):
    from cxrkit.io.reports import parse_report_text

    if mapped.get("report_text"):
        return parse_report_text(mapped["report_text"], source="mapping")
    if mapped.get("report_path"):
        report_path = Path(mapped["report_path"])
        if report_path.suffix.lower() == ".xml":
            from cxrkit.io.reports import parse_iu_xml

            return parse_iu_xml(report_path)
        return parse_report_text(report_path.read_text(errors="replace"), source="mapping")
    return index.for_image(path) if index is not None else None


def _split_for(patient_id: str) -> str:
    """Salted, deterministic split by patient: the same patient is always in one split."""
    cfg = _ctx["cfg"]
    digest = hmac.new(_ctx["salt"], f"split\0{patient_id}".encode(), hashlib.sha256).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < cfg["test_fraction"]:
        return "test"
    if u < cfg["test_fraction"] + cfg["val_fraction"]:
        return "val"
    return "train"


# ---------------------------------------------------------------- orchestration
def _load_mapping(cfg: IngestConfig) -> dict[Path, dict]:
    from cxrkit.io.mapping import read_mapping_csv

    mapping = {}
    for row in read_mapping_csv(Path(cfg.mapping)):
        mapping[Path(row.image_path).resolve()] = {
            "report_path": str(row.report_path) if row.report_path else None,
            "report_text": row.report_text,
            "study_id": row.study_id,
            "patient_id": row.patient_id,
            "split": row.split,
            "labels": row.labels or None,
        }
    return mapping


def _plan(cfg: IngestConfig) -> tuple[list[tuple[str, dict | None]], int, dict]:
    """The ordered work list for this partition, the number of skipped files, partition info."""
    mapping = _load_mapping(cfg) if cfg.mapping else {}
    files, skipped = src.expand_sources(cfg.sources) if cfg.sources else ([], 0)
    if not files and not mapping:
        raise ConfigError("nothing to ingest: give SOURCES and/or --mapping")
    names = sorted(set(files) | set(mapping))
    index, count = src.resolve_partition(cfg.shard_index, cfg.num_shards)
    if count > 1:
        names = [p for p in names if src.partition_of(p, count) == index]
    work = [(str(p), mapping.get(p)) for p in names]
    return work, skipped, {"shard_index": index, "num_shards": count}


def _id_params(cfg: IngestConfig, salt: bytes, part: dict) -> dict:
    params = to_dict(cfg)
    for volatile in ("out", "workers", "salt_file", "shard_index", "num_shards", "chunk_files"):
        params.pop(volatile)
    params.update(part)
    # The salt changes every pseudonym, so it belongs in the id; only a keyed
    # fingerprint of it is stored, never the salt.
    params["salt_fingerprint"] = hmac.new(salt, b"cxrkit-salt-fingerprint", "sha256").hexdigest()[
        :16
    ]
    return params


def run(cfg: IngestConfig, force: bool = False) -> Artifact:
    """Ingest images and reports into a dataset artifact at ``cfg.out``.

    Returns the published Artifact. Raises ConfigError/InputError for unusable
    settings or sources; per-file problems go to ``rejects.parquet``.
    """
    from cxrkit.io.deid import load_or_create_salt

    if not cfg.out:
        raise ConfigError("--out is required")
    salt = load_or_create_salt(Path(os.path.expanduser(cfg.salt_file)))
    work, skipped, part = _plan(cfg)
    raw_inputs = [
        {
            "kind": "raw",
            "id": src.fingerprint([Path(p) for p, _ in work]),
            "path": ", ".join(cfg.sources) or f"images listed in {cfg.mapping}",
        }
    ]
    if cfg.mapping:
        raw_inputs.append(
            {"kind": "raw", "id": src.fingerprint([Path(cfg.mapping)]), "path": cfg.mapping}
        )
    if cfg.reports:
        raw_inputs.append(
            {"kind": "raw", "id": _reports_fingerprint(Path(cfg.reports)), "path": cfg.reports}
        )
    writer = ArtifactWriter(
        Path(cfg.out),
        "dataset",
        _id_params(cfg, salt, part),
        inputs=raw_inputs,
        schema_version=DATASET_SCHEMA_VERSION,
        force=force,
    )
    if (done := writer.up_to_date()) is not None:
        return done
    tmp = writer.begin()
    start = time.monotonic()
    decoded = _run_chunks(cfg, salt, work, tmp / ".work")
    stats = _combine(cfg, tmp, len(work))
    elapsed = time.monotonic() - start
    stats.update(
        {
            "inputs": len(work),
            "non_image_files_skipped": skipped,
            "images_per_s": round(decoded / elapsed, 2) if elapsed else None,
            "wall_s": round(elapsed, 2),
            **part,
        }
    )
    return writer.publish(
        schema={"arrow": str(DATASET_SCHEMA), "rejects": str(REJECTS_SCHEMA)}, stats=stats
    )


def _reports_fingerprint(path: Path) -> str:
    if path.is_file():
        return src.fingerprint([path])
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return src.fingerprint(files)


def _run_chunks(cfg: IngestConfig, salt: bytes, work: list, scratch: Path) -> int:
    """Decode all chunks not yet on disk. Returns the number of files decoded in this call."""
    scratch.mkdir(exist_ok=True)
    size = max(1, cfg.chunk_files)
    chunks = [work[i : i + size] for i in range(0, len(work), size)]
    todo = [i for i in range(len(chunks)) if not (scratch / f"chunk-{i:05d}.parquet").exists()]
    if len(todo) < len(chunks):
        log.info("resuming: %d of %d chunks already done", len(chunks) - len(todo), len(chunks))
    state = {"cfg": dataclasses.asdict(cfg), "salt": salt, "reports": cfg.reports}
    workers = cfg.workers or os.cpu_count() or 1
    done = 0
    with progress("ingest", total=sum(len(chunks[i]) for i in todo)) as bar:
        if workers <= 1:
            _init_worker(state)
            results = map(_process, (item for i in todo for item in chunks[i]))
        else:
            pool = ProcessPoolExecutor(
                workers,
                mp_context=get_context("spawn"),
                initializer=_init_worker,
                initargs=(state,),
            )
            results = _rolling_map(pool, (item for i in todo for item in chunks[i]), workers * 8)
        try:
            for i in todo:
                chunk_results = [next(results) for _ in chunks[i]]
                _write_chunk(scratch, i, chunk_results)
                done += len(chunk_results)
                bar.advance(len(chunk_results))
        finally:
            if workers > 1:
                pool.shutdown(cancel_futures=True)
    return done


def _rolling_map(pool: ProcessPoolExecutor, items, window: int):
    """Ordered results of ``_process`` with at most ``window`` files in flight.

    Unlike mapping chunk by chunk, workers never idle at chunk boundaries, and
    unlike ``pool.map`` over everything, a 377k-file ingest does not create
    377k futures up front.
    """
    from collections import deque

    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(_process, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _write_chunk(scratch: Path, index: int, results: list[dict]) -> None:
    rows = [r["row"] for r in results if "row" in r]
    rejects = [r["reject"] for r in results if "reject" in r]
    write_table_atomic(
        pa.Table.from_pylist(rejects, schema=REJECTS_SCHEMA),
        scratch / f"chunk-{index:05d}.rejects.parquet",
    )
    # The rows file is written last: its presence marks the chunk as done.
    write_table_atomic(
        pa.Table.from_pylist(rows, schema=DATASET_SCHEMA), scratch / f"chunk-{index:05d}.parquet"
    )


def _combine(cfg: IngestConfig, tmp: Path, n_inputs: int) -> dict:
    """Merge chunk files into shards, moving duplicate sources to rejects. Returns stats."""
    scratch = tmp / ".work"
    chunk_files = sorted(scratch.glob("chunk-*[0-9].parquet"))
    reject_tables = [pq.read_table(p) for p in sorted(scratch.glob("chunk-*.rejects.parquet"))]
    tables = (pq.read_table(p, schema=DATASET_SCHEMA) for p in chunk_files)
    return write_dataset(
        tables, reject_tables, tmp, cfg.shard_max_bytes, cfg.row_group_bytes, n_inputs
    )


def write_dataset(
    tables,
    reject_tables: list[pa.Table],
    directory: Path,
    shard_max_bytes: int = SHARD_MAX_BYTES,
    row_group_bytes: int = ROW_GROUP_BYTES,
    n_inputs: int | None = None,
) -> dict:
    """Write row tables as shards plus rejects.parquet; drop duplicate sources. Returns stats.

    Shared by ingest and ingest-merge so both apply the same duplicate rule:
    the first occurrence (in input order) of a source hash, image id or stored
    pixel hash is kept.
    """
    seen: set[str] = set()
    duplicates = []
    counts: dict[str, Counter] = {
        k: Counter() for k in ("view", "split", "sex", "report_source", "source_format")
    }
    patients: set[str] = set()
    writer = ShardWriter(directory, DATASET_SCHEMA, shard_max_bytes, row_group_bytes)
    for table in tables:
        keep = []
        columns = [
            table.column(c).to_pylist() for c in ("source_sha256", "image_id", "source_path")
        ]
        pixels = table.column("pixels")
        for i, (sha, image_id, path) in enumerate(zip(*columns, strict=True)):
            # Same file bytes, same DICOM instance, or the same stored pixels (one image
            # saved in two lossless encodings) count as one image.
            pixel_key = "px:" + hashlib.sha256(pixels[i].as_py()).hexdigest()
            keys = ("src:" + sha, "id:" + image_id, pixel_key)
            if any(k in seen for k in keys):
                duplicates.append(
                    {
                        "path": path,
                        "reason": "duplicate",
                        "detail": "same source bytes, image id or stored pixels as an earlier input",
                    }
                )
                continue
            seen.update(keys)
            keep.append(i)
        table = table.take(pa.array(keep, type=pa.int64()))
        for key, counter in counts.items():
            counter.update(v if v is not None else "unknown" for v in table.column(key).to_pylist())
        patients.update(table.column("patient_id").to_pylist())
        writer.write(table)
    writer.close()
    rejects = pa.concat_tables(
        [t.cast(REJECTS_SCHEMA) for t in reject_tables]
        + [pa.Table.from_pylist(duplicates, schema=REJECTS_SCHEMA)]
    )
    write_table_atomic(rejects, directory / "rejects.parquet")
    by_reason = Counter(rejects.column("reason").to_pylist())
    stats = {
        "rows": writer.rows,
        "rejects": rejects.num_rows,
        "patients": len(patients),
        "shards": len(writer.paths),
        "rejects_by_reason": dict(sorted(by_reason.items())),
    }
    stats.update({f"{key}_counts": dict(sorted(c.items())) for key, c in counts.items()})
    if n_inputs is not None and writer.rows + rejects.num_rows != n_inputs:
        raise RuntimeError(
            f"accounting error: {writer.rows} rows + {rejects.num_rows} rejects "
            f"!= {n_inputs} inputs"
        )
    return stats


# ---------------------------------------------------------------- merge partitions
def merge(parts: list[str | Path], out: str | Path, force: bool = False) -> Artifact:
    """Combine the partition datasets of one partitioned ingest into one dataset artifact.

    Raises ArtifactError when the parts are not datasets, disagree on settings,
    or do not cover every partition exactly once.
    """
    from cxrkit.artifacts import open_artifact
    from cxrkit.errors import ArtifactError

    arts = [open_artifact(p, kind="dataset", verify_files=True) for p in parts]
    arts.sort(key=lambda a: a.params.get("shard_index", 0))
    common = [{k: v for k, v in a.params.items() if k != "shard_index"} for a in arts]
    if any(c != common[0] for c in common):
        raise ArtifactError("ingest-merge: the parts were made with different settings or salts")
    count = common[0].get("num_shards", 1)
    indices = [a.params.get("shard_index", 0) for a in arts]
    if indices != list(range(count)):
        raise ArtifactError(
            f"ingest-merge: need partitions 0..{count - 1} exactly once, got {indices}"
        )
    params = {**common[0], "merged_partitions": count}
    params.pop("num_shards", None)
    writer = ArtifactWriter(
        Path(out),
        "dataset",
        params,
        inputs=arts,
        schema_version=DATASET_SCHEMA_VERSION,
        force=force,
    )
    if (done := writer.up_to_date()) is not None:
        return done
    tmp = writer.begin()
    tables = (pq.read_table(f, schema=DATASET_SCHEMA) for a in arts for f in shard_files(a))
    rejects = [pq.read_table(a.file("rejects.parquet")) for a in arts]
    n_inputs = sum(a.stats.get("inputs", 0) for a in arts)
    stats = write_dataset(tables, rejects, tmp, n_inputs=n_inputs)
    stats.update(
        {
            "inputs": n_inputs,
            "partitions": count,
            "rows_per_partition": [a.stats.get("rows") for a in arts],
        }
    )
    return writer.publish(
        schema={"arrow": str(DATASET_SCHEMA), "rejects": str(REJECTS_SCHEMA)}, stats=stats
    )


def shard_files(dataset: Artifact) -> list[Path]:
    """The data shards of a dataset artifact, in order (rejects excluded)."""
    return [p for p in dataset.files(".parquet") if p.name.startswith("shard-")]
