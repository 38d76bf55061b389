"""Atomic training checkpoints and RNG state.

A checkpoint is a directory ``checkpoints/step-00000100/`` inside the run
directory holding ``model.safetensors`` (the objective's state_dict) and
``trainer_state.pt`` (optimiser, step, loader position, RNG; plain tensors and
Python values only, so it loads with ``weights_only=True``), plus one
``rng-rank<r>.pt`` per extra process. It is written as ``.step-....tmp`` and
renamed into place, so a kill at any moment leaves either the previous complete
checkpoint or the new one, never a half-written pair.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cxrkit.errors import ArtifactError
from cxrkit.train.layout import CHECKPOINTS as CHECKPOINTS
from cxrkit.train.layout import MODEL_FILE, STATE_FILE, list_checkpoints, staging_dir, step_dir
from cxrkit.train.layout import latest as latest

log = logging.getLogger(__name__)


def begin(run_dir: Path, step: int) -> Path:
    """Create a clean staging directory for ``step`` and return it."""
    tmp = staging_dir(run_dir, step)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def write_model(
    directory: Path, state_dict: dict[str, torch.Tensor], step: int, name: str = MODEL_FILE
) -> Path:
    """Write a state_dict as safetensors (tensors copied to CPU, contiguous, unshared).

    Written under a temp name and renamed, so the file is either old or new.
    """
    tensors = {
        key: value.detach().to("cpu").contiguous().clone() for key, value in state_dict.items()
    }
    path = Path(directory) / name
    tmp = path.with_name(f".{name}.tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", "step": str(step)})
    os.replace(tmp, path)
    return path


def write_state(directory: Path, state: dict[str, Any], name: str = STATE_FILE) -> Path:
    """torch.save a trainer-state dict (tensors and plain Python values only)."""
    path = Path(directory) / name
    with open(path, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def commit(run_dir: Path, step: int, keep_last: int = 1) -> Path:
    """Rename the staging directory into place and delete older checkpoints."""
    final = step_dir(run_dir, step)
    if final.exists():  # re-taking the same step (e.g. stop right after a periodic save)
        shutil.rmtree(final)
    os.replace(staging_dir(run_dir, step), final)
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model state_dict, trainer state) of a checkpoint directory. Raises ArtifactError.

    A published checkpoint artifact trained with EMA keeps its raw weights in
    ``model_raw.safetensors``; those are the ones training resumes from.
    """
    directory = Path(directory)
    model_path = directory / "model_raw.safetensors"
    if not model_path.is_file():
        model_path = directory / MODEL_FILE
    state_path = directory / STATE_FILE
    if not model_path.is_file() or not state_path.is_file():
        raise ArtifactError(
            f"{directory}: not a training checkpoint (needs {MODEL_FILE} and "
            f"{STATE_FILE}); point --resume at a run or checkpoint directory"
        )
    try:
        weights = load_file(str(model_path))
    except (OSError, RuntimeError, ValueError, SafetensorError) as exc:
        raise ArtifactError(f"{model_path}: unreadable weights ({_first_line(exc)})") from exc
    return weights, _load_state(state_path)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _load_state(path: Path) -> dict[str, Any]:
    """torch.load with ``weights_only=True``; ArtifactError for a damaged or unsafe file.

    A file that holds anything but tensors and plain values (a pickled object, the
    way a malicious checkpoint runs code) is refused, never unpickled.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ArtifactError(
            f"{path}: refused: holds objects other than tensors and plain values (not a "
            f"cxrkit trainer state, possibly malicious; nothing was unpickled): {_first_line(exc)}"
        ) from exc
    except (OSError, RuntimeError, ValueError, EOFError, KeyError, AttributeError) as exc:
        raise ArtifactError(f"{path}: unreadable trainer state ({_first_line(exc)})") from exc
    if not isinstance(state, dict):
        raise ArtifactError(f"{path}: not a cxrkit trainer state (a {type(state).__name__})")
    return state


def load_rank_rng(directory: Path, rank: int) -> dict[str, Any] | None:
    """The RNG state saved by ``rank`` (rank 0's lives in trainer_state.pt)."""
    path = Path(directory) / f"rng-rank{rank}.pt"
    if not path.is_file():
        return None
    return _load_state(path)


def rng_state() -> dict[str, Any]:
    """Every RNG the training step may draw from, as weights_only-safe values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    numpy = state["numpy"]
    np.random.set_state(
        (
            numpy["kind"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached"],
        )
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
