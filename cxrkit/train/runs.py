"""The life of a long run: what a run directory holds about itself, extending a finished or
killed run, and the progress of a run in progress (for `cxrkit show`).

A run directory (``OUT.tmp-<pid>``) holds ``.work-run.json``: the settings that
make its id, its input ids and its length. With it a later command can tell
that ``--max-steps 60`` continues the run that stopped (or was published) at
40 rather than starting afresh in a new directory: every setting equal except
``train.max_steps``, the same inputs, and fewer steps done than now asked for.
The cosine schedule is then recomputed for the new length from the step the
run had reached (the usual meaning of "train longer").
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxrkit.artifacts import ArtifactWriter, read_manifest
from cxrkit.artifacts.manifest import PARTIAL_MARKER
from cxrkit.artifacts.owners import owner, owner_state
from cxrkit.errors import ArtifactError, CxrkitError, InputError
from cxrkit.train import layout as ckpt
from cxrkit.train.weights_changes import changed_weights, same_run

log = logging.getLogger(__name__)

RUN_FILE = ".work-run.json"  # ".work*" files are scratch: publish removes them
METRICS_FILE = "metrics.jsonl"


@dataclass
class Extension:
    """A run this one continues: its directory, id and the steps it had done."""

    source: str  # "published" (OUT itself) or "unfinished" (a killed run's temp dir)
    path: Path
    id: str
    steps: int

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "id": self.id, "steps": self.steps}


def write_run_info(
    run_dir: Path,
    run_id: str,
    params: dict,
    inputs: list[str],
    max_steps: int,
    input_refs: list[dict] | None = None,
) -> None:
    """Record what the run is: id, params, input ids, max_steps and the input entries
    (paths and weights settings, for :func:`refuse_changed_weights`)."""
    info = {"id": run_id, "params": params, "inputs": inputs, "max_steps": max_steps}
    if input_refs is not None:
        info["input_refs"] = input_refs
    (Path(run_dir) / RUN_FILE).write_text(json.dumps(info))


def refuse_changed_weights(writer: ArtifactWriter) -> None:
    """ArtifactError when OUT, or a stopped run of OUT, of the same settings was trained
    from other weights than the command names now (:func:`changed_weights`): the file
    was replaced, or the setting points at another file.

    Resuming it would mix two sets of starting weights in one run, and starting
    afresh beside it would leave it behind unexplained; so the user decides: put the
    file back (the run resumes) or pass ``--force`` / ``--resume never`` (a new run).
    """
    found = _changed_weights_run(writer)
    if found is not None:
        raise ArtifactError(found[1])


def _warn_changed_weights(writer: ArtifactWriter) -> None:
    """What :func:`refuse_changed_weights` refuses, as a warning (--force, --resume never)."""
    found = _changed_weights_run(writer)
    if found is not None:
        where, message = found
        fate = "replaced when this run publishes" if where == writer.out else "left as it is"
        log.warning("%s; training afresh as asked (%s is %s)", message, where, fate)


def _changed_weights_run(writer: ArtifactWriter) -> tuple[Path, str] | None:
    """(where, one-line message) of the first earlier run whose weights differ, or None."""
    refs = writer._input_refs
    earlier: list[tuple[Path, dict, list]] = []
    if (writer.out / "manifest.json").is_file():
        try:
            manifest = read_manifest(writer.out)
            earlier.append((writer.out, manifest.get("params", {}), manifest.get("inputs", [])))
        except ArtifactError:
            pass
    for run_dir in sorted(writer.out.parent.glob(writer.out.name + ".tmp-*")):
        try:
            info = json.loads((run_dir / RUN_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if info.get("id") != writer.id:
            earlier.append((run_dir, info.get("params", {}), info.get("input_refs", [])))
    paths = {r["setting"]: r.get("path") for r in refs if r.get("setting")}
    for where, params, their_refs in earlier:
        changed = changed_weights(writer.params, refs, params, their_refs)
        if changed:
            setting, before_path, before, now = changed[0]
            path = paths[setting]
            then = f"sha256 {before[:12]}" + (f" at {before_path}" if before_path != path else "")
            return where, (
                f"{path}: {setting} holds other weights than the run in {where} was trained "
                f"from ({then}; {now[:12]} now); put those weights back to "
                + ("resume it" if where != writer.out else "keep it up to date")
                + ", or re-run with --force (or --resume never) to train afresh"
            )
    return None


def steps_done(run_dir: Path) -> int:
    """Optimiser steps saved in a run directory (latest checkpoint, or its final state)."""
    latest = ckpt.latest(run_dir)
    if latest is not None:
        return int(latest.name.split("-")[1])
    rows = read_metrics(Path(run_dir) / METRICS_FILE)
    return int(rows[-1]["step"]) if rows and (Path(run_dir) / ckpt.STATE_FILE).is_file() else 0


def find_extension(
    writer: ArtifactWriter, params: dict, inputs: list[str], max_steps: int
) -> Extension | None:
    """The finished or killed run that this one extends, if any.

    Looks at OUT (published) and at the temp dirs of dead runs. A match with
    as many steps as asked or more is not extendable: that is logged as a
    warning (the new run starts from step 0, and OUT is not replaced without
    --force), never passed over silently.
    """
    out = writer.out
    candidates: list[Extension] = []
    if (out / "manifest.json").is_file():
        try:
            manifest = read_manifest(out)
        except ArtifactError:
            manifest = {}
        same_inputs = [i.get("id") for i in manifest.get("inputs", [])] == inputs
        if (
            manifest.get("kind") == "checkpoint"
            and manifest.get("id") != writer.id
            and same_inputs
            and same_run(manifest.get("params", {}), params)
        ):
            steps = int(manifest.get("stats", {}).get("steps", 0))
            candidates.append(Extension("published", out, manifest["id"], steps))
    for run_dir in sorted(out.parent.glob(out.name + ".tmp-*")):
        try:
            info = json.loads((run_dir / RUN_FILE).read_text())
            marker = json.loads((run_dir / PARTIAL_MARKER).read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if (
            info.get("id") != writer.id
            and info.get("inputs") == inputs
            and same_run(info.get("params", {}), params)
            and owner_state(marker) == "dead"
        ):
            candidates.append(Extension("unfinished", run_dir, info["id"], steps_done(run_dir)))
    usable = [c for c in candidates if 0 < c.steps < max_steps]
    for skipped in (c for c in candidates if c.steps >= max_steps):
        log.warning(
            "%s holds the same run at step %d, not fewer than train.max_steps %d: it cannot be "
            "extended to a shorter run; this run starts from step 0",
            skipped.path,
            skipped.steps,
            max_steps,
        )
    return max(usable, key=lambda c: c.steps) if usable else None


def adopt(extension: Extension, writer: ArtifactWriter) -> None:
    """Make ``writer.begin()`` continue the extended run.

    An unfinished run's temp dir is re-labelled with the new id (so begin
    adopts it); extending the published OUT lets the writer replace it.
    """
    if extension.source == "unfinished":
        marker = extension.path / PARTIAL_MARKER
        info = json.loads(marker.read_text())
        marker.write_text(json.dumps({**info, "id": writer.id}))
    else:
        writer.force = True  # OUT holds the shorter run being extended; replace it at publish
    log.warning(
        "extending %s run %s from step %d (%s); the learning-rate schedule now runs to the new "
        "train.max_steps",
        extension.source,
        extension.id[:12],
        extension.steps,
        extension.path,
    )


def begin_run(
    writer: ArtifactWriter, resume: str, max_steps: int, accelerator: Any
) -> tuple[Path, Extension | None, str]:
    """The main process begins (or adopts) OUT.tmp-<pid>; the others learn its path.

    Takes the artifact writer, ``train.resume``, ``train.max_steps`` and the
    Accelerator. Returns (run directory, the run extended or None, the
    ``resume`` to use). Refuses (ArtifactError) when another live run, or one
    on another host that cannot be checked, is building the same artifact,
    unless ``resume`` names that run's folder (the user says it is dead: it is
    taken over and continued, resume becomes "auto"); finds the run this one
    extends (:func:`find_extension`, with ``resume = "auto"``). Errors reach every
    process, so none waits for a broadcast that never comes.
    """
    from accelerate.utils import broadcast_object_list

    payload: list[Any] = [None]
    if accelerator.is_main_process:
        try:
            payload[0] = _begin_main(writer, resume, max_steps)
        except CxrkitError as exc:
            payload[0] = exc
    if accelerator.num_processes > 1:
        broadcast_object_list(payload, from_process=0)
    if isinstance(payload[0], CxrkitError):
        raise payload[0]
    run_dir, extension, resume = payload[0]
    return Path(run_dir), extension, resume


def _begin_main(
    writer: ArtifactWriter, resume: str, max_steps: int
) -> tuple[str, Extension | None, str]:
    if (busy := writer.busy()) is not None:
        where, info, state = busy
        if state == "unknown" and _names(resume, where):  # the user vouches that it is dead
            log.warning(
                "taking over %s from pid %s on %s, as --resume names it",
                where,
                info.get("pid"),
                info.get("host"),
            )
            (where / PARTIAL_MARKER).write_text(json.dumps({**info, **owner()}))
            resume = "auto"  # begin() adopts the folder; continue from its latest checkpoint
        else:
            raise ArtifactError(
                f"{where} is being trained by pid {info.get('pid')} on "
                f"{info.get('host') or 'this host'}"
                + (
                    " (still running); wait for it, or stop it and re-run to resume"
                    if state == "alive"
                    else " (another host: cannot check it); if that run is dead, take it "
                    f"over with --resume {where}"
                )
            )
    if writer.force or resume == "never":
        _warn_changed_weights(writer)
    else:
        refuse_changed_weights(writer)  # before anything on disk changes
    _move_aside_foreign(writer)
    inputs = [r["id"] for r in writer._input_refs]
    extension = None
    if resume == "auto":
        extension = find_extension(writer, writer.params, inputs, max_steps)
        if extension is not None:
            adopt(extension, writer)
    run_dir = writer.begin()
    if extension is not None and extension.source == "published":
        metrics = run_dir / METRICS_FILE
        if not metrics.exists():  # the history continues in the extended artifact
            shutil.copy2(extension.path / METRICS_FILE, metrics)
    write_run_info(run_dir, writer.id, writer.params, inputs, max_steps, writer._input_refs)
    return str(run_dir), extension, resume


def check_resume_source(resume: str, writer: ArtifactWriter) -> None:
    """InputError when ``train.resume`` names a checkpoint of another run.

    Resuming continues a run: its step, optimiser state and data order. A checkpoint
    (``checkpoints/step-N``, a run directory, a published checkpoint) whose run record
    (``.work-run.json`` or the manifest) has other inputs or other settings than this
    run (``train.max_steps`` aside) would be published under this run's id and
    lineage, with weights trained on what the record says. A path with no record
    nearby is not judged here (its files are checked when loaded). Takes
    ``train.resume`` and this run's artifact writer (its id params and inputs).
    """
    if resume in ("auto", "never"):
        return
    params, inputs = writer.params, [r["id"] for r in writer._input_refs]
    record = _run_record(Path(resume))
    if record is None:
        return
    where, theirs, their_inputs = record
    if their_inputs == inputs and same_run(theirs, params):
        return
    from cxrkit.config import deep_merge
    from cxrkit.io.linkage import params_differ

    if their_inputs != inputs:
        mine = ", ".join(i[:12] for i in inputs)
        other = ", ".join(str(i)[:12] for i in their_inputs)
        what = f"its inputs are {other or 'none'}, this run's {mine}"
    else:
        strip = {"train": {"max_steps": None}}
        what = "settings differ: " + params_differ(
            deep_merge(theirs, strip), deep_merge(params, strip)
        )
    raise InputError(
        f"train.resume {resume}: a checkpoint of another run ({where}; {what}); resume "
        "continues this run's own checkpoints: use --resume auto, or --resume never to "
        "start afresh"
    )


def _run_record(path: Path) -> tuple[Path, dict, list] | None:
    """(where, params, input ids) of the run a resume path belongs to: the nearest
    ``.work-run.json`` or checkpoint manifest at the path or up to two folders above
    (``OUT.tmp-N/checkpoints/step-N``); None when there is none."""
    for folder in (path, path.parent, path.parent.parent):
        try:
            info = json.loads((folder / RUN_FILE).read_text())
            return folder, info.get("params") or {}, list(info.get("inputs") or [])
        except (OSError, json.JSONDecodeError):
            pass
        try:
            manifest = read_manifest(folder)
        except ArtifactError:
            continue
        if manifest.get("kind") == "checkpoint":
            ids = [i.get("id") for i in manifest.get("inputs", [])]
            return folder, manifest.get("params") or {}, ids
    return None


def _names(resume: str, run_dir: Path) -> bool:
    """True when ``train.resume`` is ``run_dir`` or a path inside it."""
    if resume in ("auto", "never"):
        return False
    target, folder = Path(resume).resolve(), Path(run_dir).resolve()
    return target == folder or folder in target.parents


def _move_aside_foreign(writer: ArtifactWriter) -> None:
    """OUT.tmp-<this pid> left by another run (a pid reused) is renamed, never trained into."""
    mine = writer.out.parent / f"{writer.out.name}.tmp-{os.getpid()}"
    try:
        info = json.loads((mine / PARTIAL_MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return
    if info.get("id") != writer.id:
        aside = mine.with_name(f"{mine.name}-{info.get('id', 'unknown')[:12]}")
        log.info("%s belongs to another run; moved to %s", mine, aside)
        mine.rename(aside)


def read_metrics(path: Path) -> list[dict]:
    """Rows of a metrics.jsonl (a torn last line, from a kill, is skipped)."""
    rows = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def progress(out: Path) -> list[dict[str, Any]]:
    """The runs in progress (or stopped) for OUT: one dict per ``OUT.tmp-*`` directory.

    Each holds: run_dir, id, owner (host, pid, slurm job) and whether it still
    runs, step, max_steps, loss, img_per_s, eta_s (from the rate over the last
    logged rows), last_checkpoint (path, step) and the time of the last row.
    """
    out = Path(out)
    found = []
    for run_dir in sorted(out.parent.glob(out.name + ".tmp-*")):
        try:
            marker = json.loads((run_dir / PARTIAL_MARKER).read_text())
        except (OSError, json.JSONDecodeError):
            continue
        try:
            info = json.loads((run_dir / RUN_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            info = {}
        rows = read_metrics(run_dir / METRICS_FILE)
        last = rows[-1] if rows else {}
        max_steps = info.get("max_steps")
        step = int(last.get("step", 0))
        rate = _steps_per_s(rows)
        eta = (max_steps - step) / rate if rate and max_steps and step < max_steps else None
        latest = ckpt.latest(run_dir)
        found.append(
            {
                "run_dir": str(run_dir),
                "kind": marker.get("kind"),
                "id": marker.get("id"),
                "owner": {k: marker.get(k) for k in ("host", "pid", "slurm_job")},
                "state": {"dead": "stopped", "alive": "running", "unknown": "unknown"}[
                    owner_state(marker)
                ],
                "step": step,
                "max_steps": max_steps,
                "loss": last.get("loss"),
                "img_per_s": last.get("img_per_s"),
                "eta_s": round(eta) if eta is not None else None,
                "last_checkpoint": str(latest) if latest else None,
                "last_checkpoint_step": int(latest.name.split("-")[1]) if latest else None,
                "updated": last.get("time"),
            }
        )
    return found


def _steps_per_s(rows: list[dict], window: int = 20) -> float | None:
    """Steps per second over the last ``window`` timed rows of one sitting (no resume gap)."""
    timed = [r for r in rows[-window:] if "time" in r and "step" in r]
    if len(timed) >= 3:  # a gap far longer than the typical one is a stop and a restart
        gaps = [float(b["time"]) - float(a["time"]) for a, b in zip(timed, timed[1:], strict=False)]
        typical = sorted(gaps)[len(gaps) // 2]
        last_long = max((i for i, g in enumerate(gaps) if g > 10 * max(typical, 1e-3)), default=-1)
        timed = timed[last_long + 1 :]
    if len(timed) < 2:
        return None
    steps = int(timed[-1]["step"]) - int(timed[0]["step"])
    seconds = float(timed[-1]["time"]) - float(timed[0]["time"])
    return steps / seconds if steps > 0 and seconds > 0 else None
