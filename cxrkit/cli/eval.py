"""`cxrkit eval`: zero-shot, linear probe, fine-tuning and retrieval with bootstrap intervals."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cxrkit.cli.common import (
    FLAG,
    LOG_WIDTH,
    ConfigFile,
    DryRun,
    Force,
    OutDir,
    Preset,
    Sets,
    Views,
    app,
    err,
    guarded,
    is_quiet,
    out,
    print_json,
    views_list,
)


def _ci(entry: dict | None) -> str:
    if not entry:
        return "-"
    low, high = entry.get("ci") or (None, None)
    interval = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
    return f"{entry['value']:.3f}{interval}"


def _value(entry: dict | None) -> str:
    return "-" if not entry else f"{entry['value']:.3f}"


def _class_rows(table: Table, task: str, scored: dict, note: str = "") -> None:
    for name, report in scored["classes"].items():
        counts = f"{report['n_pos']}/{report['n_neg']}"
        if report.get("status") != "ok":
            why = "not fitted" if report.get("status") == "not_fitted" else "too few to score"
            table.add_row(task, name, counts, why, "", "", "")
            continue
        table.add_row(
            task, name, counts, _ci(report["auroc"]), _value(report["auprc"]),
            _value(report["f1"]), _value(report["accuracy"]),
        )  # fmt: skip
    macro = scored.get("macro", {})
    if len(scored["classes"]) > 1 and "macro_auroc" in macro:
        table.add_row(
            task, "macro", "", _ci(macro["macro_auroc"]), _value(macro["macro_auprc"]), "", ""
        )


def _sweep_rows(table: Table, task: str, result: dict, notes: list[str]) -> None:
    for fraction, entry in result["fractions"].items():
        seeds = entry["seeds"]
        first = next(iter(seeds))
        label = f"{task} {float(fraction):.0%}"
        spread = entry["over_seeds"].get("macro_auroc", {})
        if spread.get("seeds", 0) > 1:
            notes.append(
                f"{label}: rows show seed {first}; AUROC {spread['auroc_mean']:.3f}"
                f"±{spread['auroc_sd']:.3f} over {spread['seeds']} seeds"
                + _common_note(spread, seeds[first])
            )
        _class_rows(table, label, seeds[first])


def _common_note(spread: dict, shown: dict) -> str:
    """Says when the macro spread covers fewer classes than the shown seed's macro."""
    common = spread.get("classes")
    if common is None or common == shown.get("macro", {}).get("classes", common):
        return ""
    return f" (the {len(common)} classes every seed scored)"


def _zeroshot_scorings() -> tuple[str, ...]:
    from cxrkit.stages.eval import ZEROSHOT_SCORINGS  # torch-free; imported when rendering

    return ZEROSHOT_SCORINGS


def _class_reports(metrics: dict) -> list[dict]:
    """Every per-class report of every scored task (all seeds and fractions)."""
    found: list[dict] = []
    for task, result in metrics["tasks"].items():
        if "skipped" in result:
            continue
        if task == "zeroshot":
            scored = [result[v] for v in _zeroshot_scorings() if "classes" in result.get(v, {})]
        elif task in ("probe", "finetune"):
            scored = [s for e in result["fractions"].values() for s in e["seeds"].values()]
        else:
            scored = []
        found += [r for s in scored for r in s["classes"].values()]
    return found


def small_data_hint(metrics: dict) -> str | None:
    """A hint when every class was too few to score under the split protocol, else None."""
    reports = _class_reports(metrics)
    if not reports or any(r.get("status") == "ok" for r in reports):
        return None
    if str(metrics.get("protocol", "")).startswith("split"):
        return (
            f"every class has too few positives or negatives among the {metrics['n_scored']} "
            "test-split images to score; for a small labelled set use `--protocol cv` "
            "(patient-grouped k-fold over all labelled images)"
        )
    return (
        "every class has too few positives or negatives to score even with cross-validation; "
        "more labelled images are needed (or lower --set min_count=N, knowing the intervals "
        "will be wide)"
    )


def render(metrics: dict, path: Path) -> None:
    """The results table and notes on stderr (nothing with --quiet).

    Compact on purpose: one line per class in an 80-column terminal for short class
    names, and never wrapped in a log file (non-terminal output is printed wide).
    """
    if is_quiet():
        return
    table = Table(
        title=f"eval {path.name}  (n = {metrics['n_scored']} scored, {metrics['protocol']})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1, 0, 0),
    )
    for column in ("task", "class", "pos/neg", "AUROC [95% CI]", "AUPRC", "F1", "acc"):
        if column == "class":
            table.add_column(column, overflow="fold")
        else:
            table.add_column(column, no_wrap=True)
    skipped: list[str] = []
    notes: list[str] = []
    for task, result in metrics["tasks"].items():
        if "skipped" in result:
            skipped.append(f"{task}: {result['skipped']}")
        elif task == "zeroshot":
            for variant in _zeroshot_scorings():
                if "skipped" in result.get(variant, {}):
                    skipped.append(f"zeroshot {variant}: {result[variant]['skipped']}")
                elif variant in result:
                    _class_rows(table, f"zero-shot {variant}", result[variant])
        elif task in ("probe", "finetune"):
            _sweep_rows(table, task, result, notes)
        elif task == "retrieval":
            for direction in ("image_to_report", "report_to_image"):
                entry = result[direction]
                recalls = " ".join(f"R@{k} {_value(entry[f'recall_at_{k}'])}" for k in (1, 5, 10))
                table.add_row(
                    "retrieval", direction.replace("_", " ").replace("report", "rep"),
                    str(result["n"]), recalls, "", "", "",
                )  # fmt: skip
                notes.append(
                    f"retrieval {direction.replace('_', ' ')}: R@1 {_ci(entry['recall_at_1'])} "
                    f"(chance {result.get('chance_recall_at_1', 0):.3f}), "
                    f"median rank {_ci(entry['median_rank'])}"
                )
    if err.is_terminal:
        err.print(table)
    else:  # a log file: as wide as the table needs, up to LOG_WIDTH, never wrapped
        Console(
            file=err.file, width=max(err.width, LOG_WIDTH), highlight=False, markup=False
        ).print(table)
    for line in notes:
        err.print(f"note {line}")
    for line in skipped:
        err.print(f"[yellow]skipped[/] {escape(line)}", markup=True)
    for note in metrics.get("warnings", []):
        err.print(f"[yellow]warning[/] {escape(note)}", markup=True)
    if (hint := small_data_hint(metrics)) is not None:
        err.print(f"[bold]hint[/] {escape(hint)}", markup=True)
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
        str | None, typer.Option("--labels-format", help="nih|chexpert|mimic|rsna|siim|padchest")
    ] = None,
    prompts: Annotated[
        Path | None, typer.Option("--prompts", help="Prompts JSON for zero-shot.")
    ] = None,
    task: Annotated[
        str | None, typer.Option("--task", help="Comma list: zeroshot,probe,retrieval,finetune.")
    ] = None,
    views: Views = None,
    protocol: Annotated[
        str | None,
        typer.Option("--protocol", help="split (dataset splits) or cv (k-fold, small sets)."),
    ] = None,
    text_section: Annotated[
        str | None,
        typer.Option(
            "--text-section",
            help="Report text retrieval scores: auto (the checkpoint's training section), "
            "both, findings, impression.",
        ),
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda.")] = None,
    no_cache: Annotated[
        bool,
        typer.Option("--no-cache", help="Do not read or write the feature cache.", metavar=FLAG),
    ] = False,
    preset: Preset = None,
    config: ConfigFile = None,
    sets: Sets = None,
    dry_run: DryRun = False,
    force: Force = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print metrics.json on stdout.", metavar=FLAG)
    ] = False,
) -> None:
    """Checkpoint (or open_clip model) + labelled dataset -> eval artifact (metrics.json, predictions, plots).

    Zero-shot and retrieval need an image-text model; probe and fine-tuning work on
    image-only checkpoints (MAE). Every headline number has a bootstrap 95 % interval
    (by patient when ids exist); classes with < 5 positives or negatives are reported
    as too few, not as a number. Tasks that cannot apply are skipped with the reason.
    """
    from cxrkit.config import resolve, to_dict
    from cxrkit.stages import eval as eval_stage

    view_names = views_list(views)  # a usage error before any artifact is opened
    kinds = eval_stage.inputs_by_kind(list(inputs or []))
    flags = {
        "checkpoint": kinds.get("checkpoint"), "dataset": kinds.get("dataset"),
        "annotations": kinds.get("annotations"), "out": str(out_dir),
        "open_clip_config": str(open_clip_config) if open_clip_config else None,
        "open_clip_weights": str(open_clip_weights) if open_clip_weights else None,
        "labels": str(labels) if labels else None, "labels_format": labels_format,
        "prompts": str(prompts) if prompts else None, "tasks": task, "protocol": protocol,
        "views": view_names, "text_section": text_section,
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
        print_json(to_dict(cfg))
        return
    artifact = eval_stage.run(cfg, force=force)
    metrics = eval_stage.metrics_of(artifact)
    render(metrics, artifact.path)
    if as_json:
        print_json(metrics)
    else:
        out.print(str(artifact.path))
