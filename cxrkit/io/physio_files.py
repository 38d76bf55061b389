"""Reading the physiology artifacts' files: physio (ECGs, lab panels), pairs, embeddings.

The stages that write them (:mod:`cxrkit.stages.physio`, :mod:`cxrkit.stages.pairs`,
:mod:`cxrkit.stages.teachers`) use these names; objectives read through here.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:  # torch is imported by load_embeddings only: the physio no-op needs none
    import torch

ECG_ARRAY = "ecg.npy"
ECG_INDEX = "ecg.parquet"
LABS_TABLE = "labs.parquet"
LABS_INFO = "labs.json"
PAIRS_FILE = "pairs.parquet"
ECG_EMB = "ecg.npy"
LAB_EMB = "lab.npy"
IDS_JSON = "ids.json"


def load_ecgs(directory: str | Path) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """(signals (N, 12, T) memory-mapped, index rows) of a physio artifact directory.

    Raises ArtifactError when the files cannot be read (an object array is refused, never
    unpickled) or disagree: a manifest checksum proves the files are the ones listed,
    not that whoever wrote them kept ``ecg.npy`` and ``ecg.parquet`` in step.
    """
    from cxrkit.errors import ArtifactError

    directory = Path(directory)
    try:
        array = np.load(directory / ECG_ARRAY, mmap_mode="r", allow_pickle=False)
        rows = pq.read_table(directory / ECG_INDEX).to_pylist()
    except (OSError, ValueError, pa.ArrowException) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise ArtifactError(f"{directory}: unreadable ECG files ({reason})") from exc
    if array.dtype != np.float32 or array.ndim != 3 or array.shape[:2] != (len(rows), 12):
        raise ArtifactError(
            f"{directory / ECG_ARRAY}: {array.dtype} {tuple(array.shape)} is not float32 "
            f"(N, 12, T) with N = the {len(rows)} rows of {ECG_INDEX}"
        )
    return array, rows


def load_labs(directory: str | Path) -> list[dict[str, Any]]:
    """The lab panel rows of a physio artifact directory (values and flags as lists).

    Raises ArtifactError when a panel's values or flags are not one per test of
    ``labs.json``.
    """
    from cxrkit.errors import ArtifactError

    directory = Path(directory)
    try:
        rows = pq.read_table(directory / LABS_TABLE).to_pylist()
        tests = json.loads((directory / LABS_INFO).read_text())["tests"]
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise ArtifactError(f"{directory}: unreadable lab files ({reason})") from exc
    for row in rows:
        if len(row["values"] or []) != len(tests) or len(row["flags"] or []) != len(tests):
            raise ArtifactError(
                f"{directory / LABS_TABLE}: a panel without one value and flag for each of "
                f"the {len(tests)} tests of {LABS_INFO}"
            )
    return rows


def load_pairs(directory: str | Path) -> list[dict[str, Any]]:
    """The rows of a pairs artifact directory."""
    return pq.read_table(Path(directory) / PAIRS_FILE).to_pylist()


@dataclasses.dataclass
class EmbeddingSet:
    """Vectors (N, dim) of one modality and the row of each record id."""

    index: dict[str, int]
    vectors: torch.Tensor

    @property
    def dim(self) -> int:
        """The embedding size."""
        return int(self.vectors.shape[1])


def load_embeddings(directory: str | Path) -> tuple[EmbeddingSet, EmbeddingSet]:
    """(ECG, lab) embedding sets of an embeddings artifact directory."""
    import torch

    directory = Path(directory)
    ids: dict[str, Any] = json.loads((directory / IDS_JSON).read_text())
    ecg = torch.from_numpy(np.load(directory / ECG_EMB))
    lab = torch.from_numpy(np.load(directory / LAB_EMB))
    return (
        EmbeddingSet({k: i for i, k in enumerate(ids["ecg"])}, ecg),
        EmbeddingSet({k: i for i, k in enumerate(ids["lab"])}, lab),
    )
