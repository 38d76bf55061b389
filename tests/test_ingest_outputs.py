"""What ingest leaves beside the artifact: the local rejects listing with real paths."""

from __future__ import annotations

import csv
import stat
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from cxrkit.io.local_rejects import local_rejects_path
from cxrkit.stages.ingest import IngestConfig, run


def test_local_rejects_listing_names_the_real_files(tmp_path, demo_inputs, salt_file):
    out = tmp_path / "dataset"
    art = run(
        IngestConfig(
            mapping=str(demo_inputs), out=str(out), image_size=64, salt_file=str(salt_file)
        )
    )
    listing = local_rejects_path(out)
    assert listing == tmp_path / "dataset.rejects-local.csv"
    assert stat.S_IMODE(listing.stat().st_mode) == 0o600
    rows = list(csv.DictReader(listing.open()))
    assert len(rows) == art.stats["rejects"] == 4
    assert all(Path(r["path"]).is_file() for r in rows)  # real paths a user can open
    by_reason = {r["reason"]: Path(r["path"]).name for r in rows}
    assert set(by_reason) == {"corrupt_pixels", "duplicate", "not_chest_xray", "not_dicom"}
    # The artifact itself stays path-free: salted tokens only, and no listing inside it.
    shipped = pq.read_table(out / "rejects.parquet").column("path").to_pylist()
    assert not any(r["path"] in shipped or Path(r["path"]).name in "".join(shipped) for r in rows)
    assert not list(out.rglob("*rejects-local*"))


def test_rerun_rewrites_the_listing(tmp_path, demo_inputs, salt_file):
    out = tmp_path / "dataset"
    cfg = IngestConfig(
        mapping=str(demo_inputs), out=str(out), image_size=64, salt_file=str(salt_file)
    )
    run(cfg)
    local_rejects_path(out).unlink()
    run(cfg)  # a no-op for the artifact, the listing comes back
    assert local_rejects_path(out).is_file()


def test_cli_prints_where_the_listing_is(tmp_path, demo_inputs, salt_file):
    from cxrkit.cli import app

    out = tmp_path / "dataset"
    result = CliRunner().invoke(
        app,
        ["ingest", "--mapping", str(demo_inputs), "--out", str(out), "--image-size", "64",
         "--salt-file", str(salt_file)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert str(local_rejects_path(out)) in " ".join(result.output.split())


def test_one_source_given_as_a_string_is_one_source():
    assert IngestConfig(sources="/data/mimic/files").sources == ["/data/mimic/files"]
    assert IngestConfig(sources=Path("/data/x")).sources == ["/data/x"]
    assert IngestConfig(sources=["a", "b"]).sources == ["a", "b"]


def test_flags_show_no_value_in_help_and_mapping_help_is_whole():
    from cxrkit.cli import app

    result = CliRunner().invoke(app, ["ingest", "--help"], env={"COLUMNS": "200"})
    line = next(line for line in result.output.splitlines() if "--uint16" in line)
    assert "<bool>" not in line
    assert "label columns." in " ".join(result.output.split())
    assert "…" not in result.output


def test_eval_without_a_model_names_options_that_exist(demo_dataset, tmp_path):
    from cxrkit.cli import app

    result = CliRunner().invoke(app, ["eval", str(demo_dataset), "--out", str(tmp_path / "e")])
    assert result.exit_code == 2
    assert "--checkpoint" not in result.output and "CHECKPOINT" in result.output


def test_shell_completion_is_offered():
    from cxrkit.cli import app

    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert "--install-completion" in result.output and "--show-completion" in result.output


def test_merged_partitions_keep_a_local_listing(tmp_path, demo_inputs, salt_file):
    from cxrkit.stages.ingest import merge

    parts = [
        run(
            IngestConfig(
                mapping=str(demo_inputs), out=str(tmp_path / f"p{i}"), image_size=64,
                salt_file=str(salt_file), shard_index=i, num_shards=2,
            )
        ).path
        for i in range(2)
    ]  # fmt: skip
    merged = merge(parts, tmp_path / "merged")
    rows = list(csv.DictReader(local_rejects_path(merged.path).open()))
    assert len(rows) == merged.stats["rejects"] == 4
    tokens = set(pq.read_table(merged.path / "rejects.parquet").column("path").to_pylist())
    assert {r["token"] for r in rows} == tokens
    for row in rows:  # real paths, except a duplicate first seen when the parts met
        assert Path(row["path"]).is_file() or (
            row["reason"] == "duplicate" and row["path"] in tokens
        )
