"""`cxrkit distill`: PaCX-MAE stage 2 — a dataset, a physio artifact and an MAE checkpoint ->
an image-only checkpoint whose encoder has learnt from paired ECGs and lab panels.

Steps (each an artifact under the work directory, ``OUT.work/`` by default, each
a no-op when already up to date, so the same command resumes wherever it stopped):

1. ``pairs/``      images -> nearest ECG and lab panel (:mod:`cxrkit.stages.pairs`);
2. ``teachers/``   the ECG encoder and lab autoencoder, trained here unless
                   ``teachers`` names a local teachers artifact;
3. ``embeddings/`` every ECG and panel encoded once by the frozen teachers;
4. ``run/``        the PaCX training run: ``cxrkit pretrain``'s own run /
                   resume / preemption path (:func:`cxrkit.stages.pretrain.run`)
                   with objective ``pacx``; a kill -9 or SIGUSR1 resumes bit for bit;
5. ``OUT``         the student with LoRA merged, saved as an ordinary ``mae``
                   checkpoint (encoder + the student's decoder): eval, export and
                   pretrain take it like any other, with no physiology input.

``stage`` stops after a step: ``pairs``, ``teachers`` (pairs + teachers +
embeddings) or ``all``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Literal

from cxrkit.artifacts import Artifact, ArtifactWriter, open_artifact
from cxrkit.artifacts.requests import Request, named_inputs, remember
from cxrkit.config import doc, from_dict, to_dict
from cxrkit.errors import ArtifactError, ConfigError
from cxrkit.models.physio import TeacherConfig
from cxrkit.stages.pairs import PairsConfig
from cxrkit.stages.pretrain import DataConfig
from cxrkit.train.config import OptimConfig, TrainConfig

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SYNTHETIC_NOTE = (
    "synthetic pairs: the physiology was assigned to these images for the demo; "
    "it does not belong to these patients"
)


@dataclasses.dataclass
class DistillConfig:
    """Settings of `cxrkit distill` (every field can be set with --set)."""

    out: str = doc("output: the image-only checkpoint artifact", "")
    preset: str | None = doc("name of the preset these settings started from", None)
    dataset: str = doc("dataset artifact (from `cxrkit ingest`)", "")
    physio: str = doc("physio artifact (from `cxrkit ingest-physio`), same salt", "")
    student: str = doc("MAE checkpoint artifact (from `cxrkit pretrain`, objective mae)", "")
    teachers: str | None = doc(
        "a local teachers artifact to load; none = train the teachers here", None
    )
    work: str | None = doc("directory of the intermediate artifacts; none = OUT.work", None)
    stage: Literal["pairs", "teachers", "all"] = doc(
        "stop after: pairs | teachers (pairs, teachers, embeddings) | all", "all"
    )
    synthetic_pairs: bool = doc(
        "the physiology was assigned to the images artificially (the demo); recorded in "
        "the stats and shown with every result",
        False,
    )
    pairs: PairsConfig = dataclasses.field(
        default_factory=PairsConfig, metadata={"help": "pairing windows"}
    )
    teacher: TeacherConfig = dataclasses.field(
        default_factory=TeacherConfig, metadata={"help": "teachers trained here"}
    )
    data: DataConfig = dataclasses.field(
        default_factory=DataConfig, metadata={"help": "training images (data.dataset is ignored)"}
    )
    objective: dict[str, Any] = doc(
        "pacx settings (see `cxrkit.objectives.pacx.PacxConfig`); the model, decoder and "
        "teacher sizes come from the student and the teachers",
        {"name": "pacx"},
    )
    optim: OptimConfig = dataclasses.field(
        default_factory=OptimConfig, metadata={"help": "optimiser and schedule"}
    )
    train: TrainConfig = dataclasses.field(
        default_factory=TrainConfig, metadata={"help": "length, precision, checkpoints"}
    )

    def validate(self) -> None:
        """Check the [objective] table against the pacx Config (typos: ConfigError with a
        did-you-mean) and fill in its defaults; objective.name must be pacx."""
        from cxrkit.objectives.base import resolve_objective_config

        if self.objective.get("name", "pacx") != "pacx":
            raise ConfigError("distill trains objective pacx; objective.name must be 'pacx'")
        resolved = to_dict(resolve_objective_config("pacx", dict(self.objective)))
        resolved.pop("model", None)  # the student's [model] table is used
        self.objective = {"name": "pacx", **resolved}


def work_dir(cfg: DistillConfig) -> Path:
    """Where the intermediate artifacts live."""
    return Path(cfg.work) if cfg.work else Path(f"{cfg.out}.work")


def _require(cfg: DistillConfig) -> None:
    missing = [n for n in ("out", "dataset", "physio") if not getattr(cfg, n)]
    if cfg.stage == "all" and not cfg.student:
        missing.append("student")
    if missing:
        raise ConfigError(
            f"distill needs {', '.join(missing)}: cxrkit distill DATASET --physio PHYSIO "
            "--student MAE_CHECKPOINT --out DIR"
        )


def prepare(cfg: DistillConfig, force: bool = False) -> dict[str, Artifact]:
    """Steps 1-3: the pairs, teachers and embeddings artifacts (each a no-op when current)."""
    from cxrkit.stages import pairs, teachers

    _require(cfg)
    work = work_dir(cfg)
    paired = pairs.run(cfg.dataset, cfg.physio, work / "pairs", cfg.pairs, force=force)
    coverage = paired.stats["coverage"]
    log.info(
        "pairs: %d images; ECG %d, labs %d, both %d, none %d%s",
        coverage["images"],
        coverage["with_ecg"],
        coverage["with_labs"],
        coverage["both"],
        coverage["none"],
        f" ({SYNTHETIC_NOTE})" if cfg.synthetic_pairs else "",
    )
    out = {"pairs": paired}
    if cfg.stage == "pairs":
        return out
    if cfg.teachers:
        out["teachers"] = open_artifact(cfg.teachers, kind="teachers")
    else:
        out["teachers"] = teachers.train(cfg.physio, work / "teachers", cfg.teacher, force=force)
    out["embeddings"] = teachers.embed(
        out["teachers"].path, cfg.physio, work / "embeddings", force=force
    )
    return out


def training_config(cfg: DistillConfig, parts: dict[str, Artifact]):
    """The ``cxrkit pretrain`` config of the PaCX run (objective pacx, the student's model).

    The student's [model] table and decoder sizes come from its config.json; the
    teacher sizes from the embeddings artifact; paths are made absolute so the
    run (or a SLURM job running `cxrkit pretrain --config`) finds them anywhere.
    Raises ArtifactError when the student is not an MAE checkpoint.
    """
    from cxrkit.models.checkpoint import read_checkpoint_config
    from cxrkit.stages import pretrain

    student = open_artifact(cfg.student, kind="checkpoint")
    config = read_checkpoint_config(student.path)
    if config.objective != "mae":
        raise ArtifactError(
            f"{student.path}: the student must be an MAE checkpoint, not {config.objective!r}"
        )
    mae = dict(config.objective_config)
    schema = parts["embeddings"].manifest["schema"]
    objective = {
        **{k: v for k, v in cfg.objective.items() if v is not None},
        **{k: mae[k] for k in ("mask_ratio", "norm_pix_loss") if cfg.objective.get(k) is None},
        **{k: mae[k] for k in ("decoder_dim", "decoder_depth", "decoder_heads")},
        "name": "pacx",
        "student": str(student.path.resolve()),
        "pairs": str(parts["pairs"].path.resolve()),
        "embeddings": str(parts["embeddings"].path.resolve()),
        "ecg_dim": int(schema["ecg_dim"]),
        "lab_dim": int(schema["lab_dim"]),
    }
    model = mae["model"]
    data = dataclasses.replace(
        cfg.data,
        dataset=str(Path(cfg.dataset).resolve()),
        annotations=None,
        image_size=int(model["image_size"]),
    )
    return from_dict(
        pretrain.PretrainConfig,
        {
            "out": str((work_dir(cfg) / "run").resolve()),
            "preset": cfg.preset,
            "data": to_dict(data),
            "model": model,
            "objective": objective,
            "optim": to_dict(cfg.optim),
            "train": to_dict(cfg.train),
        },
    )


def run(
    cfg: DistillConfig,
    force: bool = False,
    accelerator: Any = None,
    request: Request | None = None,
) -> Artifact:
    """All steps; publish the image-only checkpoint at ``cfg.out`` (or stop at ``cfg.stage``).

    Works in one process and under ``accelerate launch``: the main process makes
    the pairs, teachers and embeddings while the others wait, then they find
    them current. ``request`` (the CLI's settings as layered) is recorded beside OUT
    with every artifact the run read or found current, so that the same command is
    next decided without torch (:mod:`cxrkit.stages.noop`). Returns the last artifact
    made. Raises ConfigError/InputError/ArtifactError for unusable settings or inputs;
    Preempted (exit 75) / Interrupted from the training run after it saved a
    checkpoint (re-run the same command).
    """
    from cxrkit.stages import pretrain
    from cxrkit.stages.noop import launch_facts
    from cxrkit.train import launch
    from cxrkit.train.loop import make_accelerator

    _require(cfg)
    dataset = open_artifact(cfg.dataset, kind="dataset")
    # A typo in data.views would otherwise surface only after pairs and teachers.
    pretrain.check_views(cfg.data.views, dataset)
    recording = request is not None and cfg.stage == "all" and launch.is_main_process()
    given = _given(cfg, dataset) if recording else []
    accelerator = accelerator or make_accelerator(
        cfg.train.precision, find_unused_parameters=cfg.train.find_unused_parameters
    )
    if accelerator.is_main_process:
        parts = prepare(cfg, force)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        parts = prepare(cfg, force=False)  # published by the main process: no-ops
    if cfg.stage == "pairs":
        return parts["pairs"]
    if cfg.stage == "teachers":
        return parts["embeddings"]
    run_cfg = training_config(cfg, parts)
    trained = pretrain.run(run_cfg, force=force, accelerator=accelerator)
    if not accelerator.is_main_process:
        return trained
    published = publish_student(cfg, trained, parts, force)
    # The run's own inputs must all be in the record: weights it counts by content
    # (raw inputs) would be re-hashed by the full path, so such a run is not recorded.
    if recording and not any(r.get("kind") == "raw" for r in trained.manifest["inputs"]):
        facts = launch_facts(accelerator.num_processes, str(accelerator.mixed_precision))
        used = given + [parts[k] for k in ("pairs", "teachers", "embeddings")] + [trained]
        remember(published.path, request.digest(**facts), published.id, named_inputs(used))
    return published


def _given(cfg: DistillConfig, dataset: Artifact) -> list[Artifact]:
    """The input artifacts as the command names them, opened as the steps open them (for
    the request record; the steps' own ids hold the same): dataset, physio, student and
    the given teachers. Raises ArtifactError as the steps would."""
    given = [dataset, open_artifact(cfg.physio, kind="physio")]
    given.append(open_artifact(cfg.student, kind="checkpoint"))
    if cfg.teachers:
        given.append(open_artifact(cfg.teachers, kind="teachers"))
    return given


def publish_student(
    cfg: DistillConfig, trained: Artifact, parts: dict[str, Artifact], force: bool = False
) -> Artifact:
    """Merge LoRA into the student and publish it as an ``mae`` checkpoint at ``cfg.out``."""
    import shutil

    from cxrkit.objectives.loading import load_objective, save_objective

    params = {"synthetic_pairs": cfg.synthetic_pairs}
    writer = ArtifactWriter(
        Path(cfg.out),
        "checkpoint",
        params,
        [trained, parts["pairs"], parts["embeddings"]],
        SCHEMA_VERSION,
        force,
    )
    if (done := writer.up_to_date()) is not None:
        return done
    objective = load_objective(trained.path)
    student = objective.merged_student()
    work = writer.begin()
    save_objective(student, work)
    shutil.copy2(trained.path / "metrics.jsonl", work / "metrics.jsonl")
    stats = {
        "distilled_from": "pacx",
        "first_loss": trained.stats.get("first_loss"),
        "final_loss": trained.stats.get("final_loss"),
        "steps": trained.stats.get("steps"),
        "coverage": parts["pairs"].stats["coverage"],
        "tuning": objective.cfg.tuning,
    }
    if cfg.synthetic_pairs:
        stats["note"] = SYNTHETIC_NOTE
    schema = {"objective": "mae", "image_size": student.cfg.model.image_size, "merged_lora": True}
    return writer.publish(schema=schema, stats=stats)
