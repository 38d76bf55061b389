"""Deciding a no-op re-run of the training stages before importing torch.

``cxrkit pretrain`` and ``cxrkit distill`` resolve their settings through torch
modules (objective defaults) and the device (``precision = auto``) before they can compute their ids,
so their plain no-ops cost seconds. Here the same decision is made from the request
record beside OUT (:mod:`cxrkit.artifacts.requests`): when it is certain, OUT is
returned; whenever anything is unknown or different the caller takes the full path,
which decides exactly as before (re-run, resume, extend or refuse) and records the
request for next time.
"""

from __future__ import annotations

from cxrkit.artifacts import Artifact
from cxrkit.artifacts.requests import Request, recall
from cxrkit.train.config import TrainConfig, precision_without_torch
from cxrkit.train.launch import world_size
from cxrkit.train.tracking import require as require_trackers


def pretrain_up_to_date(request: Request) -> Artifact | None:
    """The published checkpoint at OUT when ``request`` is the one that made it and
    nothing it depends on changed (see :func:`cxrkit.artifacts.requests.recall`), else
    None. Only one process (not under a multi-process launch) and only where the
    precision is certain without torch (:func:`precision_without_torch`). Raises
    ConfigError for a tracker that is not installed, as the full path does."""
    if world_size() != 1 or not request.out:
        return None
    precision = precision_without_torch(request.setting("train.precision", TrainConfig.precision))
    if precision is None:
        return None
    track = request.setting("train.track", [])
    if not isinstance(track, list):
        return None
    require_trackers([str(t) for t in track])  # ConfigError (exit 2), as on the full path
    facts = launch_facts(processes=1, precision=precision)
    return recall(request.out, "checkpoint", request.digest(**facts))


def launch_facts(processes: int, precision: str) -> dict:
    """What a training run's request digest holds besides the request: the process count,
    the resolved precision, and where the shipped MiniLM is found (the files a text
    tower with no path of its own counts, see
    :meth:`cxrkit.models.tower_configs.TextConfig.weights_sources`; None when absent)."""
    from cxrkit.errors import InputError
    from cxrkit.io.bundled import minilm_dir

    try:
        minilm = str(minilm_dir())
    except InputError:
        minilm = None
    return {"processes": processes, "precision": precision, "minilm": minilm}


def distill_up_to_date(request: Request) -> Artifact | None:
    """As :func:`pretrain_up_to_date`, for `cxrkit distill` run to the end (``stage =
    all``): its record holds the inputs and every intermediate artifact (pairs,
    teachers, embeddings, the training run), each checked at its path, so a deleted or
    rebuilt step takes the full path as before."""
    if request.setting("stage", "all") != "all":
        return None
    return pretrain_up_to_date(request)
