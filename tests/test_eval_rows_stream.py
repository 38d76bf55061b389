"""Evaluation rows hold no report text: `has_report` says which rows have one, and a task
reads the texts of the rows it scores, a batch at a time; retrieval encodes them as they
come and gets the numbers of one call over all texts (real demo dataset, real IU reports,
the shipped MiniLM text tower)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from cxrkit.artifacts import ArtifactWriter, open_artifact
from cxrkit.evaluate.encoders import TEXT_BATCH, text_encoder_fn
from cxrkit.evaluate.features import read_rows
from cxrkit.evaluate.retrieval import embed_reports
from cxrkit.io.dataset import dataset_shards
from cxrkit.io.fields import compose_text
from cxrkit.io.schema import REJECTS_SCHEMA

REPORTS = ("report_findings", "report_impression", "report_text")


@pytest.fixture(scope="module")
def gapped(demo_dataset, tmp_path_factory):
    """The demo rows in two shards (9 + 8 rows); rows 2 and 12 without any report, row 7
    without findings (its other sections stay)."""
    source = open_artifact(demo_dataset)
    table = pa.concat_tables(pq.read_table(s) for s in dataset_shards(source))
    columns = {}
    for name in REPORTS:
        values = table.column(name).to_pylist()
        for row in (2, 12) + ((7,) if name == "report_findings" else ()):
            values[row] = None
        columns[name] = pa.array(values, type=table.schema.field(name).type)
    for name, values in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, values)
    writer = ArtifactWriter(tmp_path_factory.mktemp("gapped") / "ds", "dataset", {"test": 1},
                            inputs=[source])  # fmt: skip
    work = writer.begin()
    pq.write_table(table.slice(0, 9), work / "shard-00000.parquet", row_group_size=4)
    pq.write_table(table.slice(9), work / "shard-00001.parquet", row_group_size=4)
    pq.write_table(REJECTS_SCHEMA.empty_table(), work / "rejects.parquet")
    return writer.publish(stats={"rows": table.num_rows}).path


def _stored_texts(dataset, section: str) -> list[str]:
    rows = []
    for shard in dataset_shards(open_artifact(dataset)):
        rows += pq.read_table(shard).drop(["pixels"]).to_pylist()
    return [compose_text(r, section)[0] for r in rows]


@pytest.mark.parametrize("section", ["both", "findings", "impression"])
def test_rows_mark_reports_and_read_the_asked_texts_in_order(gapped, section):
    expected = _stored_texts(gapped, section)
    rows = read_rows(open_artifact(gapped), section)
    assert len(rows) == len(expected) == 17
    assert rows.has_report.dtype == bool
    assert rows.has_report.tolist() == [bool(t) for t in expected]
    assert np.flatnonzero(~rows.has_report).tolist() == [2, 12]  # row 7 falls back
    picked = [1, 2, 6, 7, 8, 9, 16]  # across the shard edge (row 9 starts shard 2)
    for batch_rows in (1, 3, 4096):  # batch edges before, on and after the picked rows
        got = list(rows.report_texts(picked, batch_rows=batch_rows))
        assert got == [expected[i] for i in picked]
    assert list(rows.report_texts(range(len(expected)), batch_rows=5)) == expected
    assert list(rows.report_texts([])) == []


def test_rows_hold_no_report_text(demo_dataset):
    rows = read_rows(open_artifact(demo_dataset))
    texts = {t for t in _stored_texts(demo_dataset, "both") if t}
    held = set()
    for f in dataclasses.fields(rows):
        value = getattr(rows, f.name)
        if isinstance(value, list):
            held |= {v for v in value if isinstance(v, str)}
    assert texts and not held & texts


def test_report_texts_refuses_unordered_or_out_of_range_rows(demo_dataset):
    rows = read_rows(open_artifact(demo_dataset))
    with pytest.raises(ValueError, match="ascending"):
        list(rows.report_texts([3, 1]))
    with pytest.raises(ValueError, match="ascending"):
        list(rows.report_texts([2, 2]))
    with pytest.raises(ValueError, match="past the last row"):
        list(rows.report_texts([len(rows)]))


def test_reports_encoded_in_batches_equal_one_call_over_all():
    from cxrkit.io.reports import iter_iu_reports
    from cxrkit.objectives.base import build_objective
    from cxrkit.objectives.maco import MaCo

    texts = []
    for report in iter_iu_reports():
        if report.findings:
            texts.append(report.findings)
        if len(texts) == 2 * TEXT_BATCH + 11:  # three encoder chunks, the last partial
            break
    torch.manual_seed(0)
    objective = build_objective("maco", MaCo.tiny_config()).eval()
    encode = text_encoder_fn(objective, torch.device("cpu"))
    with torch.inference_mode():
        whole = F.normalize(encode(texts).float(), dim=-1).numpy()
    streamed = embed_reports(encode, iter(texts), TEXT_BATCH)
    assert streamed.shape == (len(texts), whole.shape[1]) and streamed.dtype == np.float32
    assert streamed.tobytes() == whole.tobytes()
    assert np.allclose(np.linalg.norm(streamed, axis=1), 1.0, atol=1e-5)
