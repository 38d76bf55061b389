"""Experiment tracking through Accelerate's trackers: TensorBoard and W&B (offline).

Off by default (``train.track = []``; ``--track tensorboard`` / ``--track wandb``).
``metrics.jsonl`` in the run stays the source of truth; trackers get a copy
of every metrics row. Their files go beside the artifact, never into it
(``OUT.tensorboard/``, ``OUT.wandb/``), so the artifact's contents and hashes
do not depend on tracking. W&B always runs in offline mode (nothing leaves the
machine; ``wandb sync`` uploads later if wanted).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from cxrkit.errors import ConfigError

TRACKERS = ("tensorboard", "wandb")
_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


def require(names: list[str]) -> None:
    """Raise ConfigError (one line) for an unknown tracker or one whose package is missing."""
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(f"train.track {name!r}: not one of {', '.join(TRACKERS)}")
        if not any(importlib.util.find_spec(p) is not None for p in _PACKAGES[name]):
            raise ConfigError(
                f"--track {name} needs the {_PACKAGES[name][0]!r} package, which is not "
                f"installed in this environment; install it or drop --track {name}"
            )


class Trackers:
    """The started trackers of one run (main process only); ``log(row)`` sends a metrics row."""

    def __init__(self, names: list[str], out: Path, run_name: str, config: dict) -> None:
        require(names)
        from accelerate.tracking import TensorBoardTracker, WandBTracker

        out = Path(out)
        self.trackers: list[Any] = []
        for name in names:
            folder = out.parent / f"{out.name}.{name}"
            folder.mkdir(parents=True, exist_ok=True)
            if name == "tensorboard":
                tracker = TensorBoardTracker(run_name, folder)
            else:
                os.environ.setdefault("WANDB_MODE", "offline")
                tracker = WandBTracker(out.name, name=run_name, dir=str(folder), mode="offline")
            tracker.start()
            tracker.store_init_configuration(_flat(config))
            self.trackers.append(tracker)

    def log(self, row: dict[str, Any]) -> None:
        values = {k: v for k, v in row.items() if k not in ("step", "time")}
        for tracker in self.trackers:
            tracker.log(values, step=int(row["step"]))

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"optim.lr": ...} with scalar values (what trackers store)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, f"{name}."))
        elif isinstance(value, int | float | str | bool):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat
