"""`cxrkit annotate` end to end: rows, exact offsets, contours, prompts, no-op re-run, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cxrkit.artifacts import ArtifactWriter, open_artifact, verify
from cxrkit.cli import app
from cxrkit.errors import ConfigError
from cxrkit.io.schema import DATASET_SCHEMA, DATASET_SCHEMA_VERSION
from cxrkit.stages import annotate
from cxrkit.stages.annotate import AnnotateConfig, run
from cxrkit.text.labeler import CHEXPERT_CLASSES
from cxrkit.vision.masks import unpack_mask

REPORTS = [
    "FINDINGS: Heart size is enlarged. No pleural effusion or pneumothorax.\n\nIMPRESSION: Cardiomegaly.",
    "FINDINGS: The lungs are clear.\n\nIMPRESSION: No acute cardiopulmonary abnormality.",
    "",
    "INDICATION: pneumonia?\n\nFINDINGS: Possible right lower lobe pneumonia. ET tube in place.",
    "FINDINGS: Small left effusion. Old rib fractures.",
]


def _chest(height: int, width: int, seed: int) -> np.ndarray:
    """A synthetic frontal chest: bright body, two dark lung ellipses, dark background."""
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.full((height, width), 20, np.uint8)
    body = ((yy - height * 0.55) / (height * 0.5)) ** 2 + (
        (xx - width / 2) / (width * 0.45)
    ) ** 2 < 1
    image[body] = 170
    for cx in (0.32, 0.68):
        lung = ((yy - height * 0.5) / (height * 0.3)) ** 2 + (
            (xx - width * cx) / (width * 0.13)
        ) ** 2 < 1
        image[lung] = 60
    noise = np.random.default_rng(seed).integers(0, 10, image.shape, dtype=np.uint8)
    return image + noise


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    """A dataset artifact of 5 rows in 3 row groups (so 3 resumable chunks)."""
    out = tmp_path_factory.mktemp("ds") / "dataset"
    writer = ArtifactWriter(out, "dataset", {"test": "tiny"}, schema_version=DATASET_SCHEMA_VERSION)
    tmp = writer.begin()
    rows = []
    for i, text in enumerate(REPORTS):
        h, w = 64, 56 + 4 * i
        rows.append({name: None for name in DATASET_SCHEMA.names} | {
            "image_id": f"img{i}", "pixels": _chest(h, w, i).tobytes(), "dtype": "uint8",
            "height": h, "width": w, "report_text": text, "split": "train"})  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=DATASET_SCHEMA)
    pq.write_table(table, tmp / "shard-00000.parquet", row_group_size=2)
    pq.write_table(pa.table({"path": pa.array([], pa.string())}), tmp / "rejects.parquet")
    writer.publish(stats={"rows": len(rows)})
    return out


@pytest.fixture(scope="module")
def annotated(tiny_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ann") / "annotations"
    run(AnnotateConfig(dataset=str(tiny_dataset), out=str(out), preview=2))
    return out


def _rows(path) -> list[dict]:
    return pq.read_table(Path(path) / "annotations.parquet").to_pylist()


def test_one_row_per_image_in_dataset_order(annotated):
    art = open_artifact(annotated, kind="annotations")
    assert [r["image_id"] for r in _rows(annotated)] == [f"img{i}" for i in range(5)]
    assert art.stats["rows"] == 5 and not verify(annotated)


def test_labels_follow_the_reports(annotated):
    rows = {
        r["image_id"]: dict(zip(CHEXPERT_CLASSES, r["labels"], strict=True))
        for r in _rows(annotated)
    }
    assert rows["img0"]["Cardiomegaly"] == 1 and rows["img0"]["Pneumothorax"] == 0
    assert rows["img1"]["No Finding"] == 1
    assert all(np.isnan(v) for v in rows["img2"].values())  # empty report
    assert rows["img3"]["Pneumonia"] == -1 and rows["img3"]["Support Devices"] == 1
    assert rows["img4"]["Pleural Effusion"] == 1 and rows["img4"]["Fracture"] == 1


def test_unknown_section_policy_is_a_config_error(tiny_dataset, tmp_path):
    with pytest.raises(ConfigError, match="sections"):
        AnnotateConfig(
            dataset=str(tiny_dataset), out=str(tmp_path / "a"), sections="all"
        ).validate()


def test_entity_offsets_index_the_dataset_report_text(annotated):
    for row, text in zip(_rows(annotated), REPORTS, strict=True):
        for entity in row["entities"]:
            assert text[entity["start"] : entity["end"]] == entity["text"]
    sections = {e["section"] for e in _rows(annotated)[3]["entities"]}
    assert {"history", "findings"} <= sections


def test_contour_masks_unpack_at_the_stored_size(annotated):
    for i, row in enumerate(_rows(annotated)):
        h, w = 64, 56 + 4 * i
        mask = unpack_mask(row["contour_mask"], h, w)
        y0, x0, y1, x1 = row["contour_bbox"]
        assert mask.shape == (h, w) and mask.any()
        assert mask[y0:y1, x0:x1].sum() == mask.sum()  # the bbox holds the whole mask
        assert row["contour_quality"] in ("ok", "low")


def test_stats_prompts_and_preview_are_in_the_artifact(annotated):
    art = open_artifact(annotated)
    assert art.stats["label_prevalence"]["Cardiomegaly"]["positive"] == 1
    assert sum(art.stats["contour_quality"].values()) == 5
    assert art.stats["reports_per_s_per_core"] > 0
    prompts = json.loads(art.file("prompts.json").read_text())
    assert art.params["prompts_version"] == prompts["version"]
    assert art.file("preview.png").stat().st_size > 0
    assert art.params["sections"] == "findings+impression"  # the labeler's section policy


def test_annotations_are_written_one_dataset_row_group_at_a_time(annotated, tiny_dataset):
    """One row group per dataset row group, same sizes and order (loaders join per group),
    and stats accumulated chunk by chunk equal the stats of the whole table."""
    groups = pq.ParquetFile(Path(tiny_dataset) / "shard-00000.parquet").metadata
    written = pq.ParquetFile(Path(annotated) / "annotations.parquet").metadata
    sizes = [groups.row_group(g).num_rows for g in range(groups.num_row_groups)]
    assert [written.row_group(g).num_rows for g in range(written.num_row_groups)] == sizes
    assert sizes == [2, 2, 1]
    whole = annotate.annotation_stats(pq.read_table(Path(annotated) / "annotations.parquet"))
    stats = open_artifact(annotated, kind="annotations").stats
    assert {key: stats[key] for key in whole} == whole


def test_rerun_is_a_noop(annotated, tiny_dataset):
    before = open_artifact(annotated).manifest["created"]
    again = run(AnnotateConfig(dataset=str(tiny_dataset), out=str(annotated), preview=2))
    assert again.manifest["created"] == before


def test_no_contours_and_custom_prompts(tiny_dataset, tmp_path):
    prompts = tmp_path / "p.json"
    prompts.write_text(
        json.dumps({"version": "test-2", "classes": {"Edema": {"positive": ["Edema."]}}})
    )
    art = run(AnnotateConfig(dataset=str(tiny_dataset), out=str(tmp_path / "a"), contours=False,
                             prompts=str(prompts)))  # fmt: skip
    assert {r["contour_quality"] for r in _rows(art.path)} == {"none"}
    assert art.params["prompts_version"] == "test-2"
    assert json.loads(art.file("prompts.json").read_text())["classes"] == {
        "Edema": {"positive": ["Edema."]}
    }


def test_killed_run_resumes_from_finished_chunks(tiny_dataset, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    calls, dying = [], [True]
    real = annotate._process_chunk

    def dies_on_second_chunk(args):
        calls.append(args[0])
        if dying[0] and len(calls) == 2:
            raise RuntimeError("killed")
        return real(args)

    monkeypatch.setattr(annotate, "_process_chunk", dies_on_second_chunk)
    with pytest.raises(RuntimeError, match="killed"):
        run(AnnotateConfig(dataset=str(tiny_dataset), out=str(out), contours=False))
    calls.clear()
    dying[0] = False
    art = run(AnnotateConfig(dataset=str(tiny_dataset), out=str(out), contours=False))
    assert [c[1] for c in calls] == [1, 2]  # chunk 0 was not redone
    assert art.stats["rows"] == 5 and art.stats["rows_processed_this_run"] == 3


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads Linux /proc")
def test_workers_of_a_killed_annotate_do_not_outlive_it(tiny_dataset, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from cxrkit.artifacts.owners import pid_alive

    # Every worker holds its first chunk (never released) and says so with a file, so
    # the parent is killed (SIGKILL, as the OOM killer does) while its workers are busy.
    hook = tmp_path / "hold-hook"
    hook.mkdir()
    held = tmp_path / "held"
    held.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, time\n"
        "from cxrkit.stages import annotate\n"
        "def _held(args):\n"
        f"    open(os.path.join({str(held)!r}, str(os.getpid())), 'w').close()\n"
        "    time.sleep(300)\n"
        "annotate._process_chunk = _held\n"
    )
    code = (
        "from cxrkit.stages.annotate import AnnotateConfig, run\n"
        f"run(AnnotateConfig(dataset={str(tiny_dataset)!r}, out={str(tmp_path / 'ann')!r},"
        " workers=2, contours=False))\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(root)])}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.monotonic() + 120
    while len(workers := [int(p.name) for p in held.iterdir()]) < 2:
        assert time.monotonic() < deadline, "the annotate workers never started a chunk"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    deadline = time.monotonic() + 60
    while running := [pid for pid in workers if pid_alive(pid)]:
        if time.monotonic() > deadline:
            for pid in running:
                os.kill(pid, signal.SIGKILL)
            pytest.fail(f"workers {running} outlived the killed annotate")
        time.sleep(0.05)


def test_cli_annotates_the_real_demo_dataset(demo_dataset, tmp_path):
    result = CliRunner().invoke(app, ["annotate", str(demo_dataset), "--out", str(tmp_path / "ann"),
                                      "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    art = open_artifact(tmp_path / "ann", kind="annotations")
    assert art.stats["rows"] == open_artifact(demo_dataset).stats["rows"]
    assert art.manifest["inputs"][0]["id"] == open_artifact(demo_dataset).id


def test_cli_dry_run_prints_the_resolved_config(tiny_dataset, tmp_path):
    result = CliRunner().invoke(app, ["annotate", str(tiny_dataset), "--out", str(tmp_path / "x"),
                                      "--no-contours", "--preset", "annotate", "--dry-run"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["contours"] is False


def test_workers_do_not_change_the_output(tiny_dataset, annotated, tmp_path):
    art = run(AnnotateConfig(dataset=str(tiny_dataset), out=str(tmp_path / "w2"), workers=2,
                             preview=2))  # fmt: skip
    assert art.stats["workers"] == 2
    assert art.id == open_artifact(annotated).id
    mine = pq.read_table(art.file("annotations.parquet"))
    single = pq.read_table(Path(annotated) / "annotations.parquet")
    assert mine.drop(["labels"]).equals(single.drop(["labels"]))
    np.testing.assert_array_equal(  # NaN == NaN here, unlike Table.equals
        np.array(mine.column("labels").to_pylist()), np.array(single.column("labels").to_pylist())
    )
