"""Evaluation rows, image batches and cached feature extraction.

Features are computed once per (model, dataset) and cached as ``.npz`` under
``$CXRKIT_CACHE/features`` (default ``~/.cache/cxrkit/features``): the probe
sweeps fractions and seeds over the same frozen features, and re-running an
evaluation with other statistics should not re-encode every image.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from cxrkit.artifacts import Artifact
from cxrkit.io.dataset import dataset_shards, decode_pixels
from cxrkit.reporting import progress

log = logging.getLogger(__name__)

FEATURE_CACHE_VERSION = 1
META_COLUMNS = [
    "image_id",
    "patient_id",
    "study_id",
    "split",
    "labels",
    "source_path",
    "source_format",
    "view",
    "report_findings",
    "report_impression",
    "report_text",
]


REPORT_COLUMNS = ("report_findings", "report_impression", "report_text")
SHARED_VALUES = frozenset({"split", "source_format", "view"})  # low-cardinality columns
READ_ROWS = 1024  # rows converted to Python values per step when the metadata is read


@dataclass
class EvalRows:
    """Per-row metadata of a dataset artifact, in shard order.

    Pixels and report texts are not held: ``has_report`` says which rows have a
    report text and :meth:`report_texts` reads the texts of the rows a task
    asks for (from ``dataset``, as its ``text_section``).
    """

    image_ids: list[str]
    patient_ids: list[str | None]
    splits: list[str | None]
    labels_json: list[str | None]
    source_paths: list[str | None]
    source_formats: list[str | None]
    has_report: np.ndarray  # (N,) bool: the row's text_section (or fallback) is not empty
    views: list[str | None] = field(default_factory=list)  # PA / AP / LATERAL / ... per row
    study_ids: list[str | None] = field(default_factory=list)  # retrieval: a study's images
    # Patients a public label file names per row (None = unmatched): they group rows for
    # the bootstrap and cv folds, never written out (a file's ids are not pseudonyms).
    label_patients: list[str | None] | None = None
    dataset: Artifact | None = None
    text_section: str = "both"

    def __len__(self) -> int:
        return len(self.image_ids)

    def patient_groups(self) -> list[str] | None:
        """Patient keys for grouped resampling and folds, or None when any row lacks one.

        A label file's patients (``label_patients``) win where they are known: a dataset
        ingested from a flat folder has one pseudo-patient per image, the file the real ones.
        """
        if self.label_patients is not None:
            return [
                f"file:{f}" if f not in (None, "") else
                f"dataset:{p}" if p not in (None, "") else f"row:{i}"
                for i, (f, p) in enumerate(zip(self.label_patients, self.patient_ids, strict=True))
            ]  # fmt: skip
        if any(p in (None, "") for p in self.patient_ids):
            return None
        return [str(p) for p in self.patient_ids]

    def report_texts(self, indices: Sequence[int], batch_rows: int = READ_ROWS) -> Iterator[str]:
        """Yield the report text of each row in ``indices`` (ascending row numbers), read
        from the dataset ``batch_rows`` rows at a time; "" for a row without a report.

        The text is the ``text_section`` the training loader builds
        (:func:`cxrkit.io.fields.compose_text`: empty chosen sections fall back to the
        whole report). Raises ValueError when ``indices`` are not strictly ascending
        or past the last row.
        """
        from cxrkit.io.fields import compose_text

        wanted = np.asarray(indices, dtype=np.int64)
        if wanted.size and (np.any(np.diff(wanted) <= 0) or wanted[0] < 0):
            raise ValueError("report_texts needs strictly ascending row indices")
        if wanted.size and wanted[-1] >= len(self):
            raise ValueError(f"row {int(wanted[-1])} is past the last row ({len(self) - 1})")
        if not wanted.size:
            return
        if self.dataset is None:
            raise ValueError("these rows were built without their dataset: no report text")
        taken, start = 0, 0
        # image_id always exists, so every batch has its rows even without report columns
        columns = ("image_id", *REPORT_COLUMNS)
        for batch in _metadata_batches(self.dataset, columns, batch_rows):
            end = start + batch.num_rows
            stop = int(np.searchsorted(wanted, end))
            if stop > taken:
                records = batch.take(wanted[taken:stop] - start).to_pylist()
                for record in records:
                    yield compose_text(record, self.text_section)[0]
                taken = stop
                if taken == wanted.size:
                    return
            start = end


def _metadata_batches(
    dataset: Artifact, columns: Sequence[str], batch_rows: int = READ_ROWS
) -> Iterator[pa.RecordBatch]:
    """The ``columns`` (those the shards have) of every row, shard by shard, in row order."""
    for shard in dataset_shards(dataset):
        parquet = pq.ParquetFile(shard)
        names = set(parquet.schema_arrow.names)
        wanted = [c for c in columns if c in names]
        yield from parquet.iter_batches(batch_size=batch_rows, columns=wanted)


def read_rows(dataset: Artifact, text_section: str = "both") -> EvalRows:
    """Read the metadata columns of every shard of a dataset artifact (no pixels, no texts).

    The report columns are read a batch at a time only to set ``has_report``
    (the row's ``text_section`` as the training loader builds it, see
    :meth:`EvalRows.report_texts`); no report text is kept.
    """
    from cxrkit.io.fields import compose_text

    out: dict[str, list] = {c: [] for c in META_COLUMNS if c not in REPORT_COLUMNS}
    has_report: list[bool] = []
    shared: dict = {}
    for batch in _metadata_batches(dataset, META_COLUMNS):
        names = set(batch.schema.names)
        for name, values in out.items():
            column = batch.column(name).to_pylist() if name in names else [None] * len(batch)
            if name in SHARED_VALUES:  # a few distinct values: one string object each
                column = [shared.setdefault(v, v) for v in column]
            values.extend(column)
        reports = batch.select([c for c in REPORT_COLUMNS if c in names]).to_pylist()
        has_report.extend(bool(compose_text(r, text_section)[0]) for r in reports)
    return EvalRows(
        image_ids=out["image_id"],
        patient_ids=out["patient_id"],
        splits=out["split"],
        labels_json=out["labels"],
        source_paths=out["source_path"],
        source_formats=out["source_format"],
        has_report=np.asarray(has_report, dtype=bool),
        views=out["view"],
        study_ids=out["study_id"],
        dataset=dataset,
        text_section=text_section,
    )


def iter_images(dataset: Artifact, batch_rows: int = 64) -> Iterator[np.ndarray]:
    """Yield every stored image (H, W) uint8/uint16, in the order of :func:`read_rows`."""
    for shard in dataset_shards(dataset):
        parquet = pq.ParquetFile(shard)
        columns = ["pixels", "dtype", "height", "width"]
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
            for row in batch.to_pylist():
                yield decode_pixels(row["pixels"], row["dtype"], row["height"], row["width"])


def image_batches(
    dataset: Artifact,
    transform: Callable,
    batch_size: int,
    indices: Sequence[int] | None = None,
) -> Iterator[torch.Tensor]:
    """Transformed image batches (B, 1, S, S), optionally only the rows in ``indices`` (in order)."""
    wanted = None if indices is None else set(int(i) for i in indices)
    pending: list[torch.Tensor] = []
    for row, image in enumerate(iter_images(dataset)):
        if wanted is not None and row not in wanted:
            continue
        pending.append(transform(torch.from_numpy(image), None)[0])  # (1, S, S)
        if len(pending) == batch_size:
            yield torch.stack(pending)
            pending = []
    if pending:
        yield torch.stack(pending)


def cache_dir() -> Path:
    """Feature cache folder: ``$CXRKIT_CACHE/features`` or ``~/.cache/cxrkit/features``."""
    root = os.environ.get("CXRKIT_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "cxrkit"
    return base / "features"


def cache_path(model_key: str, dataset_id: str) -> Path:
    """Cache file of one (model, dataset) pair; the name hashes both ids and the cache version."""
    digest = hashlib.sha256(
        f"{FEATURE_CACHE_VERSION}|{model_key}|{dataset_id}".encode()
    ).hexdigest()[:32]
    return cache_dir() / f"{digest}.npz"


def _load_cached(path: Path, image_ids: Sequence[str]) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as stored:
            if stored["image_ids"].tolist() != list(image_ids):
                log.warning("feature cache %s does not match the dataset rows; recomputing", path)
                return None
            return stored["features"]
    except (OSError, KeyError, ValueError) as exc:
        log.warning("feature cache %s unreadable (%s); recomputing", path, exc)
        return None


def _save_cached(path: Path, features: np.ndarray, image_ids: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npz")
    np.savez(tmp, features=features, image_ids=np.asarray(list(image_ids), dtype=str))
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file


@torch.inference_mode()
def extract_features(
    encode: Callable[[torch.Tensor], torch.Tensor],
    dataset: Artifact,
    rows: EvalRows,
    transform: Callable,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    model_key: str | None = None,
) -> np.ndarray:
    """Encode every image of ``dataset``; returns float32 features (N, D) in row order.

    ``encode`` maps a batch (B, 1, S, S) on ``device`` to (B, D). With ``model_key``
    the result is read from / written to the feature cache.
    """
    path = cache_path(model_key, dataset.id) if model_key else None
    if path is not None and path.is_file():
        cached = _load_cached(path, rows.image_ids)
        if cached is not None:
            log.info("features from cache %s", path)
            return cached
    chunks = []
    with progress("features", total=len(rows)) as bar:
        for batch in image_batches(dataset, transform, batch_size):
            chunks.append(encode(batch.to(device)).float().cpu().numpy())  # (B, D)
            bar.advance(len(batch))
    features = np.concatenate(chunks).astype(np.float32)
    if path is not None:
        _save_cached(path, features, rows.image_ids)
    return features
