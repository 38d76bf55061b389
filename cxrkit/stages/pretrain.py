"""`cxrkit pretrain`: a dataset (+ annotations) artifact -> a checkpoint artifact.

The run directory is the checkpoint artifact in progress (``OUT.tmp-<pid>``):
periodic checkpoints, ``metrics.jsonl`` and the loader position live there, so
re-running the same command after a kill or a preemption adopts it and
continues bit for bit (``train.resume = "auto"``). The finished run is
published atomically as OUT with model.safetensors, config.json,
metrics.jsonl, trainer_state.pt and, when the objective can reconstruct
images, reconstruction.png.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Literal

import torch

from cxrkit.artifacts import Artifact, ArtifactWriter, open_artifact
from cxrkit.artifacts.files import write_json_atomic
from cxrkit.artifacts.requests import Request, named_inputs, remember
from cxrkit.config import doc, to_dict
from cxrkit.errors import ArtifactError, ConfigError, InputError
from cxrkit.io.text_sections import DEFAULT_TEXT_SECTION
from cxrkit.models.tower_configs import VisionConfig
from cxrkit.train import checkpoint as ckpt
from cxrkit.train.batch import BatchPlan, plan_batch
from cxrkit.train.config import OptimConfig, TrainConfig
from cxrkit.train.launch import world_size
from cxrkit.train.runs import begin_run, check_resume_source
from cxrkit.train.signals import StopFlag
from cxrkit.train.slurm import SlurmJob, render_sbatch, write_sbatch
from cxrkit.train.tracking import Trackers
from cxrkit.train.tracking import require as require_trackers
from cxrkit.vision.transforms import AugmentConfig

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RECONSTRUCTION_FILE = "reconstruction.png"
RAW_MODEL_FILE = "model_raw.safetensors"  # with EMA: the raw weights, for resuming


@dataclasses.dataclass
class DataConfig:
    """Which images to train on and how to load them."""

    dataset: str = doc("dataset artifact directory (from `cxrkit ingest`)", "")
    annotations: str | None = doc(
        "annotations artifact (from `cxrkit annotate`); needed by "
        "objectives that use contours or labels",
        None,
    )
    split: str = doc("dataset split to train on", "train")
    views: list[str] = doc(
        'keep only these views, e.g. ["PA", "AP"] or ["frontal"] (PA, AP and frontal of '
        "unknown projection); empty = every view",
        [],
    )
    image_size: int = doc("side of the square training images; must equal model.image_size", 224)
    batch_size: int = doc(
        "images per process per micro-batch (global batch = batch_size x "
        "processes x optim.accumulate)",
        64,
    )
    num_workers: int = doc(
        "DataLoader worker processes per training process; does not change the data order", 4
    )
    shuffle_buffer: int = doc("samples mixed across row groups by the streaming shuffle", 1024)
    seed: int = doc("seed of the data order and augmentation", 0)
    text_section: Literal["both", "findings", "impression"] = doc(
        "report section delivered as the `text` field: findings + impression (both), or one; "
        "a report without the chosen sections gives its whole text",
        DEFAULT_TEXT_SECTION,
    )
    augment: AugmentConfig = dataclasses.field(
        default_factory=AugmentConfig, metadata={"help": "training augmentation"}
    )
    unpaired: str | None = doc(
        "a second dataset artifact whose rows join every batch as image-only rows (their "
        "reports blanked), e.g. PadChest images for MMCLIP; none = one dataset",
        None,
    )
    unpaired_per_batch: int = doc(
        "rows of each batch taken from data.unpaired (the batch mix); the other "
        "batch_size - unpaired_per_batch come from data.dataset",
        0,
    )

    def validate(self) -> None:
        """Raise ConfigError on impossible sizes or an unpaired mix that does not fit."""
        if self.batch_size < 1 or self.num_workers < 0 or self.image_size < 1:
            raise ConfigError(
                "data.batch_size and data.image_size must be >= 1, data.num_workers >= 0"
            )
        if self.unpaired and not 0 < self.unpaired_per_batch < self.batch_size:
            raise ConfigError(
                f"data.unpaired needs 0 < data.unpaired_per_batch < data.batch_size "
                f"({self.batch_size}), got {self.unpaired_per_batch}"
            )
        if not self.unpaired and self.unpaired_per_batch:
            raise ConfigError("data.unpaired_per_batch is set but data.unpaired is not")


@dataclasses.dataclass
class PretrainConfig:
    """Settings of `cxrkit pretrain` (every field can be set with --set)."""

    out: str = doc(
        "output checkpoint artifact directory (also the run directory while training)", ""
    )
    preset: str | None = doc(
        "name of the preset these settings started from (set by --preset; recorded for the "
        "model card)",
        None,
    )
    data: DataConfig = dataclasses.field(
        default_factory=DataConfig, metadata={"help": "training data"}
    )
    model: VisionConfig = dataclasses.field(
        default_factory=VisionConfig, metadata={"help": "the image encoder"}
    )
    objective: dict[str, Any] = doc(
        "the objective: `name` plus its own settings, checked against the objective's Config "
        "and completed with its defaults when the config is resolved",
        {"name": "mae"},
    )
    optim: OptimConfig = dataclasses.field(
        default_factory=OptimConfig, metadata={"help": "optimiser and schedule"}
    )
    train: TrainConfig = dataclasses.field(
        default_factory=TrainConfig, metadata={"help": "length, precision, checkpoints"}
    )

    def validate(self) -> None:
        """Raise ConfigError on settings that contradict each other."""
        if not isinstance(self.objective.get("name"), str):
            raise ConfigError("objective.name is required (e.g. --set objective.name=mae)")
        # Objectives that reconstruct a larger image than the encoder sees (MaCo's
        # 448-px target for a 224-px encoder) take the batch at objective.target_size.
        expected = self.objective.get("target_size") or self.model.image_size
        if self.data.image_size != expected:
            target = self.objective.get("target_size")
            where = "objective.target_size" if target else "model.image_size"
            raise ConfigError(
                f"data.image_size {self.data.image_size} != {where} {expected}; "
                "set both to the same value"
            )
        self.objective = resolved_objective_table(self)


def resolved_objective_table(cfg: PretrainConfig) -> dict[str, Any]:
    """The ``[objective]`` table typed by the objective's Config, every default filled in.

    Raises ConfigError for an unknown objective or setting (with a did-you-mean)
    or a bad value, at config time rather than at build time.
    """
    from cxrkit.objectives.base import resolve_objective_config

    name = cfg.objective["name"]
    resolved = resolve_objective_config(name, objective_config(cfg))
    if not dataclasses.is_dataclass(resolved):
        return {"name": name, **resolved}
    table = to_dict(resolved)
    table.pop("model", None)  # the [model] table stays where it is
    return {"name": name, **table}


def objective_config(cfg: PretrainConfig) -> dict[str, Any]:
    """The dict ``build_objective`` takes: the [model] table plus [objective] without name."""
    return {"model": to_dict(cfg.model), **{k: v for k, v in cfg.objective.items() if k != "name"}}


def build(cfg: PretrainConfig):
    """Build the configured objective (seeded with ``train.seed``). Raises ConfigError."""
    from cxrkit.objectives.base import build_objective

    torch.manual_seed(cfg.train.seed)
    return build_objective(cfg.objective["name"], objective_config(cfg))


def id_params(
    cfg: PretrainConfig,
    processes: int = 1,
    precision: str | None = None,
    weights: list[dict] | None = None,
) -> dict:
    """Settings that change the trained weights (the artifact id).

    Takes the config plus what the launch decides: the number of training
    processes (the global batch is batch_size x processes x accumulate, and each
    process draws its own share of the data) and the resolved mixed precision
    ("auto" becomes bf16 on one machine and fp32 on another); the view filter as the
    codes it keeps (:func:`view_codes`); ``weights``, the run's :func:`weights_inputs`
    (computed here when not given). Left out: paths (inputs count by their ids,
    including the artifacts the objective's settings name, see
    :func:`objective_inputs`; a weights file or folder a setting names counts as
    ``"sha256:<content>"``), resume, loader workers, the checkpoint interval and the
    trackers, none of which changes the result. Raises InputError for a weights path
    that cannot be read.
    """
    from cxrkit.objectives.base import objective_class

    params = to_dict(cfg)
    for key in objective_class(cfg.objective["name"]).artifact_settings:
        params["objective"].pop(key, None)
    for ref in weights_inputs(cfg) if weights is None else weights:
        *parents, leaf = ref["setting"].split(".")
        table = params
        for key in parents:
            table = table[key]
        table[leaf] = f"sha256:{ref['id']}"
    params["launch"] = {
        "processes": processes,
        "global_batch": cfg.data.batch_size * processes * cfg.optim.accumulate,
        "precision": precision or cfg.train.precision,
    }
    params.pop("out")
    params["data"]["views"] = view_codes(cfg.data.views)
    for key in ("dataset", "annotations", "num_workers", "unpaired"):
        params["data"].pop(key)
    params["train"].pop("resume")
    params["train"].pop("find_unused_parameters")  # a DDP setting, not a result
    params["train"].pop("checkpoint_every")  # so a re-run with another interval still resumes
    params["train"].pop("track", None)  # where metrics are copied to changes no weight
    return params


def weights_inputs(cfg: PretrainConfig) -> list[dict]:
    """Input entries for the weights files and folders the objective's settings name
    (MaCo's ``image_init``, MMCLIP's ``image_weights``, text towers' files; see
    :func:`cxrkit.objectives.weights.weights_refs`): counted by content, the path kept
    as provenance. Raises InputError for one that cannot be read."""
    from cxrkit.objectives.weights import weights_refs

    return weights_refs(cfg.objective["name"], objective_config(cfg))


def view_codes(views: list[str]) -> list[str]:
    """A view filter as the sorted codes it keeps (``[]`` for none): the form the ids hold,
    so ``pa`` and ``PA``, or ``frontal`` and its codes, are one run. Never raises for a
    filter that names a view."""
    from cxrkit.io.layouts import expand_views

    names = [v for v in views if v.strip()]
    return sorted(expand_views(names)) if names else []


def check_views(views: list[str], dataset: Artifact) -> None:
    """ConfigError (exit 2) for a typo in the view filter (see
    :func:`cxrkit.io.layouts.check_view_filter`), before any model or teacher work."""
    from cxrkit.io.layouts import check_view_filter

    check_view_filter(views, dataset.stats.get("view_counts") or {}, str(dataset.path))


def objective_inputs(cfg: PretrainConfig) -> list[Artifact]:
    """The artifacts the ``[objective]`` table names (its class's ``artifact_settings``:
    PaCX's student, pairs and embeddings), opened, in declaration order; they join the
    run's inputs so the id holds their ids, not their paths.

    Raises ArtifactError for one that is missing, damaged or of another kind.
    """
    from cxrkit.objectives.base import objective_class

    settings = objective_class(cfg.objective["name"]).artifact_settings
    return [
        open_artifact(cfg.objective[key], kind=kind)
        for key, kind in settings.items()
        if cfg.objective.get(key)
    ]


@dataclasses.dataclass
class Checked:
    """What :func:`check` found: the opened inputs and the batch plan."""

    dataset: Artifact
    annotations: Artifact | None
    plan: BatchPlan
    objective_inputs: list[Artifact] = dataclasses.field(default_factory=list)


def check(cfg: PretrainConfig, processes: int) -> Checked:
    """Everything that would make the run fail, checked before any work (and on a login node).

    Takes the resolved config and the number of training processes. Opens the
    dataset (and annotations) artifacts and those the objective's settings name, builds the objective on the meta
    device (no memory, no weights) to check its name and settings, checks that
    an objective needing contours has annotations and that the split has
    images, and derives the gradient accumulation (:func:`plan_batch`).
    Returns a :class:`Checked`. Raises ConfigError (2), InputError (3) or
    ArtifactError (4) naming the reason.
    """
    if not cfg.out:
        raise ConfigError("--out is required")
    if not cfg.data.dataset:
        raise ConfigError("a dataset artifact is required: cxrkit pretrain DATASET --out DIR")
    dataset = open_artifact(cfg.data.dataset, kind="dataset")
    check_views(cfg.data.views, dataset)
    annotations = None
    if cfg.data.annotations:
        annotations = open_artifact(cfg.data.annotations, kind="annotations")
    linked = objective_inputs(cfg)
    _check_pairs_belong(linked, dataset)
    try:
        with torch.device("meta"):  # no memory, no weights: checks names and settings
            objective = build(cfg)
    except Exception:  # noqa: BLE001 - an objective that needs real tensors to construct
        # (a text tower read with from_pretrained refuses the meta device and says so as
        # an InputError); a real error comes back from the real build.
        objective = build(cfg)
    _check_annotations(cfg, objective.needs)
    if annotations is not None:
        _check_annotations_belong(annotations, dataset, objective.needs, cfg.data.split)
    splits = dataset.stats.get("split_counts")
    if isinstance(splits, dict) and splits and not splits.get(cfg.data.split):
        raise InputError(
            f"{cfg.data.dataset}: no images in split {cfg.data.split!r} "
            f"(it has {', '.join(f'{k} {v}' for k, v in splits.items())}); set data.split"
        )
    require_trackers(list(cfg.train.track))
    plan = plan_batch(cfg.data.batch_size, processes, cfg.optim.accumulate, cfg.train.global_batch)
    return Checked(dataset, annotations, plan, linked)


def run(
    cfg: PretrainConfig,
    force: bool = False,
    accelerator: Any = None,
    request: Request | None = None,
) -> Artifact:
    """Train ``cfg.objective`` on the dataset and publish a checkpoint artifact at ``cfg.out``.

    Works the same in one process and under ``accelerate launch``. ``request``: the
    settings as the user layered them (the CLI's), recorded beside OUT once it is
    published or found current, so that the next identical command is decided
    without torch (:mod:`cxrkit.stages.noop`). Returns the published Artifact. Raises ConfigError/InputError/ArtifactError for unusable
    settings or inputs, Preempted (exit 75) or Interrupted after saving a
    checkpoint on SIGUSR1/SIGTERM or SIGINT (also when the signal comes during
    start-up, before the first step).
    """
    from cxrkit.train.loop import make_accelerator

    with StopFlag() as stop:  # from the start: a scheduler's USR1 during set-up is kept
        checked = check(cfg, world_size())
        accelerator = accelerator or make_accelerator(
            cfg.train.precision, find_unused_parameters=cfg.train.find_unused_parameters
        )
        if accelerator.num_processes != checked.plan.processes:
            checked = check(cfg, accelerator.num_processes)
        cfg = dataclasses.replace(
            cfg, optim=dataclasses.replace(cfg.optim, accumulate=checked.plan.accumulate)
        )
        log.info("%s", checked.plan.describe())
        return _train(cfg, checked, force, accelerator, stop, request)


def _train(
    cfg: PretrainConfig,
    checked: Checked,
    force: bool,
    accelerator: Any,
    stop: StopFlag,
    request: Request | None = None,
) -> Artifact:
    from cxrkit.train.loop import Trainer

    dataset = checked.dataset
    inputs = [dataset] + ([checked.annotations] if checked.annotations else [])
    inputs += checked.objective_inputs
    unpaired = open_artifact(cfg.data.unpaired, kind="dataset") if cfg.data.unpaired else None
    if unpaired is not None:
        inputs.append(unpaired)
    weights = weights_inputs(cfg)
    inputs += weights
    writer = ArtifactWriter(
        Path(cfg.out),
        "checkpoint",
        id_params(cfg, accelerator.num_processes, str(accelerator.mixed_precision), weights),
        inputs=inputs,
        schema_version=SCHEMA_VERSION,
        force=force,
        lock=accelerator.is_main_process,  # one lock per run, held by rank 0
    )
    check_resume_source(cfg.train.resume, writer)
    if _agreed_up_to_date(writer, accelerator):
        _remember(request, writer, inputs, accelerator, cfg)
        return open_artifact(cfg.out, kind="checkpoint")
    objective = build(cfg)
    _check_weights_read(cfg, weights)
    run_dir, extension, resume = begin_run(
        writer, cfg.train.resume, cfg.train.max_steps, accelerator
    )
    resume_from = _resume_point(resume, run_dir, accelerator.is_main_process)
    if resume_from is None and extension is not None and extension.source == "published":
        resume_from = extension.path
    trainer = Trainer(objective, cfg.optim, cfg.train, accelerator)
    data = _shard_dataset(cfg, dataset, objective, accelerator)
    extra = None if unpaired is None else _unpaired_dataset(cfg, unpaired, objective, accelerator)
    pin = accelerator.device.type == "cuda"

    def make_batches(start_batch: int):
        from cxrkit.io.mixing import mixed
        from cxrkit.io.shards import make_loader

        loader = make_loader(data, cfg.data.num_workers, start_batch, pin_memory=pin)
        if extra is None:
            return iter(loader)
        second = make_loader(extra, cfg.data.num_workers, start_batch, pin_memory=pin)
        return mixed(loader, second)

    log.info(
        "pretraining %s on %d %s images (%d per process per epoch), %d process(es), "
        "precision %s; run directory %s",
        cfg.objective["name"],
        data.num_samples,
        cfg.data.split,
        data.samples_per_rank,
        accelerator.num_processes,
        {"no": "fp32"}.get(str(accelerator.mixed_precision), str(accelerator.mixed_precision)),
        run_dir,
    )
    trackers = None
    if cfg.train.track and accelerator.is_main_process:
        trackers = Trackers(list(cfg.train.track), Path(cfg.out), run_dir.name, to_dict(cfg))
    try:
        result = trainer.fit(
            make_batches,
            run_dir=run_dir,
            batch_size=cfg.data.batch_size,
            samples_per_epoch=data.samples_per_rank,
            resume_from=resume_from,
            stop=stop,
            on_log=trackers.log if trackers else None,
        )
    finally:
        if trackers is not None:
            trackers.finish()
    if accelerator.is_main_process:
        _finish_run_dir(cfg, trainer, run_dir, dataset)
        stats = {**_stats(result, accelerator), "batch": checked.plan.as_dict()}
        if extension is not None:
            stats["extended_from"] = extension.as_dict()
        artifact = writer.publish(schema=_schema(cfg, objective), stats=stats)
        _remember(request, writer, inputs, accelerator, cfg)
        log.info(
            "published %s (final loss %s after %d steps)",
            artifact.path,
            result.final_loss,
            result.steps,
        )
    accelerator.wait_for_everyone()
    return open_artifact(cfg.out, kind="checkpoint")


def _remember(
    request: Request | None,
    writer: ArtifactWriter,
    inputs: list,
    accelerator: Any,
    cfg: PretrainConfig,
) -> None:
    """Record (main process) that ``request`` on this launch gives OUT's id, with the
    inputs as the config names them (see :mod:`cxrkit.artifacts.requests`)."""
    if request is None or not accelerator.is_main_process:
        return
    from cxrkit.objectives.weights import weights_sources
    from cxrkit.stages.noop import launch_facts

    weights = {}
    if any(not isinstance(i, Artifact) for i in inputs):
        weights = weights_sources(cfg.objective["name"], objective_config(cfg))
    facts = launch_facts(accelerator.num_processes, str(accelerator.mixed_precision))
    remember(writer.out, request.digest(**facts), writer.id, named_inputs(inputs, weights))


def _check_weights_read(cfg: PretrainConfig, weights: list[dict]) -> None:
    """ArtifactError when a weights file changed between hashing (the id) and building
    (what the objective read): the run would carry an id for other weights. A stat per
    file when nothing changed (the digests are remembered for this process)."""
    now = {ref["setting"]: ref["id"] for ref in weights_inputs(cfg)}
    for ref in weights:
        if now.get(ref["setting"]) != ref["id"]:
            raise ArtifactError(
                f"{ref['path']}: {ref['setting']} changed while the run started (sha256 "
                f"{ref['id'][:12]} when hashed); re-run when nothing writes to it"
            )


def _agreed_up_to_date(writer: ArtifactWriter, accelerator: Any) -> bool:
    """Rank 0 decides (under the lock) whether OUT is already done; every rank follows."""
    decision = [writer.up_to_date() is not None if accelerator.is_main_process else None]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(decision, from_process=0)
    return bool(decision[0])


def _check_annotations(cfg: PretrainConfig, needs: frozenset[str]) -> None:
    """InputError when a needed batch field comes only from an annotations artifact."""
    from cxrkit.io.fields import resolve_fields

    needing = [f.name for f in resolve_fields(needs) if f.requires_annotations]
    if needing and not cfg.data.annotations:
        what = "chest contours" if needing == ["contour"] else ", ".join(needing)
        raise InputError(
            f"objective {cfg.objective['name']!r} as configured needs {what} from an "
            "annotations artifact; run `cxrkit annotate` and pass --annotations DIR"
        )


def _check_annotations_belong(
    annotations: Artifact, dataset: Artifact, needs: frozenset[str], split: str
) -> None:
    """InputError when the annotations are another dataset's, or another version's where
    the objective reads pixels or text spans from them (see
    :func:`cxrkit.io.linkage.check_annotations`); a warning with counts for labels or
    prompts of another version."""
    from cxrkit.io.fields import resolve_fields
    from cxrkit.io.linkage import check_annotations

    uses = {f.name for f in resolve_fields(needs) if f.annotation_columns or f.requires_annotations}
    said = check_annotations(annotations, dataset, uses, split)
    if said is not None:
        log.warning("%s", said)


def _check_pairs_belong(linked: list[Artifact], dataset: Artifact) -> None:
    """The objective's pairs (and embeddings) against the dataset: see
    :func:`cxrkit.io.linkage.check_pairs` (InputError, or a logged warning)."""
    from cxrkit.io.linkage import check_pairs

    kinds = {a.kind: a for a in linked}
    if "pairs" in kinds:
        said = check_pairs(kinds["pairs"], dataset, kinds.get("embeddings"))
        if said is not None:
            log.warning("%s", said)


def write_slurm_job(cfg: PretrainConfig, job: SlurmJob) -> SlurmFiles:
    """Check ``cfg`` for ``job``'s world size, then write OUT.pretrain.json and OUT.sbatch.

    The job runs ``cxrkit pretrain DATASET --out OUT --config OUT.pretrain.json``
    (the resolved config, with ``train.resume = auto`` so a requeue resumes).
    Nothing is written when a check fails. Returns the paths and the batch plan.
    Raises ConfigError/InputError/ArtifactError (see :func:`check`).
    """
    out = Path(cfg.out).resolve()
    cfg = dataclasses.replace(
        cfg,
        out=str(out),
        objective=_absolute_weights(cfg),
        data=dataclasses.replace(
            cfg.data,
            dataset=str(Path(cfg.data.dataset).resolve()) if cfg.data.dataset else "",
            annotations=str(Path(cfg.data.annotations).resolve()) if cfg.data.annotations else None,
        ),
        train=dataclasses.replace(cfg.train, resume=_absolute_resume(cfg.train.resume)),
    )
    job.validate()
    checked = check(cfg, job.num_processes)
    if not job.job_name or job.job_name == SlurmJob.job_name:
        job.job_name = f"cxrkit-pretrain-{out.name}"
    config_path = out.parent / f"{out.name}.pretrain.json"
    args = [cfg.data.dataset, "--out", str(out), "--config", str(config_path)]
    text = render_sbatch(job, args, out.parent / f"{out.name}-%j.log")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(config_path, to_dict(cfg))
    script = write_sbatch(out.parent / f"{out.name}.sbatch", text)
    return SlurmFiles(script=script, config=config_path, plan=checked.plan)


@dataclasses.dataclass
class SlurmFiles:
    """What :func:`write_slurm_job` wrote."""

    script: Path
    config: Path
    plan: BatchPlan


def _absolute_weights(cfg: PretrainConfig) -> dict[str, Any]:
    """The [objective] table with the weights paths it sets made absolute."""
    from cxrkit.objectives.weights import with_absolute_weights_paths

    name = cfg.objective["name"]
    config = with_absolute_weights_paths(name, objective_config(cfg))
    return {"name": name, **{k: v for k, v in config.items() if k != "model"}}


def _absolute_resume(resume: str) -> str:
    return resume if resume in ("auto", "never") else str(Path(resume).resolve())


def _resume_point(resume: str, run_dir: Path, is_main: bool) -> Path | None:
    """The checkpoint to continue from: auto = the run dir's latest, never = none, else a path."""
    if resume == "never":
        if is_main and (run_dir / ckpt.CHECKPOINTS).exists():
            log.info("train.resume = never: discarding the checkpoints in %s", run_dir)
            shutil.rmtree(run_dir / ckpt.CHECKPOINTS)
        return None
    if resume == "auto":
        found = ckpt.latest(run_dir)
        if found is None and (run_dir / ckpt.STATE_FILE).is_file():
            found = run_dir  # finished but killed before publishing: the files sit at the root
        if found is not None:
            log.info("resuming from %s", found)
        return found
    path = Path(resume)
    if not path.is_dir():
        raise ConfigError(
            f"train.resume {resume!r}: not a directory; use auto, never or the "
            "path of a checkpoint (a run's checkpoints/step-N or a published "
            "checkpoint artifact)"
        )
    return ckpt.latest(path) or path


def _annotations(cfg: PretrainConfig) -> Artifact | None:
    if not cfg.data.annotations:
        return None
    return open_artifact(cfg.data.annotations, kind="annotations")


def _views(cfg: PretrainConfig) -> frozenset[str] | None:
    from cxrkit.io.layouts import expand_views

    return expand_views(cfg.data.views) if cfg.data.views else None


def _shard_dataset(cfg: PretrainConfig, dataset: Artifact, objective: Any, accelerator: Any):
    from cxrkit.io.dataset import dataset_shards
    from cxrkit.io.shards import ShardDataset
    from cxrkit.vision.transforms import TrainTransform

    data = ShardDataset(
        dataset_shards(dataset),
        transform=TrainTransform(cfg.data.augment, cfg.data.image_size),
        batch_size=cfg.data.batch_size - cfg.data.unpaired_per_batch,
        needs=objective.needs,
        split=cfg.data.split,
        views=_views(cfg),
        annotations=_annotations(cfg),
        seed=cfg.data.seed,
        shuffle_buffer=cfg.data.shuffle_buffer,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        text_section=cfg.data.text_section,
    )
    # Per-dataset fields first: a transform may tokenise the prompt set once.
    objective.on_dataset_fields(data.dataset_fields())
    data.sample_transform = objective.sample_transform()
    return data


def _unpaired_dataset(cfg: PretrainConfig, unpaired: Artifact, objective: Any, accelerator: Any):
    """``data.unpaired_per_batch`` image-only rows per batch from the second dataset.

    Reads images (and the report columns, blanked by :class:`cxrkit.io.mixing.ImageOnly`
    before the objective's sample transform); no annotations are needed.
    """
    from cxrkit.io.dataset import dataset_shards
    from cxrkit.io.mixing import ImageOnly
    from cxrkit.io.shards import ShardDataset
    from cxrkit.vision.transforms import TrainTransform

    needs = frozenset(objective.needs) & {"image", "text", "image_id"}
    data = ShardDataset(
        dataset_shards(unpaired),
        transform=TrainTransform(cfg.data.augment, cfg.data.image_size),
        batch_size=cfg.data.unpaired_per_batch,
        needs=needs,
        split=cfg.data.split,
        views=_views(cfg),
        seed=cfg.data.seed + 1,  # its own order
        shuffle_buffer=cfg.data.shuffle_buffer,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        text_section=cfg.data.text_section,
    )
    data.sample_transform = ImageOnly(
        objective.sample_transform(), entities="entities" in objective.needs
    )
    return data


def _finish_run_dir(cfg: PretrainConfig, trainer: Any, run_dir: Path, dataset: Artifact) -> None:
    """Lay out the artifact's files: final weights, config.json, trainer state, preview.

    Kill-safe order: the root gets the raw weights and the trainer state before
    the checkpoints go, so a re-run always finds one complete resume point
    (``checkpoints/step-N`` or the run directory itself).
    """
    from cxrkit.objectives.loading import save_objective

    objective = trainer.objective
    final = ckpt.latest(run_dir)
    if trainer.ema is not None:  # publish the averaged weights; keep the raw ones for resume
        raw = {k: v.detach().clone() for k, v in objective.trainable_state_dict().items()}
        ckpt.write_model(run_dir, raw, trainer.step, name=RAW_MODEL_FILE)
        objective.load_trainable_state_dict({**raw, **trainer.ema.state_dict()})
    save_objective(objective, run_dir)
    if final is not None:
        shutil.copy2(final / ckpt.STATE_FILE, run_dir / f".{ckpt.STATE_FILE}.tmp")
        os.replace(run_dir / f".{ckpt.STATE_FILE}.tmp", run_dir / ckpt.STATE_FILE)
        shutil.rmtree(run_dir / ckpt.CHECKPOINTS)
    from cxrkit.objectives.capabilities import RECONSTRUCTION, supports

    if supports(objective, RECONSTRUCTION):
        from cxrkit.train.preview import write_reconstruction

        batch = _preview_batch(cfg, dataset, objective.needs)
        write_reconstruction(
            objective,
            batch["image"],
            run_dir / RECONSTRUCTION_FILE,
            contour=batch.get("contour"),
            device=trainer.accelerator.device,
        )


def _preview_batch(cfg: PretrainConfig, dataset: Artifact, needs: Any) -> dict[str, Any]:
    """The first PREVIEW_IMAGES images of the training split, unaugmented, in dataset order."""
    from cxrkit.io.dataset import dataset_shards
    from cxrkit.io.shards import ShardDataset
    from cxrkit.train.preview import PREVIEW_IMAGES
    from cxrkit.vision.transforms import EvalTransform

    data = ShardDataset(
        dataset_shards(dataset),
        transform=EvalTransform(cfg.data.image_size),
        batch_size=PREVIEW_IMAGES,
        needs=frozenset(needs) & {"contour"},  # the preview needs images (and contours) only
        split=cfg.data.split,
        views=_views(cfg),
        annotations=_annotations(cfg),
        shuffle=False,
        loop=False,
    )
    return next(iter(data))


def _schema(cfg: PretrainConfig, objective: Any) -> dict[str, Any]:
    tensors = objective.state_dict()
    return {
        "objective": cfg.objective["name"],
        "tensors": len(tensors),
        "parameters": int(sum(p.numel() for p in objective.parameters())),
        "image_size": cfg.model.image_size,
        "in_chans": cfg.model.in_chans,
    }


def _stats(result: Any, accelerator: Any) -> dict[str, Any]:
    return {
        "first_loss": result.first_loss,
        "final_loss": result.final_loss,
        "steps": result.steps,
        "resumed_from_step": result.resumed_from,
        "img_per_s": round(result.images_per_s, 2),
        "wall_s": round(result.wall_s, 2),
        "processes": accelerator.num_processes,
        "precision": accelerator.mixed_precision,
    }
