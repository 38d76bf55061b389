"""The NIH gold-standard reference of benchmarks/labeler_nih.py: reading and class mapping.

The second reference is only useful if it is read as published, so the mapping stated in
the script's docstring, the CSV checks and the reference-agreement formula are pinned
here on hand-written rows.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from cxrkit.errors import InputError

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "labeler_nih.py"
DATA = SCRIPT.parent / "data"
HEADER = ("filename,Atelectasis,Cardiomegaly,Effusion,Infiltration,Mass,Nodule,Pneumonia,"
          "Pneumothorax,Consolidation,Edema,Emphysema,Fibrosis,Pleural_Thickening,Hernia,normal")  # fmt: skip


@pytest.fixture(scope="module")
def nih():
    spec = importlib.util.spec_from_file_location("bench_labeler_nih", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(**ones: int) -> dict[str, int]:
    columns = HEADER.split(",")[1:]
    return {c: ones.get(c, 0) for c in columns}


def _csv(tmp_path: Path, lines: list[str], header: str = HEADER) -> Path:
    path = tmp_path / "gold.csv"
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


def test_reads_uid_and_values(nih, tmp_path):
    path = _csv(tmp_path, ["CXR7,0,1,0,0,0,0,0,0,0,0,0,0,0,0,0",
                           "CXR12,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1"])  # fmt: skip
    gold = nih.read_gold(path)
    assert sorted(gold) == [7, 12]
    assert gold[7]["Cardiomegaly"] == 1 and gold[7]["normal"] == 0
    assert gold[12]["normal"] == 1 and sum(gold[12].values()) == 1


@pytest.mark.parametrize(
    ("lines", "header", "message"),
    [
        (["CXR1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1"], HEADER.replace(",Hernia", ""), "Hernia"),
        (["CXR1,0,0,2,0,0,0,0,0,0,0,0,0,0,0,0"], HEADER, "other than 0/1"),
        (["1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0"], HEADER, "not CXR<uid>"),
        (["CXR1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1", "CXR1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1"], HEADER,
         "twice"),
    ],
)  # fmt: skip
def test_bad_gold_files_name_the_file_and_reason(nih, tmp_path, lines, header, message):
    path = _csv(tmp_path, lines, header)
    with pytest.raises(InputError, match=message) as info:
        nih.read_gold(path)
    assert str(path) in str(info.value)


def test_missing_gold_file(nih, tmp_path):
    with pytest.raises(InputError, match="cannot read the gold standard"):
        nih.read_gold(tmp_path / "absent.csv")


@pytest.mark.parametrize(
    ("row", "name", "expected"),
    [
        (_row(Effusion=1), "Pleural Effusion", True),
        (_row(normal=1), "No Finding", True),
        (_row(Mass=1), "Lung Lesion", True),
        (_row(Nodule=1), "Lung Lesion", True),
        (_row(Mass=1, Nodule=1), "Lung Lesion", True),
        (_row(Pleural_Thickening=1), "Pleural Effusion", False),
        (_row(Emphysema=1, Fibrosis=1, Hernia=1), "No Finding", False),
        (_row(Infiltration=1), "Consolidation", False),
        (_row(Atelectasis=1), "Atelectasis", True),
        (_row(Edema=1), "Edema", True),
    ],
)  # fmt: skip
def test_class_mapping(nih, row, name, expected):
    table = {**nih.NIH_MAP, **nih.APPROX_MAP}
    assert nih.gold_vector([row], name, table).tolist() == [expected]


def test_infiltration_is_approximate_and_outside_the_macro(nih):
    assert nih.APPROX_MAP == {"Lung Opacity": ("Infiltration",)}
    assert "Lung Opacity" not in nih.NIH_MAP
    assert len(nih.NIH_MAP) == 9
    assert set(nih.NIH_MAP) <= set(nih.CHEXPERT_CLASSES)
    used = {c for columns in nih.NIH_MAP.values() for c in columns}
    assert used.isdisjoint({"Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"})


def test_kappa_by_hand(nih):
    a = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    b = np.array([1, 0, 0, 0, 1, 1], dtype=bool)
    # p_o = 4/6; p_e = 0.5 * 0.5 + 0.5 * 0.5 = 0.5; kappa = (2/3 - 1/2) / (1/2) = 1/3
    assert nih.kappa(a, b) == pytest.approx(1 / 3)
    assert nih.kappa(a, a) == pytest.approx(1.0)
    assert nih.kappa(a, ~a) == pytest.approx(-1.0)
    assert math.isnan(nih.kappa(np.zeros(4, bool), np.zeros(4, bool)))  # p_e = 1: undefined


def test_scores_uncertain_both_ways(nih):
    gold = [_row(Pneumonia=1), _row(), _row(Pneumonia=1)]
    labels = np.full((3, 14), np.nan, dtype=np.float32)
    labels[:, nih.CHEXPERT_CLASSES.index("Pneumonia")] = [-1, -1, 1]
    table = {"Pneumonia": nih.NIH_MAP["Pneumonia"]}
    zeros = nih.score(gold, labels, table, uncertain_positive=False)["Pneumonia"]
    ones = nih.score(gold, labels, table, uncertain_positive=True)["Pneumonia"]
    assert (zeros["precision"], zeros["recall"], zeros["support"]) == (1.0, 0.5, 2)
    assert (ones["precision"], ones["recall"]) == (pytest.approx(2 / 3), 1.0)


def test_agreement_against_strict_mesh(nih):
    # MeSH "Pulmonary Congestion" alone is the MeSH reference's uncertain Edema, counted
    # present in the strict reading; the NIH gold has no Edema there.
    gold = [_row(Edema=1), _row(), _row(), _row()]
    mesh = [["Pulmonary Edema"], ["Pulmonary Congestion"], ["normal"], ["normal"]]
    labels = np.full((4, 14), np.nan, dtype=np.float32)
    labels[:, nih.CHEXPERT_CLASSES.index("Edema")] = [1, -1, 0, 1]
    table = nih.NIH_MAP
    out = nih.agreement(gold, mesh, labels, "Edema", table)
    assert (out["n"], out["nih"], out["mesh"], out["both"]) == (4, 1, 2, 1)
    assert out["agreement"] == pytest.approx(0.75)
    # p_o = 3/4, p_e = 1/4 * 2/4 + 3/4 * 2/4 = 1/2 -> kappa 1/2
    assert out["kappa"] == pytest.approx(0.5)
    # where they agree (rows 0, 2, 3): truth [1, 0, 0], U-Zeros guess [1, 0, 1] -> F1 2/3
    assert out["f1_agree U-Zeros"] == pytest.approx(2 / 3)


def test_dev_cases_never_print_held_out_reports(nih, capsys):
    reports = [{"uid": 1, "text": "HELD OUT TEXT", "mesh": ["normal"]},
               {"uid": 2, "text": "DEV TEXT", "mesh": ["normal"]}]  # fmt: skip
    gold = {1: _row(Pneumonia=1), 2: _row(Pneumonia=1)}
    labels = np.zeros((2, 14), dtype=np.float32)
    for what in ("errors", "disagreements"):
        nih.print_dev_cases(reports, gold, labels, "Pneumonia", what)
    out = capsys.readouterr().out
    assert "DEV TEXT" in out and "uid 2" in out
    assert "HELD OUT" not in out and "uid 1 " not in out


def test_bundled_gold_is_the_published_file(nih):
    path = DATA / "openi_gld_std14.csv"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest in (DATA / "README.md").read_text(encoding="utf-8")
    gold = nih.read_gold(path)
    assert len(gold) == 3851
    assert sum(row["normal"] for row in gold.values()) == 1379
    # "normal" never co-occurs with a finding column
    assert not any(row["normal"] and sum(row.values()) > 1 for row in gold.values())
