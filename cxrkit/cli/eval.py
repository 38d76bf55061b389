"""`cxrkit eval`: zero-shot, linear probe, fine-tuning and retrieval with bootstrap intervals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cxrkit.cli.common import (
    ConfigFile,
    DryRun,
    Force,
    OutDir,
    Preset,
    Sets,
    app,
    err,
    guarded,
    out,
)


def _ci(entry: dict | None) -> str:
    if not entry:
        return "-"
    low, high = entry.get("ci") or (None, None)
    interval = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
    return f"{entry['value']:.3f}{interval}"


def _class_rows(table: Table, task: str, scored: dict, extra: str = "") -> None:
    for name, report in scored["classes"].items():
        counts = f"{report['n_pos']}/{report['n_neg']}"
        if report.get("status") != "ok":
            table.add_row(task, name, counts, "too few to score", "", "", "", extra)
            continue
        table.add_row(
            task, name, counts, _ci(report["auroc"]), _ci(report["auprc"]),
            _ci(report["f1"]), _ci(report["accuracy"]), extra,
        )  # fmt: skip
    macro = scored.get("macro", {})
    if len(scored["classes"]) > 1 and "macro_auroc" in macro:
        table.add_row(
            task, "macro", "", _ci(macro["macro_auroc"]), _ci(macro["macro_auprc"]), "", "", extra
        )


def _sweep_rows(table: Table, task: str, result: dict) -> None:
    for fraction, entry in result["fractions"].items():
        seeds = entry["seeds"]
        first = next(iter(seeds))
        spread = entry["over_seeds"].get("macro_auroc", {})
        note = f"seed {first}"
        if spread.get("seeds", 0) > 1:
            note += f"; AUROC {spread['auroc_mean']:.3f}±{spread['auroc_sd']:.3f} over {spread['seeds']} seeds"
        _class_rows(table, f"{task} {float(fraction):.0%}", seeds[first], note)


def render(metrics: dict, path: Path) -> None:
    """The results table and notes on stderr."""
    table = Table(
        title=f"eval {path}  (n = {metrics['n_scored']} scored images, {metrics['protocol']})",
        title_justify="left",
    )
    for column in ("task", "class", "pos/neg", "AUROC [95% CI]", "AUPRC", "F1", "accuracy", "note"):
        table.add_column(column, overflow="fold")
    skipped = []
    for task, result in metrics["tasks"].items():
        if "skipped" in result:
            skipped.append(f"{task}: {result['skipped']}")
        elif task == "zeroshot":
            for variant in ("maco", "clip"):
                if "skipped" in result.get(variant, {}):
                    skipped.append(f"zeroshot {variant}: {result[variant]['skipped']}")
                elif variant in result:
                    _class_rows(table, f"zero-shot {variant}", result[variant])
        elif task in ("probe", "finetune"):
            _sweep_rows(table, task, result)
        elif task == "retrieval":
            for direction in ("image_to_report", "report_to_image"):
                entry = result[direction]
                recalls = ", ".join(f"R@{k} {_ci(entry[f'recall_at_{k}'])}" for k in (1, 5, 10))
                table.add_row(
                    "retrieval",
                    direction.replace("_", " "),
                    str(result["n"]),
                    recalls,
                    "",
                    "",
                    "",
                    f"median rank {_ci(entry['median_rank'])}",
                )
    err.print(table)
    for line in skipped:
        err.print(f"[yellow]skipped[/] {line}", markup=True)
    for note in metrics.get("warnings", []):
        err.print(f"[yellow]warning[/] {note}", markup=True)
    if metrics.get("plots"):
        err.print("plots: " + ", ".join(str(path / p) for p in metrics["plots"]))


@app.command("eval")
@guarded
def evaluate_command(
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Artifacts: a checkpoint, a dataset, optionally annotations (any order)."
        ),
    ] = None,
    out_dir: OutDir = ...,
    open_clip_config: Annotated[
        Path | None,
        typer.Option("--open-clip-config", help="open_clip model JSON instead of a checkpoint."),
    ] = None,
    open_clip_weights: Annotated[
        Path | None,
        typer.Option("--open-clip-weights", help="Local weights for --open-clip-config."),
    ] = None,
    labels: Annotated[
        Path | None, typer.Option("--labels", help="Public label file (needs ingest --keep-paths).")
    ] = None,
    labels_format: Annotated[
        str | None, typer.Option("--labels-format", help="nih|chexpert|rsna|siim|padchest")
    ] = None,
    prompts: Annotated[
        Path | None, typer.Option("--prompts", help="Prompts JSON for zero-shot.")
    ] = None,
    task: Annotated[
        str | None, typer.Option("--task", help="Comma list: zeroshot,probe,retrieval,finetune.")
    ] = None,
    protocol: Annotated[
        str | None,
        typer.Option("--protocol", help="split (dataset splits) or cv (k-fold, small sets)."),
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda.")] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Do not read or write the feature cache.")
    ] = False,
    preset: Preset = None,
    config: ConfigFile = None,
    sets: Sets = None,
    dry_run: DryRun = False,
    force: Force = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics.json on stdout.")] = False,
) -> None:
    """Checkpoint (or open_clip model) + labelled dataset -> eval artifact (metrics.json, predictions, plots).

    Zero-shot and retrieval need an image-text model; probe and fine-tuning work on
    image-only checkpoints (MAE). Every headline number has a bootstrap 95 % interval
    (by patient when ids exist); classes with < 5 positives or negatives are reported
    as too few, not as a number. Tasks that cannot apply are skipped with the reason.
    """
    from cxrkit.config import resolve, to_dict
    from cxrkit.stages import eval as eval_stage

    kinds = eval_stage.inputs_by_kind(list(inputs or []))
    flags = {
        "checkpoint": kinds.get("checkpoint"), "dataset": kinds.get("dataset"),
        "annotations": kinds.get("annotations"), "out": str(out_dir),
        "open_clip_config": str(open_clip_config) if open_clip_config else None,
        "open_clip_weights": str(open_clip_weights) if open_clip_weights else None,
        "labels": str(labels) if labels else None, "labels_format": labels_format,
        "prompts": str(prompts) if prompts else None, "tasks": task, "protocol": protocol,
        "device": device, "cache": False if no_cache else None,
    }  # fmt: skip
    cfg = resolve(
        eval_stage.EvalConfig,
        preset=preset,
        config_file=config,
        flags=flags,
        sets=sets,
        stage="eval",
    )
    if dry_run:
        out.print_json(json.dumps(to_dict(cfg)))
        return
    artifact = eval_stage.run(cfg, force=force)
    metrics = eval_stage.metrics_of(artifact)
    render(metrics, artifact.path)
    if as_json:
        out.print_json(json.dumps(metrics))
    else:
        out.print(str(artifact.path))
