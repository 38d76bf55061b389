"""Where a run's checkpoints live (paths only: no torch, so `cxrkit show` stays light).

``checkpoints/step-00000100/`` holds ``model.safetensors`` and
``trainer_state.pt``; it is written as ``.step-....tmp`` and renamed into place
(see :mod:`cxrkit.train.checkpoint`).
"""

from __future__ import annotations

import re
from pathlib import Path

CHECKPOINTS = "checkpoints"
MODEL_FILE = "model.safetensors"
STATE_FILE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


def step_dir(run_dir: Path, step: int) -> Path:
    """Final directory of the checkpoint taken after ``step`` optimiser steps."""
    return Path(run_dir) / CHECKPOINTS / f"step-{step:08d}"


def staging_dir(run_dir: Path, step: int) -> Path:
    """Temp directory a checkpoint is written into before the rename."""
    return Path(run_dir) / CHECKPOINTS / f".step-{step:08d}.tmp"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint directories of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir()
        and _STEP_DIR.match(p.name)
        and (p / MODEL_FILE).is_file()
        and (p / STATE_FILE).is_file()
    ]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None
