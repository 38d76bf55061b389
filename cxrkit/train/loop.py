"""The training loop: Accelerate, gradient accumulation, checkpoints, resume, preemption.

The trainer knows nothing about any method: it calls ``objective.loss(batch, step)``
(through :class:`LossModule`, so DDP sees a ``forward``), optimises the key
``"loss"`` and logs every other named loss. Frozen modules of the objective
(``Objective.frozen_modules``) stay in eval mode, get no optimiser group and
are left out of EMA and of the checkpoint weights.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cxrkit import reporting
from cxrkit.errors import Interrupted, Preempted
from cxrkit.objectives.base import Objective
from cxrkit.train import checkpoint as ckpt
from cxrkit.train.config import OptimConfig, TrainConfig, resolve_precision
from cxrkit.train.optim import EMA, SCHEDULES, build_optimizer, set_lr
from cxrkit.train.runs import read_metrics
from cxrkit.train.signals import StopFlag, reason_from_code

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
# make_batches(start_batch) -> iterator over this rank's batches, from that batch on
BatchSource = Callable[[int], Iterator[dict[str, Any]]]


class LossModule(nn.Module):
    """``forward(batch, step) = objective.loss(batch, step)``: the module DDP and torch.compile wrap."""

    def __init__(self, objective: Objective) -> None:
        super().__init__()
        self.objective = objective

    def forward(self, batch: dict[str, Any], step: int = 0) -> dict[str, torch.Tensor]:
        return self.objective.loss(batch, step)


@dataclass
class StepOutput:
    """Result of one optimiser step: mean named losses (detached) and the gradient norm."""

    losses: dict[str, torch.Tensor]
    grad_norm: torch.Tensor
    images: int  # images this process used in the step


@dataclass
class FitResult:
    """What a finished run reports (main process values)."""

    steps: int
    first_loss: float | None
    final_loss: float | None
    images_per_s: float
    wall_s: float
    resumed_from: int = 0
    history: list[dict] = field(default_factory=list)


def make_accelerator(precision: str, cpu: bool | None = None, find_unused_parameters: bool = False):
    """An Accelerator with cxrkit's precision rule (see ``resolve_precision``).

    ``cpu`` forces CPU (gloo between processes); by default Accelerate decides
    from the launch environment (``ACCELERATE_USE_CPU``). Accelerate keeps one
    process-wide state and refuses a second Accelerator with another precision,
    so a later run in the same Python process (the stage used as a library)
    drops that state first; the distributed setup itself is kept.
    ``find_unused_parameters`` is handed to DDP (objectives whose branches skip
    some batches need it).
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState

    mixed = resolve_precision(precision)
    shared = AcceleratorState._shared_state
    if shared and str(shared.get("_mixed_precision", mixed)) != mixed:
        AcceleratorState._reset_state(reset_partial_state=False)
    kwargs: dict[str, Any] = {"cpu": True} if cpu else {}
    if find_unused_parameters:
        kwargs["kwargs_handlers"] = [DistributedDataParallelKwargs(find_unused_parameters=True)]
    return Accelerator(mixed_precision=mixed, **kwargs)


class Trainer:
    """Owns the prepared model/optimiser and runs optimiser steps.

    Takes the objective, the ``[optim]`` and ``[train]`` configs and an
    Accelerator (one is made from ``train.precision`` when None).
    """

    def __init__(
        self, objective: Objective, optim: OptimConfig, train: TrainConfig, accelerator: Any = None
    ) -> None:
        self.optim_cfg, self.train_cfg = optim, train
        self.accelerator = accelerator or make_accelerator(
            train.precision, find_unused_parameters=train.find_unused_parameters
        )
        self.objective = objective
        objective.freeze()
        module: nn.Module = LossModule(objective)
        if train.compile:
            module = torch.compile(module)
        fused = self.accelerator.device.type == "cuda"
        optimizer = build_optimizer(
            objective.param_groups(optim.weight_decay),
            optim.lr,
            tuple(optim.betas),
            fused=fused,
            kind=optim.optimizer,
            momentum=optim.momentum,
        )
        self.model, self.optimizer = self.accelerator.prepare(module, optimizer)
        self.ema = (
            EMA(objective, optim.ema_decay, skip=objective.frozen_prefixes())
            if optim.ema_decay
            else None
        )
        self.step = 0

    # ------------------------------------------------------------ one step
    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Move the tensors of a batch (nested dicts and lists included) to the device."""
        return to_device(batch, self.accelerator.device)

    def lr_at(self, step: int) -> float:
        """The schedule's base learning rate at ``step`` (a group's lr is this x its lr_scale)."""
        cfg = self.optim_cfg
        return SCHEDULES[cfg.schedule](
            step,
            lr=cfg.lr,
            min_lr=cfg.min_lr,
            warmup_steps=cfg.warmup_steps,
            max_steps=self.train_cfg.max_steps,
        )

    def train_step(self, micro_batches: list[dict[str, Any]]) -> StepOutput:
        """One optimiser step over ``len(micro_batches)`` accumulated micro-batches.

        Gradients are synchronised across processes only on the last micro-batch.
        Returns detached mean losses and the pre-clip global gradient norm.
        """
        self.model.train()
        count = len(micro_batches)
        totals: dict[str, torch.Tensor] = {}
        images = 0
        for index, batch in enumerate(micro_batches):
            batch = self.to_device(batch)
            sync = index == count - 1 or self.accelerator.num_processes == 1
            context = contextlib.nullcontext() if sync else self.accelerator.no_sync(self.model)
            with context:
                with self.accelerator.autocast():
                    losses = self.model(batch, self.step)
                self.accelerator.backward(losses["loss"] / count)
            for name, value in losses.items():
                value = value.detach().float()
                totals[name] = totals[name] + value if name in totals else value
            images += int(batch["image"].shape[0])
        max_norm = self.optim_cfg.grad_clip if self.optim_cfg.grad_clip > 0 else math.inf
        grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.objective)
        self.step += 1
        return StepOutput(
            {k: v / count for k, v in totals.items()},
            torch.as_tensor(grad_norm).detach().float(),
            images,
        )

    # ------------------------------------------------------------ state
    def agree_stop(self, flag: StopFlag) -> str | None:
        """The strongest stop reason over all processes (one all-reduce per step)."""
        if self.accelerator.num_processes == 1:
            return flag.reason
        import torch.distributed as dist

        code = torch.tensor([flag.code], device=self.accelerator.device)
        dist.all_reduce(code, op=dist.ReduceOp.MAX)
        return reason_from_code(int(code.item()))

    def trainer_state(self, loader: dict[str, int]) -> dict[str, Any]:
        return {
            "step": self.step,
            "loader": dict(loader),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": ckpt.rng_state(),
            "world_size": self.accelerator.num_processes,
        }

    def save_checkpoint(self, run_dir: Path, loader: dict[str, int]) -> Path:
        """Atomic checkpoint of this step (every process must call it)."""
        acc = self.accelerator
        if acc.is_main_process:
            ckpt.begin(run_dir, self.step)
        acc.wait_for_everyone()
        staging = ckpt.staging_dir(run_dir, self.step)
        if not acc.is_main_process:
            ckpt.write_state(staging, ckpt.rng_state(), f"rng-rank{acc.process_index}.pt")
        acc.wait_for_everyone()
        final = ckpt.step_dir(run_dir, self.step)
        if acc.is_main_process:
            ckpt.write_model(staging, self.objective.trainable_state_dict(), self.step)
            ckpt.write_state(staging, self.trainer_state(loader))
            final = ckpt.commit(run_dir, self.step)
        acc.wait_for_everyone()
        return final

    def load_checkpoint(self, directory: Path) -> dict[str, Any]:
        """Load weights, optimiser and EMA state; return the trainer state (RNG not yet applied)."""
        weights, state = ckpt.load(directory)
        self.objective.load_trainable_state_dict(weights)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        self.step = int(state["step"])
        if state.get("world_size", 1) != self.accelerator.num_processes:
            log.warning(
                "resuming a %s-process run on %s processes: the data order will differ",
                state.get("world_size"),
                self.accelerator.num_processes,
            )
        return state

    def restore_rng(self, directory: Path, state: dict[str, Any]) -> None:
        rank = self.accelerator.process_index
        rng = state["rng"] if rank == 0 else ckpt.load_rank_rng(directory, rank)
        if rng is None:
            log.warning("%s holds no RNG state for rank %d; masks will differ", directory, rank)
            return
        ckpt.set_rng_state(rng)

    # ------------------------------------------------------------ the loop
    def fit(
        self,
        make_batches: BatchSource,
        *,
        run_dir: Path,
        batch_size: int,
        samples_per_epoch: int,
        resume_from: Path | None = None,
        stop: StopFlag | None = None,
        on_log: Callable[[dict], None] | None = None,
    ) -> FitResult:
        """Train until ``train.max_steps``; checkpoint every ``checkpoint_every`` steps.

        Takes a batch source (see ``BatchSource``), the run directory (shared by
        all processes), the per-process batch size and samples per epoch, and
        optionally a checkpoint to resume from and a callback that gets every
        logged metrics row (main process). Raises Preempted (SIGUSR1/SIGTERM)
        or Interrupted (SIGINT) after saving a checkpoint.
        """
        run_dir = Path(run_dir)
        acc, cfg = self.accelerator, self.train_cfg
        accumulate = self.optim_cfg.accumulate
        state = self.load_checkpoint(resume_from) if resume_from is not None else None
        consumed = int(state["loader"]["consumed"]) if state else 0
        resumed_from = self.step
        metrics = _MetricsLog(run_dir / METRICS_FILE, acc.is_main_process, keep_until=self.step)
        batches = make_batches(consumed // batch_size)
        if state is not None:  # after the loader exists, so nothing draws from the RNG later
            self.restore_rng(resume_from, state)
        else:
            torch.manual_seed(cfg.seed + 1000 * acc.process_index)  # masks differ per rank
        loader_state = {
            "consumed": consumed,
            "samples_per_epoch": samples_per_epoch,
            "batch_size": batch_size,
        }
        flag = stop or StopFlag()
        start = time.perf_counter()
        window = _Window(acc.num_processes)
        progress = (
            reporting.progress("pretrain", total=cfg.max_steps)
            if acc.is_main_process
            else contextlib.nullcontext(_SilentBar())
        )
        with flag, progress as bar:
            bar.advance(self.step)
            info: dict[str, str] = {}
            if reason := self.agree_stop(flag):  # a signal during start-up: stop before a step
                self._raise_stop(reason, flag, resume_from)  # nothing new to save
            while self.step < cfg.max_steps:
                set_lr(self.optimizer, self.lr_at(self.step))
                micro = [next(batches) for _ in range(accumulate)]
                self._debug_images(micro)
                out = self.train_step(micro)
                consumed += accumulate * batch_size
                loader_state["consumed"] = consumed
                window.add(out.images)
                if self.step % cfg.log_every == 0 or self.step in (1, cfg.max_steps):
                    row = self._log_row(out, window, consumed, samples_per_epoch)
                    metrics.write(row)
                    if on_log is not None and acc.is_main_process:
                        on_log(row)  # trackers (metrics.jsonl stays the source of truth)
                    info = {"loss": f"{row['loss']:.4f}", "lr": f"{row['lr']:.2e}"}
                bar.advance(1, **info)
                reason = self.agree_stop(flag)
                if self.step % cfg.checkpoint_every == 0 or reason or self.step == cfg.max_steps:
                    where = self.save_checkpoint(run_dir, loader_state)
                if reason:
                    self._raise_stop(reason, flag, where)
        wall = time.perf_counter() - start
        return FitResult(
            steps=self.step,
            first_loss=metrics.first_loss,
            final_loss=metrics.last_loss,
            images_per_s=window.overall(),
            wall_s=wall,
            resumed_from=resumed_from,
            history=metrics.rows,
        )

    def _debug_images(self, micro: list[dict[str, Any]]) -> None:
        if log.isEnabledFor(logging.DEBUG):  # lets tests see which images each rank took
            ids = [i for batch in micro for i in batch.get("image_id", [])]
            log.debug(
                "rank %d step %d images %s",
                self.accelerator.process_index,
                self.step + 1,
                ",".join(ids),
            )

    def _log_row(self, out: StepOutput, window: _Window, consumed: int, per_epoch: int) -> dict:
        """A metrics row: losses averaged over processes, lr, grad norm, img/s, epoch."""
        names = sorted(out.losses)
        values = torch.stack([out.losses[n] for n in names])
        if self.accelerator.num_processes > 1:  # every process logs at the same steps
            values = self.accelerator.reduce(values, reduction="mean")
        losses = dict(zip(names, values.tolist(), strict=True))
        row = {
            "step": self.step,
            "loss": losses.pop("loss"),
            **losses,
            "lr": self.lr_at(self.step - 1),  # the base rate this step used
            "grad_norm": float(out.grad_norm.item()),
            "img_per_s": round(window.rate(), 2),
            "epoch": consumed // max(per_epoch, 1),
            "time": round(time.time(), 3),  # wall clock: `cxrkit show` derives rate and ETA
        }
        if self.accelerator.is_main_process and not sys.stderr.isatty():
            log.info(
                "step %d loss %.4f lr %.3g grad_norm %.3g %.1f img/s",
                self.step,
                row["loss"],
                row["lr"],
                row["grad_norm"],
                row["img_per_s"],
            )
        return row

    def _raise_stop(self, reason: str, flag: StopFlag, where: Path | None) -> None:
        what = flag.signal_name or "a stop request"
        saved = f"checkpoint in {where}" if where is not None else "nothing trained yet"
        message = (
            f"stopped by {what} at step {self.step}; {saved}; re-run the same command to resume"
        )
        raise Preempted(message) if reason == "preempted" else Interrupted(message)


def to_device(value: Any, device: torch.device | str) -> Any:
    """``value`` with every tensor moved to ``device``: dicts and lists are walked."""
    if torch.is_tensor(value):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple) and any(torch.is_tensor(v) for v in value):
        return type(value)(to_device(v, device) for v in value)
    return value


class _SilentBar:
    """Progress handle of the non-main processes: only the main process reports."""

    def advance(self, n: int = 1, **info: object) -> None:
        return None


class _Window:
    """Images/s over the last logging window and over the whole run (all processes)."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self.start = self.mark = time.perf_counter()
        self.images = self.total = 0

    def add(self, images: int) -> None:
        self.images += images * self.processes
        self.total += images * self.processes

    def rate(self) -> float:
        now = time.perf_counter()
        value = self.images / max(now - self.mark, 1e-9)
        self.mark, self.images = now, 0
        return value

    def overall(self) -> float:
        return self.total / max(time.perf_counter() - self.start, 1e-9)


class _MetricsLog:
    """metrics.jsonl, written by the main process; rows past the resume step are dropped."""

    def __init__(self, path: Path, enabled: bool, keep_until: int) -> None:
        self.path, self.enabled = path, enabled
        self.rows: list[dict] = []
        if enabled and path.is_file():
            kept = read_metrics(path)  # a run killed mid-write can leave a torn last row
            self.rows = [r for r in kept if r.get("step", 0) <= keep_until]
            path.write_text("".join(json.dumps(r) + "\n" for r in self.rows))

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        self.rows.append(row)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(row) + "\n")

    @property
    def first_loss(self) -> float | None:
        return self.rows[0]["loss"] if self.rows else None

    @property
    def last_loss(self) -> float | None:
        return self.rows[-1]["loss"] if self.rows else None
