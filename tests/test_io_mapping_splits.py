"""A patient in two splits of a mapping CSV is refused: no silent train/test leakage."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cxrkit.cli import app
from cxrkit.errors import InputError
from cxrkit.io.mapping import read_mapping_csv

HEADER = "image_path,report_text,patient_id,split\n"


def _csv(tmp_path, body: str):
    path = tmp_path / "mapping.csv"
    path.write_text(HEADER + body)
    return path


def test_a_patient_in_two_splits_is_an_input_error_with_the_count(tmp_path):
    path = _csv(tmp_path, "a.png,x,p1,train\nb.png,x,p1,test\nc.png,x,p2,val\n"
                          "d.png,x,p2,train\ne.png,x,p3,test\n")  # fmt: skip
    with pytest.raises(InputError, match=r"2 patient\(s\) appear in more than one split") as err:
        read_mapping_csv(path)
    assert "'p1' in test, train" in str(err.value) and str(path) in str(err.value)


def test_one_split_per_patient_and_blank_splits_are_fine(tmp_path):
    path = _csv(tmp_path, "a.png,x,p1,train\nb.png,x,p1,train\nc.png,x,p2,\n"
                          "d.png,x,p2,test\ne.png,x,,val\nf.png,x,,test\n")  # fmt: skip
    assert [r.split for r in read_mapping_csv(path)] == ["train", "train", None, "test", "val",
                                                         "test"]  # fmt: skip


def test_ingest_exits_3_on_a_leaking_mapping(tmp_path):
    path = _csv(tmp_path, "a.png,x,p1,train\nb.png,x,p1,test\n")
    args = ["ingest", "--mapping", str(path), "--out", str(tmp_path / "ds"),
            "--salt-file", str(tmp_path / "salt.hex")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3, result.output
    assert "more than one split" in result.output
