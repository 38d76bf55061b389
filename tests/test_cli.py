"""The command line: version, help, exit codes, show/verify, output discipline."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cxrkit import __version__
from cxrkit.cli import app
from cxrkit.errors import EXIT_CODES

runner = CliRunner()


def test_version_prints_the_package_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"cxrkit {__version__}"


def test_help_lists_every_stage_and_the_exit_codes():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in (
        "ingest",
        "ingest-merge",
        "annotate",
        "label",
        "pretrain",
        "distill",
        "eval",
        "export",
        "show",
        "verify",
        "demo",
        "presets",
    ):
        assert command in result.stdout
    assert "75 preempted" in result.stdout.replace("\n", " ")


def test_exit_codes_are_distinct():
    assert len(set(EXIT_CODES.values())) == len(EXIT_CODES)


def test_unbuilt_part_says_so_and_exits_5():
    # Every command is built today; the helper a future partial command uses still maps to 5.
    import typer

    from cxrkit.cli.common import guarded, not_built

    @guarded
    def half_built() -> None:
        not_built("half", "planned for the next release")

    probe = typer.Typer()
    probe.command()(half_built)
    result = runner.invoke(probe, [])
    assert result.exit_code == 5
    assert "not built yet" in result.output and "planned for the next release" in result.output


def test_verify_passes_an_intact_artifact_and_fails_a_tampered_one(demo_dataset, tmp_path):
    import shutil

    ok = runner.invoke(app, ["verify", str(demo_dataset)])
    assert ok.exit_code == 0 and ok.stdout.startswith("OK")
    copy = tmp_path / "copy"
    shutil.copytree(demo_dataset, copy)
    (copy / "rejects.parquet").write_bytes(b"tampered")
    bad = runner.invoke(app, ["verify", str(copy)])
    assert bad.exit_code == 4
    assert "rejects.parquet" in bad.output


def test_verify_prints_paths_with_brackets_as_text(demo_dataset, tmp_path):
    import shutil

    # "[bold]" would vanish as markup and "[/x]" would raise MarkupError (exit 1)
    copy = tmp_path / "run[bold]1[/x]"
    shutil.copytree(demo_dataset, copy)
    ok = runner.invoke(app, ["verify", str(copy)])
    assert ok.exit_code == 0 and ok.stdout == f"OK {copy}\n"
    (copy / "rejects.parquet").write_bytes(b"tampered")
    bad = runner.invoke(app, ["verify", str(copy)])
    assert bad.exit_code == 4, bad.output
    assert f"FAIL {copy}: " in bad.output and "rejects.parquet" in bad.output


def test_show_json_includes_lineage(demo_dataset):
    result = runner.invoke(app, ["show", str(demo_dataset), "--json"])
    assert result.exit_code == 0
    shown = json.loads(result.stdout)
    assert shown["kind"] == "dataset"
    assert [row["kind"] for row in shown["lineage"]] == ["dataset", "raw", "raw"]


@pytest.mark.parametrize("forced", ["FORCE_COLOR", "TTY_COMPATIBLE"])
def test_json_output_stays_plain_json_when_a_terminal_is_forced(demo_dataset, forced):
    # CI services force colour (FORCE_COLOR=1); rich then coloured --json output, and
    # `cxrkit show DIR --json | jq` read escape codes.
    env = {**os.environ, forced: "1"}
    for args in (["show", str(demo_dataset), "--json"], ["models", "--json"]):
        done = subprocess.run([sys.executable, "-m", "cxrkit", *args], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert "\x1b[" not in done.stdout
        assert json.loads(done.stdout)


def test_show_of_a_non_artifact_is_an_artifact_error(tmp_path):
    result = runner.invoke(app, ["show", str(tmp_path)])
    assert result.exit_code == 4
    assert "not a cxrkit artifact" in result.output


def test_stdout_holds_only_the_result_when_not_a_tty(demo_dataset, demo_inputs, salt_file):
    """Shell scripts capture the artifact path: messages must go to stderr."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cxrkit",
            "ingest",
            "--mapping",
            str(demo_inputs),
            "--out",
            str(demo_dataset),
            "--image-size",
            "64",
            "--salt-file",
            str(salt_file),
        ],
        capture_output=True,
        text=True,
        env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(demo_dataset)
    assert "up to date" in proc.stderr
    assert "\x1b[" not in proc.stderr  # NO_COLOR and non-TTY: no escape codes


# ---------------------------------------------------------------- --views
def _option(command: str, name: str):
    import typer

    click_app = typer.main.get_command(app)
    return next(p for p in click_app.commands[command].params if p.name == name)


def test_views_is_one_option_shared_by_pretrain_distill_and_eval():
    options = [_option(c, "views") for c in ("pretrain", "distill", "eval")]
    assert all(o.opts == ["--views"] for o in options)
    assert len({o.help for o in options}) == 1 and "frontal" in options[0].help


def test_views_reach_the_training_images_setting_of_pretrain_and_distill(tmp_path):
    common = ["--out", str(tmp_path / "o"), "--views", "PA, frontal", "--dry-run"]
    pretrain = runner.invoke(app, ["pretrain", str(tmp_path / "ds"), *common])
    assert pretrain.exit_code == 0, pretrain.output
    assert json.loads(pretrain.stdout)["data"]["views"] == ["PA", "frontal"]
    distill = runner.invoke(
        app, ["distill", str(tmp_path / "ds"), "--physio", str(tmp_path / "ph"), *common]
    )
    assert distill.exit_code == 0, distill.output
    assert json.loads(distill.stdout)["data"]["views"] == ["PA", "frontal"]


def test_views_naming_no_view_is_a_usage_error(tmp_path):
    for command in (["pretrain", "ds"], ["eval", "ds"]):
        result = runner.invoke(app, [*command, "--out", str(tmp_path / "o"), "--views", " , "])
        assert result.exit_code == 2, result.output
        assert "names no view" in result.output


def test_pretrain_views_filter_what_trains(demo_dataset, tmp_path):
    """The flag reaches the loader: a view the dataset lacks leaves nothing to train on."""
    args = ["pretrain", str(demo_dataset), "--out", str(tmp_path / "o"), "--preset", "demo-mae"]
    tiny = ["model.depth=1", "objective.decoder_depth=1", "objective.decoder_dim=32"]
    result = runner.invoke(
        app,
        [*args, "--views", "lateral", "--max-steps", "1", *(a for s in tiny for a in ("--set", s))],
    )
    assert result.exit_code == 3, result.output
    assert "no images in split 'train' with views" in result.output
    assert "LATERAL" in result.output


def test_a_view_name_neither_known_nor_in_the_dataset_is_a_usage_error(demo_dataset, tmp_path):
    """A typo (`APP`) is exit 2 naming it and the dataset's views, before any training
    or teacher work; `--views PA,APP` does not silently train on PA alone."""
    out = tmp_path / "o"
    for command in (
        ["pretrain", str(demo_dataset), "--preset", "demo-mae"],
        ["eval", str(demo_dataset), "--open-clip-config", str(tmp_path / "clip.json")],
        ["distill", str(demo_dataset), "--physio", str(tmp_path / "ph"), "--student", "s"],
    ):
        result = runner.invoke(app, [*command, "--out", str(out), "--views", "PA,APP"])
        assert result.exit_code == 2, (command[0], result.output)
        assert "APP" in result.output and "views in the dataset" in result.output
        assert not out.exists() and not (tmp_path / "o.work").exists()


def test_a_known_view_code_the_dataset_lacks_is_not_a_usage_error():
    """`--views PA,AP` stays valid on a PA-only dataset (one script for many datasets)."""
    from cxrkit.io.layouts import unknown_view_names

    assert unknown_view_names(["PA", "AP", "frontal", "ll", "unknown"], {"PA"}) == []
    assert unknown_view_names(["PA", "OBLIQUE"], {"PA", "OBLIQUE"}) == []  # a mapping's own
    assert unknown_view_names(["pa", "APP", "lat"], {"PA", "LATERAL"}) == ["APP", "LAT"]
