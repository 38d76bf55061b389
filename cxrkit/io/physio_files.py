"""Reading the physiology artifacts' files: physio (ECGs, lab panels), pairs, embeddings.

The stages that write them (:mod:`cxrkit.stages.physio`, :mod:`cxrkit.stages.pairs`,
:mod:`cxrkit.stages.teachers`) use these names; objectives read through here.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
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
    """(signals (N, 12, T) memory-mapped, index rows) of a physio artifact directory."""
    directory = Path(directory)
    array = np.load(directory / ECG_ARRAY, mmap_mode="r")
    return array, pq.read_table(directory / ECG_INDEX).to_pylist()


def load_labs(directory: str | Path) -> list[dict[str, Any]]:
    """The lab panel rows of a physio artifact directory (values and flags as lists)."""
    return pq.read_table(Path(directory) / LABS_TABLE).to_pylist()


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
    directory = Path(directory)
    ids: dict[str, Any] = json.loads((directory / IDS_JSON).read_text())
    ecg = torch.from_numpy(np.load(directory / ECG_EMB))
    lab = torch.from_numpy(np.load(directory / LAB_EMB))
    return (
        EmbeddingSet({k: i for i, k in enumerate(ids["ecg"])}, ecg),
        EmbeddingSet({k: i for i, k in enumerate(ids["lab"])}, lab),
    )
