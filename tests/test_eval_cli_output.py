"""What `cxrkit eval` tells a user on small data: hints, refusals, plots, a table that fits."""

from __future__ import annotations

import io
import json
import sys

import pytest
from eval_support import tiny_mae_checkpoint
from rich.console import Console
from typer.testing import CliRunner

from cxrkit.cli import app, hoist_global_flags, main
from cxrkit.stages.eval import EvalConfig, metrics_of, run

FAST = ["--set", "bootstrap=50", "--set", "seeds=[0]", "--set", "fractions=[1.0]"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random-init MAE checkpoint artifact (image-only)."""
    return tiny_mae_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRKIT_CACHE", str(tmp_path / "cache"))


def test_split_protocol_on_the_demo_hints_at_cv(checkpoint, demo_dataset, tmp_path):
    out = tmp_path / "ev"
    args = ["eval", str(checkpoint), str(demo_dataset), "--out", str(out), "--task", "probe"]
    result = CliRunner().invoke(app, args + FAST + ["--set", "plots=false"])
    assert result.exit_code == 0, result.output
    assert "too few to score" in result.output
    assert "--protocol cv" in result.output  # the hint


def test_cv_protocol_that_scores_gives_no_hint(checkpoint, demo_dataset, tmp_path):
    args = ["eval", str(checkpoint), str(demo_dataset), "--out", str(tmp_path / "ev")]
    args += ["--task", "probe", "--protocol", "cv", "--set", "plots=false"]
    result = CliRunner().invoke(app, args + FAST)
    assert result.exit_code == 0, result.output
    assert "hint" not in result.output


def test_only_task_that_cannot_run_exits_2(checkpoint, demo_dataset, tmp_path):
    out = tmp_path / "ev"
    args = ["eval", str(checkpoint), str(demo_dataset), "--out", str(out), "--task", "zeroshot"]
    result = CliRunner().invoke(app, args + FAST)
    assert result.exit_code == 2, result.output
    assert "none of the requested tasks can run" in result.output
    assert "zeroshot:" in result.output and "--task probe" in result.output
    assert not out.exists() and not list(tmp_path.glob("ev.tmp-*"))


def test_one_test_image_draws_no_empty_roc_and_no_ece(checkpoint, tmp_path, salt_file):
    from cxrkit.io.bundled import pediatric_jpegs, pediatric_label
    from cxrkit.stages.ingest import IngestConfig
    from cxrkit.stages.ingest import run as ingest

    jpegs = pediatric_jpegs()
    mapping = tmp_path / "map.csv"
    lines = ["image_path,report_text,patient_id,split,Pneumonia"]
    for i, path in enumerate(jpegs):
        split = "test" if i == 0 else "train"
        lines.append(f"{path},Report.,P{i},{split},{pediatric_label(path)}")
    mapping.write_text("\n".join(lines) + "\n")
    dataset = tmp_path / "ds"
    ingest(
        IngestConfig(
            mapping=str(mapping), out=str(dataset), image_size=64, salt_file=str(salt_file)
        )
    )
    cfg = EvalConfig(
        dataset=str(dataset), checkpoint=str(checkpoint), out=str(tmp_path / "ev"),
        tasks=["probe"], fractions=[1.0], seeds=[0], bootstrap=20,
    )  # fmt: skip
    evaluation = run(cfg)
    metrics = metrics_of(evaluation)
    assert metrics["n_scored"] == 1
    assert not [p for p in metrics["plots"] if p.startswith(("roc-", "reliability-"))]
    assert not list(evaluation.path.glob("roc-*.png"))
    assert not list(evaluation.path.glob("reliability-*.png"))


# ---------------------------------------------------------------- the table
DEMO_METRICS = {
    "n_scored": 16,
    "protocol": "cv",
    "warnings": [],
    "plots": [],
    "tasks": {
        "probe": {
            "fractions": {
                frac: {
                    "seeds": {
                        "0": {
                            "classes": {
                                "Pneumonia": {
                                    "status": "ok", "n_pos": 8, "n_neg": 8,
                                    "auroc": {"value": 0.8125, "ci": [0.5312, 1.0]},
                                    "auprc": {"value": 0.84, "ci": [0.5, 1.0]},
                                    "f1": {"value": 0.75, "ci": [0.4, 1.0]},
                                    "accuracy": {"value": 0.75, "ci": [0.5, 0.94]},
                                }
                            },
                            "macro": {},
                        }
                    },
                    "over_seeds": {"macro_auroc": {"seeds": 3, "auroc_mean": 0.8, "auroc_sd": 0.02}},
                }
                for frac in ("0.1", "1")
            }
        },
        "retrieval": {"skipped": "the model has no text encoder"},
    },
}  # fmt: skip


def _rendered(
    monkeypatch, *, terminal: bool, width: int = 80, metrics: dict | None = None
) -> list[str]:
    from pathlib import Path

    import cxrkit.cli.eval as eval_cli

    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=width,
        force_terminal=terminal,
        color_system=None,
        highlight=False,
        soft_wrap=True,
    )
    monkeypatch.setattr(eval_cli, "err", console)
    eval_cli.render(metrics or DEMO_METRICS, Path("/runs/ev"))
    return buffer.getvalue().splitlines()


def test_table_fits_80_columns_one_line_per_class(monkeypatch):
    lines = _rendered(monkeypatch, terminal=True)
    assert max(len(line) for line in lines) <= 80
    rows = [line for line in lines if "Pneumonia" in line]
    assert len(rows) == 2 and all("0.812 [0.531, 1.000]" in row for row in rows)


def test_table_in_a_log_file_is_never_wrapped(monkeypatch):
    lines = _rendered(monkeypatch, terminal=False, width=80)
    rows = [line for line in lines if "Pneumonia" in line]
    assert len(rows) == 2 and all("0.812 [0.531, 1.000]" in r and "0.750" in r for r in rows)
    assert any("0.800±0.020 over 3 seeds" in line for line in lines)


def _zeroshot(auroc: float) -> dict:
    report = {
        "status": "ok", "n_pos": 8, "n_neg": 8, "auroc": {"value": auroc, "ci": [0.5, 1.0]},
        "auprc": {"value": 0.7, "ci": [0.4, 1.0]}, "f1": {"value": 0.6, "ci": [0.3, 0.9]},
        "accuracy": {"value": 0.6, "ci": [0.3, 0.9]},
    }  # fmt: skip
    return {"classes": {"Pneumonia": report}, "macro": {}}


def test_every_zero_shot_scoring_computed_gets_a_row(monkeypatch):
    metrics = {
        "n_scored": 16, "protocol": "cv", "warnings": [], "plots": [],
        "tasks": {"zeroshot": {
            "maco": _zeroshot(0.611), "maco_code": _zeroshot(0.722),
            "clip": {"skipped": "needs >= 2 classes"},
        }},
    }  # fmt: skip
    lines = _rendered(monkeypatch, terminal=False, metrics=metrics)
    assert any("maco_code" in line and "0.722" in line for line in lines)
    assert any("maco " in line and "0.611" in line for line in lines)
    assert any("skipped zeroshot clip: needs >= 2 classes" in line for line in lines)


# ---------------------------------------------------------------- -q
def test_quiet_after_the_subcommand_moves_to_the_front():
    assert hoist_global_flags(["eval", "a", "-q", "--out", "x"]) == [
        "-q",
        "eval",
        "a",
        "--out",
        "x",
    ]
    assert hoist_global_flags(["ingest", "-vv", "--", "-q"]) == ["-vv", "ingest", "--", "-q"]


def test_quiet_silences_the_table_but_prints_the_path(
    checkpoint, demo_dataset, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "ev"
    argv = ["cxrkit", "eval", str(checkpoint), str(demo_dataset), "--out", str(out)]
    argv += ["--task", "probe", "--protocol", "cv", *FAST, "--set", "plots=false", "-q"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out)
    assert "AUROC" not in captured.err and "Pneumonia" not in captured.err
    assert json.loads((out / "metrics.json").read_text())["n_scored"] == 16
