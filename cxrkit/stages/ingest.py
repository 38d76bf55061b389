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
import logging
import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path
from typing import Literal

import pyarrow.parquet as pq

from cxrkit import hashcache
from cxrkit.artifacts import Artifact, ArtifactWriter, open_artifact
from cxrkit.config import doc, to_dict
from cxrkit.errors import ArtifactError, ConfigError, InputError, WorkerDied
from cxrkit.io import sources as src
from cxrkit.io.dataset import (
    REJECTS_FILE,
    chunks_done,
    combine_chunks,
    dataset_shards,
    write_chunk,
    write_dataset,
)
from cxrkit.io.decode import MAX_PIXELS
from cxrkit.io.deid import load_or_create_salt, salt_fingerprint
from cxrkit.io.layouts import layout_keys, mimic_report_beside
from cxrkit.io.local_rejects import LOCAL_REJECTS_SUFFIX, known_paths, write_local_rejects
from cxrkit.io.mapping import MappingRow, read_mapping_csv
from cxrkit.io.parquet import ROW_GROUP_BYTES, SHARD_MAX_BYTES
from cxrkit.io.rows import RowBuilder, WorkItem
from cxrkit.io.schema import DATASET_SCHEMA, DATASET_SCHEMA_VERSION, REJECTS_SCHEMA
from cxrkit.io.tables import DatasetTables, find_tables
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
    workers: int = doc(
        "Decode processes (0 = all cores; always separate processes, so a decoder that "
        "crashes on a file rejects that file). Does not change the output.",
        1,
    )
    shard_index: int | None = doc("This partition's index (or SLURM_ARRAY_TASK_ID).", None)
    num_shards: int | None = doc("Number of partitions (then merge with ingest-merge).", None)
    salt_file: str = doc(
        "HMAC salt for pseudonyms; created if absent; keep it private. "
        "Never stored in the artifact.",
        "~/.config/cxrkit/salt.hex",
    )
    allow_burned_in: bool = doc("Keep images flagged BurnedInAnnotation=YES.", False)
    keep_paths: bool = doc("Store raw source paths (otherwise only a salted hash).", False)
    layout_reports: bool = doc(
        "Attach MIMIC-CXR reports found beside the study folders (files/p10/p10000032/"
        "s50414267.txt) to images that get no report from --mapping or --reports.",
        True,
    )
    layout_splits: bool = doc(
        "Take the split from a dataset's split folders (CheXpert train/ -> train, valid/ -> "
        "val, test/ -> test) for images the mapping CSV gives no split; off: the salted "
        "patient split.",
        True,
    )
    check_chest: bool = doc(
        "Reject DICOMs whose modality/body part say they are not chest X-rays.", True
    )
    dataset_tables: bool = doc(
        "Read the tables a public dataset ships beside its images (MIMIC-CXR-JPG "
        "metadata/split/chexpert CSVs, CheXpert train.csv/valid.csv, IU Kaggle "
        "indiana_projections.csv/indiana_reports.csv, R2Gen annotation.json): views, official "
        "split, labels, sex, age, IU reports. Looked for in each source folder and two "
        "folders up.",
        True,
    )
    mimic_labels: Literal["chexpert", "negbio"] = doc(
        "Which MIMIC-CXR-JPG label file to store: mimic-cxr-2.0.0-chexpert or -negbio.",
        "chexpert",
    )
    val_fraction: float = doc("Patients assigned to val when no split is given.", 0.1)
    test_fraction: float = doc("Patients assigned to test when no split is given.", 0.1)
    shard_max_bytes: int = doc("Upper bound on a shard's size in bytes.", SHARD_MAX_BYTES)
    row_group_bytes: int = doc("Target row-group size in bytes.", ROW_GROUP_BYTES)
    chunk_files: int = doc("Files per resumable unit of work. Does not change the output.", 64)
    max_pixels: int = doc(
        "Reject (too_large) an image whose header claims more pixels than this, before "
        "decoding it; bounds what a hostile header can make ingest allocate (like Pillow's "
        "MAX_IMAGE_PIXELS).",
        MAX_PIXELS,
    )
    scrub_reports: bool = doc(
        "Scrub report text at ingest (names after titles/roles, phone numbers, MRN/accession "
        "numbers, dates, e-mails; rule-based, see cxrkit.io.scrub). Off: MIMIC-CXR and IU "
        "reports are already de-identified.",
        False,
    )
    decode_reduce: Literal["off", "lossy", "all"] = doc(
        "Decode JPEG 2000 at the coarsest resolution level, and baseline JPEG (.jpg files, "
        "8-bit greyscale DICOM JPEG) at the smallest libjpeg DCT scale (1/2, 1/4, 1/8), "
        "whose long side is still >= image_size (decode 3-50x faster). 'lossy': lossy J2K "
        "and JPEG only, so a lossless file stores exactly what its uncompressed twin stores "
        "(and dedups against it); 'all': lossless J2K too. Reduced decodes differ from the "
        "full one by ~0.4 (J2K) to ~0.5-1 (JPEG) uint8 levels on average at 512 px, more "
        "at smaller sizes; 'off': always full resolution (the pixels of before).",
        "lossy",
    )

    def __post_init__(self) -> None:
        # One path given as a string is one source, not a list of its characters.
        if isinstance(self.sources, str | os.PathLike):
            self.sources = [os.fspath(self.sources)]

    def validate(self) -> None:
        if self.workers < 0:
            raise ConfigError(f"workers {self.workers} is negative; use 0 for all cores")
        if self.max_pixels < 1 or self.chunk_files < 1:
            raise ConfigError("max_pixels and chunk_files must be >= 1")
        if self.image_size < 16:
            raise ConfigError(f"image_size {self.image_size} is too small (>= 16)")
        if not 0 <= self.val_fraction + self.test_fraction < 1:
            raise ConfigError("val_fraction + test_fraction must be in [0, 1)")
        if not 0 <= self.window_low_pct < self.window_high_pct <= 100:
            raise ConfigError("need 0 <= window_low_pct < window_high_pct <= 100")


def _row_builder(cfg: IngestConfig, salt: bytes) -> RowBuilder:
    """The per-file worker of this ingest: the settings that decide a row, typed."""
    return RowBuilder(
        salt=salt,
        reports=cfg.reports,
        image_size=cfg.image_size,
        dtype=cfg.dtype,
        min_size=cfg.min_size,
        window_low_pct=cfg.window_low_pct,
        window_high_pct=cfg.window_high_pct,
        allow_burned_in=cfg.allow_burned_in,
        check_chest=cfg.check_chest,
        keep_paths=cfg.keep_paths,
        layout_reports=cfg.layout_reports,
        layout_splits=cfg.layout_splits,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        max_pixels=cfg.max_pixels,
        scrub_reports=cfg.scrub_reports,
        decode_reduce=cfg.decode_reduce,
    )


# The builder a worker process received once from the pool initializer.
_worker_builder: RowBuilder | None = None


def _install(builder: RowBuilder) -> None:
    from cxrkit.workers import exit_with_parent

    global _worker_builder
    exit_with_parent()  # a killed ingest must not leave its decode workers behind
    _worker_builder = builder.prepare()


def _worker_ready() -> bool:
    return _worker_builder is not None


def _build_in_worker(item: WorkItem) -> dict:
    assert _worker_builder is not None, "pool started without _install"
    return _worker_builder(item)


# ---------------------------------------------------------------- orchestration
def _load_mapping(cfg: IngestConfig) -> tuple[dict[Path, MappingRow], list[WorkItem]]:
    """Mapping rows by resolved image path, and the rows naming an image a previous row
    already named (``./a.png`` after ``a.png``): those become ``duplicate_mapping_row``
    rejects, so every CSV row ends as a dataset row or a reject."""
    first: dict[Path, MappingRow] = {}
    duplicates: list[WorkItem] = []
    for row in read_mapping_csv(Path(cfg.mapping)):
        key = src.safe_resolve(Path(row.image_path))
        if key in first:
            row.duplicate_of = first[key].line
            duplicates.append((str(key), row))
        else:
            first[key] = row
    return first, duplicates


def _plan(cfg: IngestConfig) -> tuple[list[WorkItem], int, dict, list[Path], dict[str, int]]:
    """The ordered work list for this partition, the number of skipped files, partition
    info, the dataset tables (:mod:`cxrkit.io.tables`) that were read, and the counts of
    IU table rows read and not used (over every partition)."""
    mapping, duplicates = _load_mapping(cfg) if cfg.mapping else ({}, [])
    found = find_tables(cfg.sources) if cfg.dataset_tables and cfg.sources else []
    tables = DatasetTables.read(found, cfg.mimic_labels)
    if tables:
        log.info("reading the dataset's own tables: %s", ", ".join(p.name for p in tables.paths))
    files, skipped = src.expand_sources(cfg.sources) if cfg.sources else ([], 0)
    if not files and not mapping:
        raise ConfigError("nothing to ingest: give SOURCES and/or --mapping")
    names = sorted(set(files) | set(mapping))
    index, count = src.resolve_partition(cfg.shard_index, cfg.num_shards)
    work = [(str(p), mapping.get(p) or (tables.hints_for(p) if tables else None)) for p in names]
    table_rows = _log_iu_tables(work, tables) if tables.iu else {}
    part: dict = {"shard_index": index, "num_shards": count}
    if cfg.layout_splits and (folder_splits := _folder_splits(work)):
        log.info(
            "%d image(s) take their split from the dataset's split folders "
            "(CheXpert train/ valid/ test/)",
            folder_splits,
        )
        part["folder_splits"] = folder_splits  # counted over every partition: parts agree
    work += sorted(duplicates, key=lambda item: (item[0], item[1].line))
    if count > 1:
        work = [item for item in work if src.partition_of(Path(item[0]), count) == index]
    return work, skipped, part, tables.paths, table_rows


def _log_iu_tables(work: list[WorkItem], tables: DatasetTables) -> dict[str, int]:
    """Say how many images the IU tables (Kaggle / R2Gen) keyed, how many of those
    have no report in them (ingested without one; ``report_source`` ``none``), and how
    many Kaggle report/projection rows no image used; returns those row counts."""
    keyed = [m for _, m in work if m is not None and (m.patient_id or "").startswith("iu:")]
    missing = sum(m.report is None for m in keyed)
    log.info("%d image(s) take patient/study (one per IU report) from the IU tables", len(keyed))
    if missing:
        log.warning(
            "%d IU image(s) have no report in %s: ingested without a report",
            missing,
            ", ".join(p.name for p in tables.iu.paths),
        )
    rows = tables.iu.unused_rows(
        (Path(path).name for path, _ in work), (m.patient_id or "" for m in keyed)
    )
    for kind in ("report", "projection"):
        if rows.get(f"iu_{kind}_rows_without_image"):
            log.info(
                "%d of %d IU %s rows name no image given: not used",
                rows[f"iu_{kind}_rows_without_image"],
                rows[f"iu_{kind}_rows"],
                kind,
            )
    return rows


def _folder_splits(work: list[WorkItem]) -> int:
    """How many images of the work list get their split from a split folder of the
    layout (no split from the mapping row, and the path is in one).

    Raises InputError when that puts one patient in two splits (a patient folder in
    ``train/`` and ``valid/``, or a folder split against a mapping row's split): the
    message counts such patients and names the first; never silent leakage.
    """
    count = 0
    splits: dict[str, set[str]] = {}
    for path, mapped in work:
        keys = layout_keys(path)
        split = mapped.split if mapped and mapped.split else None
        if split is None and keys is not None and keys.split:
            split = keys.split
            count += 1
        patient = (mapped.patient_id if mapped else None) or (keys.patient if keys else None)
        if split and patient:
            splits.setdefault(patient, set()).add(split)
    mixed = [patient for patient, names in splits.items() if len(names) > 1]
    if count and mixed:
        raise InputError(
            f"{len(mixed)} patient(s) would be in more than one split (e.g. {mixed[0]} in "
            f"{', '.join(sorted(splits[mixed[0]]))}): the dataset's split folders put one "
            "patient's images in two of train/ valid/ test/ (or against the mapping's split); "
            "keep each patient in one folder, or --set layout_splits=false for the salted "
            "patient split"
        )
    return count


# Encodings that `decode_reduce` decodes at a reduced size; part of the dataset id.
REDUCED_CODECS = ("jpeg2000", "jpeg-dct")


def _id_params(cfg: IngestConfig, salt: bytes, part: dict) -> dict:
    params = to_dict(cfg)
    for volatile in ("out", "workers", "salt_file", "shard_index", "num_shards", "chunk_files"):
        params.pop(volatile)
    # Counts in the id through ``part["folder_splits"]`` only where a split folder was used,
    # so datasets without one keep the ids they had before split folders were read.
    params.pop("layout_splits")
    params.update(part)
    if cfg.decode_reduce != "off":
        # Which codecs the reduced decode covers: adding one changes stored pixels under
        # the same settings, so it changes the id ("off" decodes as before: same ids).
        params["reduced_codecs"] = list(REDUCED_CODECS)
    if not cfg.keep_paths:  # folder names carry PHI in real archives: salted tokens only
        params["sources"] = [_path_token(salt, s) for s in cfg.sources]
        params["reports"] = _path_token(salt, cfg.reports) if cfg.reports else None
        params["mapping"] = _path_token(salt, cfg.mapping) if cfg.mapping else None
    # The salt changes every pseudonym, so it belongs in the id; only a keyed
    # fingerprint of it is stored, never the salt.
    params["salt_fingerprint"] = salt_fingerprint(salt)
    return params


def run(cfg: IngestConfig, force: bool = False) -> Artifact:
    """Ingest images and reports into a dataset artifact at ``cfg.out``.

    Returns the published Artifact. Raises ConfigError/InputError for unusable
    settings or sources; per-file problems go to ``rejects.parquet``.
    """
    if not cfg.out:
        raise ConfigError("--out is required")
    salt = load_or_create_salt(Path(os.path.expanduser(cfg.salt_file)))
    work, skipped, part, table_paths, table_rows = _plan(cfg)

    def shown(path: str) -> str:  # raw input paths reach the manifest only with keep_paths
        return path if cfg.keep_paths else f"path:{_path_token(salt, path)}"

    images = ", ".join(map(shown, cfg.sources)) or f"images listed in {shown(cfg.mapping)}"
    raw_inputs = [
        {"kind": "raw", "id": src.fingerprint([Path(p) for p, _ in work]), "path": images}
    ]
    if cfg.mapping:
        raw_inputs.append(
            {"kind": "raw", "id": src.fingerprint([Path(cfg.mapping)]), "path": shown(cfg.mapping)}
        )
    if cfg.reports:
        raw_inputs.append(
            {
                "kind": "raw",
                "id": _reports_fingerprint(Path(cfg.reports)),
                "path": shown(cfg.reports),
            }
        )
    for table in table_paths:
        raw_inputs.append({"kind": "raw", "id": src.fingerprint([table]), "path": table.name})
    beside = _reports_beside(work)
    if beside and cfg.layout_reports:
        log.info("attaching %d MIMIC-CXR study reports found beside the study folders", len(beside))
        raw_inputs.append(
            {"kind": "raw", "id": src.fingerprint(beside), "path": "MIMIC-CXR study reports"}
        )
    elif beside:
        log.warning(
            "%d MIMIC-CXR report files beside the study folders were found and not used "
            "(layout_reports is off)",
            len(beside),
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
        write_local_rejects(done, work, salt)
        return done
    tmp = writer.begin()
    start = time.monotonic()
    decoded = _run_chunks(cfg, salt, work, tmp / ".work")
    stats = combine_chunks(
        tmp / ".work", tmp, cfg.shard_max_bytes, cfg.row_group_bytes, n_inputs=len(work)
    )
    elapsed = time.monotonic() - start
    stats.update(
        {
            "inputs": len(work),
            "non_image_files_skipped": skipped,
            "study_reports_beside": len(beside) if cfg.layout_reports else 0,
            "dataset_tables": [p.name for p in table_paths],
            **table_rows,
            "images_per_s": round(decoded / elapsed, 2) if elapsed else None,
            "wall_s": round(elapsed, 2),
            **part,
        }
    )
    artifact = writer.publish(
        schema={"arrow": str(DATASET_SCHEMA), "rejects": str(REJECTS_SCHEMA)}, stats=stats
    )
    write_local_rejects(artifact, work, salt)
    return artifact


def _reports_beside(work: list[WorkItem]) -> list[Path]:
    """The MIMIC-CXR study reports that sit beside the study folders of the work list."""
    found: dict[Path, Path | None] = {}
    for path, _ in work:
        study_dir = Path(path).parent
        if study_dir not in found:
            found[study_dir] = mimic_report_beside(path)
    return sorted(p for p in found.values() if p is not None)


def _path_token(salt: bytes, path: str) -> str:
    from cxrkit.io.deid import Pseudonymizer

    return Pseudonymizer(salt).path_token(path)


def _reports_fingerprint(path: Path) -> str:
    if path.is_file():
        return src.fingerprint([path])
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return src.fingerprint(files)


def _run_chunks(cfg: IngestConfig, salt: bytes, work: list[WorkItem], scratch: Path) -> int:
    """Decode all chunks not yet on disk. Returns the number of files decoded in this call."""
    scratch.mkdir(exist_ok=True)
    size = max(1, cfg.chunk_files)
    chunks = [work[i : i + size] for i in range(0, len(work), size)]
    todo = [i for i, done in enumerate(chunks_done(scratch, len(chunks))) if not done]
    if len(todo) < len(chunks):
        log.info("resuming: %d of %d chunks already done", len(chunks) - len(todo), len(chunks))
    builder = _row_builder(cfg, salt)
    builder.prepare()  # a bad --reports source fails here, in this process, with its reason
    # The digests planning remembered, written now: the workers look each file up again,
    # and what is still buffered in this process they would hash a second time.
    hashcache.flush()
    workers = cfg.workers or os.cpu_count() or 1
    items = (item for i in todo for item in chunks[i])

    def died(codes: list[int], pool: ProcessPoolExecutor) -> WorkerDied:
        return WorkerDied(_pool_death(pool, codes, scratch, len(chunks)))

    done = 0
    with progress("ingest", total=sum(len(chunks[i]) for i in todo)) as bar:
        results = _crash_safe_map(builder, items, workers, died)
        try:
            for i in todo:
                chunk_results = [next(results) for _ in chunks[i]]
                write_chunk(scratch, i, chunk_results)
                done += len(chunk_results)
                bar.advance(len(chunk_results))
        finally:
            results.close()  # shuts the pool down
    return done


def _pool_death(pool: ProcessPoolExecutor, codes: list[int], scratch: Path, n_chunks: int) -> str:
    """Why the pool broke (the dead workers' exit codes) and what was kept."""
    from cxrkit.workers import death_causes

    kept = sum(chunks_done(scratch, n_chunks))
    return (
        f"a decode worker process died ({death_causes(pool, codes)}); "
        f"{kept} of {n_chunks} chunk(s) finished and are kept in {scratch.parent}; re-run "
        "the same command to resume (fewer --workers or a lower --image-size use less memory)"
    )


def _start_pool(builder: RowBuilder, workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=_install, initargs=(builder,)
    )


def _crash_safe_map(builder: RowBuilder, items, workers: int, died) -> Iterator[dict]:
    """Ordered results of ``builder`` over ``items``, decoded in a pool of ``workers``
    spawned processes with at most ``workers * 8`` files in flight.

    Unlike mapping chunk by chunk, workers never idle at chunk boundaries, and unlike
    ``pool.map`` over everything, a 377k-file ingest does not create 377k futures up
    front. Even with one worker no file is decoded in this process: a native decoder
    that aborts or segfaults on a hostile file takes down a worker, not the run.

    When a worker dies by a crash signal (:data:`cxrkit.workers.CRASH_SIGNALS`), the
    files whose results the broken pool lost are decoded again one per fresh process
    (:func:`_isolate`), the one that crashes becomes a ``decoder_crashed`` reject, and a
    new pool takes the remaining files. Raises ``died(exit codes, pool)`` (a WorkerDied)
    when a worker died otherwise (SIGKILL: likely the OOM killer).
    """
    from cxrkit.workers import crash_signal, dead_exit_codes

    items = iter(items)
    while True:
        pool = _start_pool(builder, workers)
        pending: deque[list] = deque()  # [item, future or None when submit failed]
        try:
            for item in items:
                pending.append([item, None])
                pending[-1][1] = pool.submit(_build_in_worker, item)
                if len(pending) >= workers * 8:
                    result = pending[0][1].result()
                    pending.popleft()
                    yield result
            while pending:
                result = pending[0][1].result()
                pending.popleft()
                yield result
            return
        except BrokenProcessPool:
            codes = dead_exit_codes(pool)
            signal_name = crash_signal(codes)
            if signal_name is None:
                raise died(codes, pool) from None
            log.warning(
                "a decode worker died by %s; decoding the %d file(s) in flight again, "
                "one per process, to find the one that crashes it",
                signal_name.name,
                len(pending),
            )
        finally:
            pool.shutdown(cancel_futures=True)
        yield from _isolate(builder, list(pending), workers, died)


def _isolate(builder: RowBuilder, lost: list[list], workers: int, died) -> Iterator[dict]:
    """Results of the ``[item, future]`` pairs of a broken pool, in order: a future that
    finished keeps its result; every other item is decoded again alone in a fresh
    spawned process (up to ``workers`` at a time), and one whose process dies by a crash
    signal becomes a ``decoder_crashed`` reject. Raises ``died(exit codes, pool)`` when
    such a process dies otherwise (SIGKILL, an exit code)."""
    from cxrkit.workers import crash_signal, dead_exit_codes

    results: list[dict | None] = []
    for _, future in lost:
        if (
            future is None
            or not future.done()
            or future.cancelled()
            or isinstance(error := future.exception(), BrokenProcessPool)
        ):
            results.append(None)
        elif error is not None:
            raise error  # what the worker raised (MemoryError): as without the crash
        else:
            results.append(future.result())
    again = [k for k, result in enumerate(results) if result is None]
    for start in range(0, len(again), workers):
        batch = again[start : start + workers]
        pools = {k: _start_pool(builder, 1) for k in batch}
        try:
            # A process that dies before it is handed the file (in _install) is no file's
            # fault: not a reject, the run stops as for any other dead worker.
            ready = {k: pools[k].submit(_worker_ready) for k in batch}
            for k in batch:
                try:
                    ready[k].result()
                except BrokenProcessPool:
                    raise died(dead_exit_codes(pools[k]), pools[k]) from None
            futures = {k: pools[k].submit(_build_in_worker, lost[k][0]) for k in batch}
            for k in batch:
                try:
                    results[k] = futures[k].result()
                except BrokenProcessPool:
                    codes = dead_exit_codes(pools[k])
                    if (crash := crash_signal(codes)) is None:
                        raise died(codes, pools[k]) from None
                    log.warning("a file crashed its decoder (%s): rejected", crash.name)
                    path, _ = lost[k][0]
                    results[k] = builder.reject(
                        path,
                        "decoder_crashed",
                        f"the decoding process died by {crash.name} "
                        f"(a native decoder crashed on this file)",
                    )
        finally:
            for pool in pools.values():
                pool.shutdown(cancel_futures=True)
    yield from results


# ---------------------------------------------------------------- merge partitions
def _without_listings(parts: list[str | Path]) -> list[Path]:
    """``parts`` less the local reject listings of other listed parts."""
    paths = [Path(p) for p in parts]
    named = {p.resolve() for p in paths}
    kept = []
    for path in paths:
        stem = path.name.removesuffix(LOCAL_REJECTS_SUFFIX)
        if stem and stem != path.name and path.is_file():
            owner = path.with_name(stem)
            if owner.resolve() in named:
                log.info("ingest-merge: skipping %s (the local reject listing of %s)", path, owner)
                continue
        kept.append(path)
    return kept


def _differences(params: dict, first: dict) -> str:
    """The settings two parts' params disagree on, as ``name (this vs first)``; a long
    value (salted source tokens, the salt) is named without it."""
    names = sorted(set(params) | set(first), key=str)
    shown = []
    for name in (n for n in names if params.get(n) != first.get(n)):
        values = (params.get(name), first.get(name))
        brief = all(len(repr(v)) <= 40 for v in values)
        shown.append(f"{name} ({values[0]!r} vs {values[1]!r})" if brief else name)
    return ", ".join(shown)


def merge(parts: list[str | Path], out: str | Path, force: bool = False) -> Artifact:
    """Combine the partition datasets of one partitioned ingest into one dataset artifact.

    A part's ``PART.rejects-local.csv`` listing named beside ``PART`` itself is
    skipped (the shell glob ``part-*`` matches both). Raises ArtifactError when the
    parts are not datasets, disagree on settings, or do not cover every partition
    exactly once.
    """
    arts = [open_artifact(p, kind="dataset", verify_files=True) for p in _without_listings(parts)]
    arts.sort(key=lambda a: a.params.get("shard_index", 0))
    common = [{k: v for k, v in a.params.items() if k != "shard_index"} for a in arts]
    for art, params in zip(arts, common, strict=True):
        if params != common[0]:
            raise ArtifactError(
                f"ingest-merge: {art.path} differs from {arts[0].path} in "
                f"{_differences(params, common[0])}: the parts of one partitioned ingest "
                "share every setting and the salt"
            )
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
        write_local_rejects(done, None, None, known_paths(arts))
        return done
    tmp = writer.begin()
    # Row group by row group (~100 MB), never a whole 512 MB shard, in the parts' order.
    tables = (
        part.read_row_group(group).cast(DATASET_SCHEMA)
        for a in arts
        for f in dataset_shards(a, allow_empty=True)
        for part in [pq.ParquetFile(f)]
        for group in range(part.num_row_groups)
    )
    rejects = [pq.read_table(a.file(REJECTS_FILE)) for a in arts]
    n_inputs = sum(a.stats.get("inputs", 0) for a in arts)
    stats = write_dataset(tables, rejects, tmp, n_inputs=n_inputs)
    stats.update(
        {
            "inputs": n_inputs,
            "partitions": count,
            "rows_per_partition": [a.stats.get("rows") for a in arts],
            # every partition counted the IU table rows over the whole work list
            **{k: v for k, v in arts[0].stats.items() if k.startswith("iu_") and "_rows" in k},
        }
    )
    merged = writer.publish(
        schema={"arrow": str(DATASET_SCHEMA), "rejects": str(REJECTS_SCHEMA)}, stats=stats
    )
    # Duplicates found only now were rows of a part: their listing shows the token.
    write_local_rejects(merged, None, None, known_paths(arts))
    return merged
