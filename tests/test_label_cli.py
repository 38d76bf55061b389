"""`cxrkit label`: CSV in, CheXpert-labeler CSV out; bad rows give blanks, never a crash."""

from __future__ import annotations

import csv

from typer.testing import CliRunner

from cxrkit.cli import app
from cxrkit.text.csvlabel import CHEXPERT_CSV_COLUMNS

runner = CliRunner()


def _read(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_label_writes_the_chexpert_labeler_format(tmp_path):
    source = tmp_path / "reports.csv"
    with open(source, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "Report"])
        writer.writerows([
            ["1", "Cardiomegaly. No pleural effusion."],
            ["2", ""],
            ["3", "%%%% ~~~ 0xDEADBEEF"],
            ["4", "Le cœur est de taille normale, pas d'épanchement."],
            ["5"],  # short row: no Report cell at all
            ["6", "Possible left lower lobe pneumonia.\nET tube in place."],
        ])  # fmt: skip
    out = tmp_path / "labeled.csv"
    result = runner.invoke(app, ["label", str(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = _read(out)
    assert list(rows[0]) == ["Reports", *CHEXPERT_CSV_COLUMNS]
    assert len(rows) == 6
    assert rows[0]["Cardiomegaly"] == "1.0" and rows[0]["Pleural Effusion"] == "0.0"
    assert rows[0]["No Finding"] == "" and rows[0]["Edema"] == ""
    for no_report in (rows[1], rows[4]):  # empty cell, missing cell: nothing to label
        assert all(no_report[c] == "" for c in CHEXPERT_CSV_COLUMNS)
    for no_mention in (rows[2], rows[3]):  # text, but no mention: CheXpert's No Finding = 1
        assert {c: no_mention[c] for c in CHEXPERT_CSV_COLUMNS if no_mention[c]} == {
            "No Finding": "1.0"
        }
    assert rows[5]["Pneumonia"] == "-1.0" and rows[5]["Support Devices"] == "1.0"
    assert rows[5]["Reports"] == "Possible left lower lobe pneumonia.\nET tube in place."


def test_default_section_policy_is_the_impression_and_can_be_changed(tmp_path):
    source = tmp_path / "reports.csv"
    source.write_text('Report\n"FINDINGS: Small left effusion. IMPRESSION: No acute disease."\n')
    out = tmp_path / "labeled.csv"
    assert runner.invoke(app, ["label", str(source), "--out", str(out)]).exit_code == 0
    assert _read(out)[0]["Pleural Effusion"] == "" and _read(out)[0]["No Finding"] == "1.0"
    args = ["label", str(source), "--out", str(out), "--sections", "findings+impression"]
    assert runner.invoke(app, args).exit_code == 0
    assert _read(out)[0]["Pleural Effusion"] == "1.0" and _read(out)[0]["No Finding"] == ""
    bad = runner.invoke(app, ["label", str(source), "--out", str(out), "--sections", "all"])
    assert bad.exit_code == 2


def test_headerless_file_with_no_header_flag(tmp_path):
    source = tmp_path / "plain.csv"
    source.write_text("No acute cardiopulmonary process.\nLarge right pneumothorax.\n")
    out = tmp_path / "labeled.csv"
    result = runner.invoke(app, ["label", str(source), "--out", str(out), "--no-header"])
    assert result.exit_code == 0, result.output
    rows = _read(out)
    assert [r["No Finding"] for r in rows] == ["1.0", ""]
    assert rows[1]["Pneumothorax"] == "1.0"


def test_custom_text_column_and_invalid_utf8(tmp_path):
    source = tmp_path / "latin1.csv"
    source.write_bytes("Text\nSmall effusion \xe9\xff.\n".encode("latin-1"))
    out = tmp_path / "labeled.csv"
    result = runner.invoke(app, ["label", str(source), "--out", str(out), "--text-column", "Text"])
    assert result.exit_code == 0, result.output
    assert _read(out)[0]["Pleural Effusion"] == "1.0"


def test_missing_column_is_an_input_error_and_writes_nothing(tmp_path):
    source = tmp_path / "reports.csv"
    source.write_text("id,text\n1,Cardiomegaly.\n")
    out = tmp_path / "labeled.csv"
    result = runner.invoke(app, ["label", str(source), "--out", str(out)])
    assert result.exit_code == 3
    assert "Report" in result.output and not out.exists()


def test_dash_reads_stdin_and_writes_stdout():
    source = "Report\nCardiomegaly. No pleural effusion.\nNo acute disease.\n"
    result = runner.invoke(app, ["label", "-", "--out", "-"], input=source)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(result.stdout.splitlines()))
    assert [r["Reports"] for r in rows] == [
        "Cardiomegaly. No pleural effusion.",
        "No acute disease.",
    ]
    assert rows[0]["Cardiomegaly"] == "1.0" and rows[0]["Pleural Effusion"] == "0.0"
    assert "labelled 2 reports" in result.stderr


def test_label_path_imports_no_torch_timm_or_open_clip(tmp_path):
    # A fresh process runs the whole `cxrkit label` path; spaCy's thinc would pull in torch
    # (seconds of start-up) were it not kept out (cxrkit/text/lean.py).
    import subprocess
    import sys

    source = tmp_path / "reports.csv"
    source.write_text("Report\nCardiomegaly. No effusion.\n")
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from cxrkit.cli import app\n"
        f"result = CliRunner().invoke(app, ['label', {str(source)!r}, '--out', "
        f"{str(tmp_path / 'out.csv')!r}])\n"
        "assert result.exit_code == 0, result.output\n"
        "assert 'spacy' in sys.modules\n"
        "print(sorted(m for m in ('torch', 'timm', 'open_clip') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert _read(tmp_path / "out.csv")[0]["Cardiomegaly"] == "1.0"


def test_torch_still_imports_after_spacy_was_imported_without_it():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from cxrkit.text.lean import import_spacy_without_torch\n"
        "assert import_spacy_without_torch() and 'torch' not in sys.modules\n"
        "assert not import_spacy_without_torch()  # once per process\n"
        "import torch\n"
        "print(torch.zeros(2).sum().item())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0.0"


# The CheXpert labeler's own example, input and output as published in its repository
# (stanfordmlgroup/chexpert-labeler: sample_reports.csv, a header-less one-column file,
# and labeled_reports.csv, what its label.py wrote for it).
REFERENCE_SAMPLE_REPORTS = (
    "Heart size normal and lungs are clear. No edema or pneumonia. No effusion\n"
    '"1. Left pleural effusion with adjacent atelectasis. Right effusion is also present.\n'
    "\n"
    '2. Cardiomegaly without overt edema."\n'
    '"Minimal patchy airspace disease within the lingula, may reflect atelectasis or'
    ' consolidation."\n'
    "1. Stable mild cardiomegaly. 2. Hyperexpanded but clear lungs.\n"
)
REFERENCE_LABELED_REPORTS = (
    "Reports,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Lesion,Lung Opacity,"
    "Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,"
    "Fracture,Support Devices\n"
    "Heart size normal and lungs are clear. No edema or pneumonia. No effusion,"
    "1.0,,0.0,,,0.0,,0.0,,,0.0,,,\n"
    '"1. Left pleural effusion with adjacent atelectasis. Right effusion is also present.\n'
    "\n"
    '2. Cardiomegaly without overt edema.",,,1.0,,,0.0,,,1.0,,1.0,,,\n'
    '"Minimal patchy airspace disease within the lingula, may reflect atelectasis or'
    ' consolidation.",,,,,1.0,,-1.0,,-1.0,,,,,\n'
    "1. Stable mild cardiomegaly. 2. Hyperexpanded but clear lungs.,,,1.0,,,,,,,,,,,\n"
)


def test_the_reference_labelers_published_example_is_reproduced_byte_for_byte(tmp_path):
    reports = tmp_path / "sample_reports.csv"
    reports.write_text(REFERENCE_SAMPLE_REPORTS, encoding="utf-8")
    out = tmp_path / "labeled_reports.csv"
    result = CliRunner().invoke(app, ["label", str(reports), "--no-header", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().decode("utf-8") == REFERENCE_LABELED_REPORTS
