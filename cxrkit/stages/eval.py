"""The eval stage: a checkpoint (or an open_clip model) + a labelled dataset -> an eval artifact.

Output files: ``metrics.json`` (every number with its bootstrap interval and
class counts; tasks that cannot apply are recorded with the reason),
``predictions.parquet`` (one row per image, class and task variant; retrieval
ranks), and PNG plots (ROC per task, reliability diagrams, a reconstruction grid
for masked models). metrics.json holds no timestamps, so a fixed-seed run is
reproducible byte for byte.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from cxrkit.artifacts import ArtifactWriter, open_artifact
from cxrkit.config import doc, to_dict
from cxrkit.errors import ConfigError, InputError
from cxrkit.io.layouts import check_view_filter, expand_views
from cxrkit.io.text_sections import DEFAULT_TEXT_SECTION
from cxrkit.io.text_sections import TEXT_SECTIONS as SECTIONS

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# The names of cxrkit.evaluate.tasks.TASKS, in its order (a test holds them equal): written
# out so that resolving a config and deciding a no-op re-run import no torch.
ALL_TASKS = ("zeroshot", "probe", "retrieval", "finetune")
INPUT_KINDS = ("checkpoint", "dataset", "annotations")  # artifacts eval reads, by manifest kind
ZEROSHOT_SCORINGS = ("maco", "maco_code", "clip")
TEXT_SECTIONS = ("auto", *SECTIONS)  # torch-free: a no-op re-run checks it before any model


@dataclass
class EvalConfig:
    """Settings of `cxrkit eval`."""

    dataset: str = doc("dataset artifact to evaluate on (from `cxrkit ingest`)", "")
    out: str = doc("output eval artifact directory", "")
    checkpoint: str | None = doc("checkpoint artifact (from `cxrkit pretrain`)", None)
    open_clip_config: str | None = doc(
        "open_clip model config JSON (embed_dim, vision_cfg, text_cfg) instead of a checkpoint",
        None,
    )
    open_clip_weights: str | None = doc(
        "local open_clip weights for --open-clip-config (none = random init from `seed`)", None
    )
    annotations: str | None = doc(
        "annotations artifact: report-derived labels and prompts.json for zero-shot", None
    )
    labels: str | None = doc(
        "public label file matched by file name (needs `cxrkit ingest --keep-paths`)", None
    )
    labels_format: str | None = doc(
        "format of --labels: nih, chexpert, mimic (MIMIC-CXR-JPG chexpert/negbio CSV), "
        "rsna, siim, padchest",
        None,
    )
    label_source: Literal["auto", "file", "dataset", "annotations"] = doc(
        "auto: the label file if given, else the dataset's labels column, else annotations",
        "auto",
    )
    prompts: str | None = doc("prompts JSON for zero-shot (overrides the annotations')", None)
    classes: list[str] = doc("evaluate only these classes (empty = every labelled class)", [])
    text_section: Literal["auto", "both", "findings", "impression"] = doc(
        "report text that retrieval scores: auto = the section the checkpoint was trained "
        "on (its data.text_section; both for open_clip models), or both (findings + "
        "impression), findings, impression; a row whose section is empty uses its whole "
        "report, as in pretraining",
        "auto",
    )
    views: list[str] = doc(
        'score only these views, e.g. ["PA", "AP"] or ["frontal"]; empty = every view', []
    )
    tasks: list[str] = doc("tasks: " + ", ".join(ALL_TASKS), list(ALL_TASKS))
    zeroshot_scoring: list[str] = doc(
        "zero-shot scorings: maco (pos/neg cosine softmax), maco_code (MaCo's released "
        "code: its prompts, raw dot products), clip (softmax over classes)",
        ["maco", "maco_code", "clip"],
    )
    protocol: Literal["split", "cv"] = doc(
        "split: the dataset's train/val/test; cv: grouped stratified k-fold (small sets)", "split"
    )
    train_split: str = doc("split protocol: rows that train probes and fine-tuning", "train")
    val_split: str = doc("split protocol: rows that choose decision thresholds", "val")
    test_split: str = doc("split protocol: rows that are scored", "test")
    folds: int = doc("cv protocol: number of folds", 4)
    uncertain: Literal["ignore", "positive", "negative"] = doc(
        "uncertain (-1) labels: ignore (drop), positive, or negative", "ignore"
    )
    fractions: list[float] = doc("label fractions for probe/fine-tuning", [0.01, 0.1, 1.0])
    seeds: list[int] = doc("probe seeds (label subsets); results give mean and SD", [0, 1, 2])
    probe_c_grid: list[float] = doc(
        "inverse L2 strengths the probe chooses from, per class, by validation AUROC",
        [0.01, 0.1, 1.0, 10.0],
    )
    probe_c: float = doc(
        "inverse L2 strength of the probe where no validation rows can choose one (cv protocol)",
        1.0,
    )
    probe_max_iter: int = doc("logistic-regression iterations", 1000)
    finetune_epochs: int = doc("fine-tuning epochs", 3)
    finetune_lr: float = doc("fine-tuning learning rate (AdamW)", 1e-4)
    finetune_batch_size: int = doc("fine-tuning batch size", 16)
    finetune_seeds: list[int] = doc("fine-tuning seeds", [0])
    min_count: int = doc("a class needs this many positives and negatives to get numbers", 5)
    bootstrap: int = doc("bootstrap resamples for confidence intervals", 1000)
    ci_level: float = doc("confidence level of the intervals", 0.95)
    threshold: float = doc("decision threshold when no validation rows can choose one", 0.5)
    small_n: int = doc("warn that results are anecdotal below this many scored images", 100)
    batch_size: int = doc("feature extraction batch size", 32)
    device: str = doc("auto, cpu, cuda or cuda:N", "auto")
    cache: bool = doc("cache features under $CXRKIT_CACHE/features (~/.cache/cxrkit)", True)
    plots: bool = doc("write ROC, reliability and reconstruction PNGs", True)
    seed: int = doc("seed of bootstrap, folds and random-init models", 0)

    def validate(self) -> None:
        """Raise ConfigError on settings that cannot work together."""
        if not self.dataset:
            raise ConfigError("no dataset: give the dataset artifact (DATASET argument)")
        if bool(self.checkpoint) == bool(self.open_clip_config):
            raise ConfigError(
                "give exactly one model: a checkpoint artifact (as an argument, "
                "`cxrkit eval CHECKPOINT DATASET`) or --open-clip-config FILE"
            )
        if self.open_clip_weights and not self.open_clip_config:
            raise ConfigError("--open-clip-weights needs --open-clip-config")
        if bool(self.labels) != bool(self.labels_format):
            raise ConfigError("--labels and --labels-format go together")
        unknown = sorted(set(self.tasks) - set(ALL_TASKS))
        if unknown or not self.tasks:
            raise ConfigError(f"tasks {unknown or '[]'}: choose from {', '.join(ALL_TASKS)}")
        bad = sorted(set(self.zeroshot_scoring) - set(ZEROSHOT_SCORINGS))
        if bad or not self.zeroshot_scoring:
            raise ConfigError(
                f"zeroshot_scoring {bad or '[]'}: choose from {', '.join(ZEROSHOT_SCORINGS)}"
            )
        if any(not 0 < f <= 1 for f in self.fractions) or not self.fractions:
            raise ConfigError(f"fractions {self.fractions}: each must be in (0, 1]")
        if not 0 < self.ci_level < 1 or self.bootstrap < 10:
            raise ConfigError("ci_level must be in (0, 1) and bootstrap >= 10")
        if self.text_section not in TEXT_SECTIONS:
            raise ConfigError(
                f"text_section {self.text_section!r}: choose from {', '.join(TEXT_SECTIONS)}"
            )
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"device {self.device!r}: use auto, cpu, cuda or cuda:N")
        if self.folds < 2:
            raise ConfigError("folds must be >= 2")
        if not self.probe_c_grid or any(c <= 0 for c in self.probe_c_grid) or self.probe_c <= 0:
            raise ConfigError(f"probe_c_grid {self.probe_c_grid} / probe_c: each must be > 0")


def inputs_by_kind(paths: list[str | Path]) -> dict[str, str]:
    """Route artifacts given in any order to the settings they fill, by their manifest's kind.

    Takes: artifact directories (a checkpoint, a dataset, optionally annotations).
    Returns: ``{"checkpoint": path, "dataset": path, "annotations": path}``, the
    kinds given only. Raises: ConfigError for another kind or a kind given twice,
    ArtifactError when a path holds no manifest.
    """
    from cxrkit.artifacts import read_manifest

    found: dict[str, str] = {}
    for path in paths:
        kind = read_manifest(path).get("kind")
        if kind not in INPUT_KINDS:
            raise ConfigError(
                f"{path}: a {kind} artifact; eval takes checkpoint, dataset, annotations"
            )
        if kind in found:
            raise ConfigError(f"two {kind} artifacts given ({found[kind]}, {path}); give one")
        found[kind] = str(path)
    return found


def _device(name: str):
    """The torch device for a validated ``device`` setting. Raises ConfigError when CUDA is
    asked for and none (or not that index) is available."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {name}: no CUDA device is available here; use --device cpu or auto"
            )
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return torch.device(name)


def _load_model(cfg: EvalConfig, device):
    from cxrkit.evaluate import encoders

    if cfg.checkpoint:
        return encoders.load_checkpoint_model(cfg.checkpoint, device)
    return encoders.load_open_clip_model(
        cfg.open_clip_config, cfg.open_clip_weights, device, cfg.seed
    )


def resolve_text_section(setting: str, checkpoint) -> str:
    """The report section eval scores: ``setting``, or for ``auto`` the checkpoint's training
    section (its manifest's ``data.text_section``; :data:`DEFAULT_TEXT_SECTION` for an
    open_clip model, ``checkpoint`` None, or a checkpoint that records none).

    Takes: the text_section setting and the checkpoint Artifact or None. Returns: a section
    name of :data:`cxrkit.io.text_sections.TEXT_SECTIONS`. Raises: ArtifactError when the
    checkpoint records a section eval does not know.
    """
    from cxrkit.errors import ArtifactError

    if setting != "auto":
        return setting
    if checkpoint is None:
        return DEFAULT_TEXT_SECTION
    data = checkpoint.params.get("data")
    found = data.get("text_section") if isinstance(data, dict) else None
    if found is None:
        return DEFAULT_TEXT_SECTION
    if found not in SECTIONS:
        raise ArtifactError(
            f"{checkpoint.path}: manifest params data.text_section {found!r} is not one of "
            f"{', '.join(SECTIONS)}; give --set text_section=SECTION"
        )
    return found


def _params(cfg: EvalConfig) -> dict:
    params = to_dict(cfg)
    for volatile in ("out", "cache", "batch_size"):  # do not change the results
        params.pop(volatile)
    if names := [v for v in cfg.views if v.strip()]:  # the codes kept, not their spelling
        params["views"] = sorted(expand_views(names))
    return params


def run(cfg: EvalConfig, force: bool = False):
    """Evaluate a model on a dataset and publish an eval artifact.

    Returns: the Artifact. Raises: ConfigError, InputError, ArtifactError.
    """
    from cxrkit.artifacts.manifest import sha256_file

    cfg.validate()
    if not cfg.out:
        raise ConfigError("no output directory: give --out DIR")
    dataset = open_artifact(cfg.dataset, kind="dataset", verify_files=True)
    check_view_filter(cfg.views, dataset.stats.get("view_counts") or {}, str(dataset.path))
    if cfg.checkpoint:
        # A checkpoint's input is its artifact, known without torch or the model: a
        # no-op re-run decides before loading either.
        device = model = None
        checkpoint = open_artifact(cfg.checkpoint, kind="checkpoint", verify_files=True)
        inputs = [checkpoint, dataset]
    else:  # open_clip: the inputs (config and weights files) come from the loaded model
        device = _device(cfg.device)
        model = _load_model(cfg, device)
        inputs = [*model.inputs, dataset]
        checkpoint = None
    # The resolved section is a param: the artifact id says which text retrieval scored.
    cfg = replace(cfg, text_section=resolve_text_section(cfg.text_section, checkpoint))
    annotations = open_artifact(cfg.annotations, kind="annotations") if cfg.annotations else None
    if annotations is not None:
        inputs.append(annotations)
    for flag, extra in (("--labels", cfg.labels), ("--prompts", cfg.prompts)):
        if extra:
            path = Path(extra)
            if not path.is_file():
                raise InputError(f"{path}: {flag} file not found (or not a file)")
            inputs.append({"kind": "raw", "id": sha256_file(path), "path": str(path.resolve())})
    writer = ArtifactWriter(Path(cfg.out), "eval", _params(cfg), inputs, SCHEMA_VERSION, force)
    if (done := writer.up_to_date()) is not None:
        return done
    if model is None:
        device = _device(cfg.device)
        model = _load_model(cfg, device)
    work = writer.begin()
    from cxrkit.evaluate.runner import evaluate

    try:
        summary = evaluate(cfg, model, dataset, annotations, device, work)
    except Exception:
        # A refusal (no labels, no task that applies) or a failure: eval keeps no partial
        # work worth resuming (features are cached outside), so it leaves no temp dir.
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        writer.release()
        raise
    return writer.publish(schema={"files": summary.pop("_files")}, stats=summary)


def metrics_of(artifact) -> dict:
    """The parsed metrics.json of an eval artifact."""
    return json.loads(artifact.file("metrics.json").read_text())
