"""Measure the CheXpert-style labeler against the NIH gold standard of the IU (OpenI) reports.

Run: ``python benchmarks/labeler_nih.py [--json] [--gold CSV]``. A second reference
next to ``benchmarks/labeler.py``, whose MeSH -> class mapping this project wrote
(several rules after looking at the dev half). This one was written by others.

Reference: ``benchmarks/data/openi_gld_std14.csv``, the gold standard of OpenI reports
published by the NIH authors of ChestX-ray8/14 and NegBio (Wang et al., CVPR 2017;
Peng et al., AMIA 2018) in the NegBio repository (``examples/openi_gld_std14.csv``,
public domain; source, commit and licence in ``benchmarks/data/README.md``): one row per
report ``CXR<uid>``, 0/1 for 14 ChestX-ray14 findings and ``normal``. Reports are read in
place from torchxrayvision's bundled archive, as in ``labeler.py``.

Protocol, fixed in this docstring before the first run (nothing below was changed
after looking at results; a mistake found later is said here, not silently fixed):

- Split: the same even / odd report uid halves as ``labeler.py``; even = dev (report
  texts and per-report disagreements may be read), odd = held out (summary numbers
  only; ``--errors`` / ``--disagreements`` refuse odd uids).
- Reports scored: every IU report with some text whose uid has a gold row. Unlike
  ``labeler.py`` a report indexed "No Indexing" is kept: this reference does not depend
  on the MeSH indexing. Gold rows without a labelable report and reports without a
  gold row are counted and printed, not scored.
- Labeler: ``Labeler(sections="findings+impression")``, the setting ``labeler.py`` uses,
  so the two references score the same predictions.
- Class mapping (NIH_MAP), one-to-one or nearly; a class is positive when any of its
  gold columns is 1:
  Atelectasis -> Atelectasis, Cardiomegaly -> Cardiomegaly, Effusion -> Pleural
  Effusion, Pneumonia -> Pneumonia, Pneumothorax -> Pneumothorax, Consolidation ->
  Consolidation, Edema -> Edema, normal -> No Finding, Mass or Nodule -> Lung Lesion.
  Approximate (APPROX_MAP, printed on its own line, never in the macro): Infiltration
  -> Lung Opacity (CheXpert's Lung Opacity is much wider: opacity, density,
  infiltrate, airspace disease, scarring ...). Not used: Emphysema, Fibrosis,
  Pleural_Thickening, Hernia (no CheXpert class of their own), and the CheXpert classes
  without a gold column (Enlarged Cardiomediastinum, Fracture, Pleural Other, Support
  Devices).
- Prediction: as in ``labeler.py``: U-Zeros (only 1 is positive) and U-Ones (1 or -1
  positive), both printed for both halves. Macro F1 = the mean over the 9 classes of
  NIH_MAP.
- Agreement of the two references: on the reports that have a gold row and are scored
  by ``labeler.py`` too (MeSH-indexed, with text), per class: the NIH gold against
  ``labeler.py``'s MeSH reference with its uncertain forms counted present (its
  "strict MeSH" reading; the gold has no uncertain value), observed agreement and
  Cohen's kappa; and the labeler's F1 against the NIH gold on only the reports where
  the two references agree (U-Zeros and U-Ones), which shows how much of the remaining
  error is the references disagreeing. The approximate Lung Opacity row is printed too.
- Published NegBio / ChestX-ray8 figures on this gold standard are not in the NegBio
  repository; none are quoted here.

Found after the first run (2026-11-30; the mapping above is unchanged, no mistake in it
was found): the gold standard is not an independent reading of the report texts. On
the reports both references score, its positives are a subset of the MeSH reference's
(strict) for every class but Lung Lesion and Pleural Effusion, and identical (kappa
1.000, both halves) for Atelectasis, Consolidation, Pneumonia and Pneumothorax: it is
the same OpenI MeSH indexing, mapped by head term. Its differences from ``labeler.py``'s
mapping, seen on dev-half reports, follow the MeSH head literally: a "Nodule" term at
any site, calcified or not, is a Nodule (uid 406 "calcified right hilar nodules
consistent with chronic granulomatous disease", 820 a calcified granuloma projecting
over the heart, 1022); "Pericardial Effusion" counts as Effusion (uids 1666 and 2570,
whose texts say "No pleural effusion" / no "large pleural effusion"); Cardiomegaly only
from the "Cardiomegaly" term (uid 3116, "The cardiac silhouette is enlarged": 0), and
including "Cardiomegaly/borderline"; Edema only from "Pulmonary Edema" (uid 88, "mild
congestive heart failure": 0); normal only from the "normal" term (device-only reports
such as uid 392, "Lungs are clear ... No acute cardiopulmonary disease", are 0). So the
agreement table measures this project's mapping choices, not the MeSH indexers, and
the scores here share the indexers' errors and conventions (e.g. "atelectasis or
infiltrate" indexed as atelectasis present, where the labeler says uncertain).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

sys.path.insert(0, str(Path(__file__).resolve().parent))
import labeler as mesh_bench  # noqa: E402  (benchmarks/labeler.py: the MeSH reference)

from cxrkit.errors import InputError  # noqa: E402
from cxrkit.text.labeler import CHEXPERT_CLASSES, Labeler, has_letters  # noqa: E402

GOLD = Path(__file__).resolve().parent / "data" / "openi_gld_std14.csv"
GOLD_COLUMNS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
                "Pneumonia", "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis",
                "Pleural_Thickening", "Hernia", "normal")  # fmt: skip
NIH_MAP: dict[str, tuple[str, ...]] = {
    "No Finding": ("normal",),
    "Cardiomegaly": ("Cardiomegaly",),
    "Lung Lesion": ("Mass", "Nodule"),
    "Edema": ("Edema",),
    "Consolidation": ("Consolidation",),
    "Pneumonia": ("Pneumonia",),
    "Atelectasis": ("Atelectasis",),
    "Pneumothorax": ("Pneumothorax",),
    "Pleural Effusion": ("Effusion",),
}
APPROX_MAP: dict[str, tuple[str, ...]] = {"Lung Opacity": ("Infiltration",)}
_UID = re.compile(r"CXR(\d+)")


def read_gold(path: Path) -> dict[int, dict[str, int]]:
    """uid -> {gold column: 0 or 1} from a gold-standard CSV (``filename`` = ``CXR<uid>``).

    Raises:
        InputError: the file is missing or unreadable, lacks a column, has a filename
            that is not ``CXR<digits>``, a value other than 0 / 1, or a uid twice.
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in ("filename", *GOLD_COLUMNS) if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"{path}: missing gold column(s) {', '.join(missing)}")
            gold: dict[int, dict[str, int]] = {}
            for line, row in enumerate(reader, start=2):
                match = _UID.fullmatch((row["filename"] or "").strip())
                if not match:
                    raise InputError(f"{path}:{line}: filename {row['filename']!r} is not "
                                     "CXR<uid>")  # fmt: skip
                uid = int(match.group(1))
                if uid in gold:
                    raise InputError(f"{path}:{line}: CXR{uid} appears twice")
                values = {c: (row[c] or "").strip() for c in GOLD_COLUMNS}
                bad = {c: v for c, v in values.items() if v not in ("0", "1")}
                if bad:
                    raise InputError(f"{path}:{line}: values other than 0/1: {bad}")
                gold[uid] = {c: int(v) for c, v in values.items()}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read the gold standard {path}: {exc}") from exc
    return gold


def gold_vector(rows: list[dict[str, int]], name: str,
                table: dict[str, tuple[str, ...]]) -> np.ndarray:  # fmt: skip
    """Boolean reference per report: any of the class's gold columns is 1."""
    return np.array([any(row[c] == 1 for c in table[name]) for row in rows], dtype=bool)


def kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two boolean raters: (p_o - p_e) / (1 - p_e); NaN when p_e = 1."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    p_o = float(np.mean(a == b))
    p_e = float(a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean()))
    return float("nan") if p_e == 1 else (p_o - p_e) / (1 - p_e)


def predicted(labels: np.ndarray, name: str, uncertain_positive: bool) -> np.ndarray:
    column = labels[:, CHEXPERT_CLASSES.index(name)]
    return (column == 1) | ((column == -1) & uncertain_positive)


def score(gold: list[dict[str, int]], labels: np.ndarray, table: dict[str, tuple[str, ...]],
          uncertain_positive: bool) -> dict[str, dict]:  # fmt: skip
    """class -> precision, recall, f1, support against the gold columns of ``table``."""
    out = {}
    for name in table:
        truth = gold_vector(gold, name, table)
        p, r, f, _ = precision_recall_fscore_support(
            truth, predicted(labels, name, uncertain_positive), average="binary",
            zero_division=0)  # fmt: skip
        out[name] = {"precision": float(p), "recall": float(r), "f1": float(f),
                     "support": int(truth.sum())}  # fmt: skip
    return out


def agreement(gold: list[dict[str, int]], mesh: list[list[str]], labels: np.ndarray,
              name: str, table: dict[str, tuple[str, ...]]) -> dict:  # fmt: skip
    """The NIH gold against the strict MeSH reference for one class, and the labeler's
    F1 against the gold where the two agree."""
    nih = gold_vector(gold, name, table)
    mesh_table = {**mesh_bench.MESH_MAP, **mesh_bench.EXTRA_MAP}
    reports = [{"mesh": terms} for terms in mesh]
    ours = mesh_bench.truth_vector(reports, name, mesh_table, False, strict=True)
    agree = nih == ours
    out = {"n": len(nih), "nih": int(nih.sum()), "mesh": int(ours.sum()),
           "both": int((nih & ours).sum()), "agreement": float(agree.mean()) if len(nih) else 0.0,
           "kappa": kappa(nih, ours)}  # fmt: skip
    for mode, unc in (("U-Zeros", False), ("U-Ones", True)):
        guess = predicted(labels, name, unc)[agree]
        out[f"f1_agree {mode}"] = float(precision_recall_fscore_support(
            nih[agree], guess, average="binary", zero_division=0)[2])  # fmt: skip
    return out


def read_reports(gold: dict[int, dict[str, int]]) -> tuple[list[dict], dict]:
    """Reports with text and a gold row (uid order), and the coverage counts."""
    from cxrkit.io.reports import iter_iu_reports

    reports, texts = [], set()
    for report in iter_iu_reports():
        uid = int(str(report.uid).removeprefix("CXR"))
        if not has_letters(report.text):
            continue
        texts.add(uid)
        if uid in gold:
            reports.append({"uid": uid, "text": report.text, "mesh": list(report.mesh)})
    coverage = {"gold_rows": len(gold), "scored": len(reports),
                "gold_without_text": len(set(gold) - texts),
                "text_without_gold": len(texts - set(gold))}  # fmt: skip
    return sorted(reports, key=lambda r: r["uid"]), coverage


def print_scores(title: str, rows: dict[str, dict]) -> None:
    print(f"\n{title}")
    print(f"{'class':<38} {'P':>6} {'R':>6} {'F1':>6} {'n+':>5}")
    for name, m in rows.items():
        print(f"{name:<38} {m['precision']:6.3f} {m['recall']:6.3f} {m['f1']:6.3f} "
              f"{m['support']:5d}")  # fmt: skip


def print_agreement(title: str, rows: dict[str, dict]) -> None:
    print(f"\n{title}")
    print(f"{'class':<30} {'n':>5} {'NIH+':>5} {'MeSH+':>5} {'both':>5} {'agree':>6} "
          f"{'kappa':>6} {'F1agr U0':>8} {'F1agr U1':>8}")  # fmt: skip
    for name, m in rows.items():
        print(f"{name:<30} {m['n']:5d} {m['nih']:5d} {m['mesh']:5d} {m['both']:5d} "
              f"{m['agreement']:6.3f} {m['kappa']:6.3f} {m['f1_agree U-Zeros']:8.3f} "
              f"{m['f1_agree U-Ones']:8.3f}")  # fmt: skip


def print_dev_cases(reports: list[dict], gold: dict, labels: np.ndarray, name: str,
                    what: str) -> None:  # fmt: skip
    """Dev-half (even uid) reports only: labeler vs NIH (``errors``) or NIH vs MeSH
    (``disagreements``). Held-out reports are never printed."""
    table = {**NIH_MAP, **APPROX_MAP}
    mesh_table = {**mesh_bench.MESH_MAP, **mesh_bench.EXTRA_MAP}
    column = CHEXPERT_CLASSES.index(name)
    for i, report in enumerate(reports):
        if report["uid"] % 2:
            continue  # held out: summary numbers only
        (nih,) = gold_vector([gold[report["uid"]]], name, table)
        if what == "errors":
            guess = labels[i, column] == 1
            if guess == nih:
                continue
            kind = "FN" if nih else "FP"
        else:
            if report["mesh"] == ["No Indexing"]:
                continue
            ours = mesh_bench.reference(report["mesh"], name, mesh_table) != 0
            if ours == nih:
                continue
            kind = "NIH-only" if nih else "MeSH-only"
        row = {c: v for c, v in gold[report["uid"]].items() if v}
        print(f"--- {kind} uid {report['uid']} label {labels[i, column]} gold {row} "
              f"mesh {report['mesh']}\n{report['text']}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gold", type=Path, default=GOLD, help="the gold-standard CSV")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    classes = sorted({**NIH_MAP, **APPROX_MAP})
    parser.add_argument("--errors", metavar="CLASS", choices=classes,
                        help="print dev-half labeler (U-Zeros) vs NIH disagreements")  # fmt: skip
    parser.add_argument("--disagreements", metavar="CLASS", choices=classes,
                        help="print dev-half NIH vs MeSH disagreements")  # fmt: skip
    args = parser.parse_args()
    try:
        gold = read_gold(args.gold)
    except InputError as exc:
        print(exc, file=sys.stderr)
        sys.exit(InputError.exit_code)
    reports, coverage = read_reports(gold)
    labeler = Labeler(sections="findings+impression")
    labels = np.array([lab for lab, _ in labeler.label([r["text"] for r in reports])],
                      dtype=np.float32)  # fmt: skip
    if args.errors or args.disagreements:
        name, what = (
            (args.errors, "errors") if args.errors else (args.disagreements, "disagreements")
        )
        print_dev_cases(reports, gold, labels, name, what)
        return
    summary: dict = {"coverage": coverage}
    if not args.json:
        print(f"NIH OpenI gold standard ({args.gold}): {coverage['gold_rows']} rows, "
              f"{coverage['scored']} scored, {coverage['gold_without_text']} without report "
              f"text, {coverage['text_without_gold']} reports with text but no gold row. "
              f"Macro F1 over the {len(NIH_MAP)} classes of NIH_MAP; Lung Opacity vs "
              "Infiltration is approximate and outside the macro.")  # fmt: skip
    for half, parity in (("dev (even uid)", 0), ("held-out (odd uid)", 1)):
        index = [i for i, r in enumerate(reports) if r["uid"] % 2 == parity]
        rows_gold = [gold[reports[i]["uid"]] for i in index]
        for mode, unc in (("U-Ones", True), ("U-Zeros", False)):
            rows = score(rows_gold, labels[index], NIH_MAP, unc)
            approx = score(rows_gold, labels[index], APPROX_MAP, unc)
            macro = float(np.mean([m["f1"] for m in rows.values()]))
            summary[f"{half} {mode}"] = {"classes": rows, "approximate": approx,
                                         "macro_f1": macro}  # fmt: skip
            if not args.json:
                approx_rows = {f"{k} ~ Infiltration (approx.)": v for k, v in approx.items()}
                print_scores(f"{half}, {mode}: n={len(index)}, macro F1 {macro:.3f}",
                             {**rows, **approx_rows})  # fmt: skip
        both = [i for i in index if reports[i]["mesh"] != ["No Indexing"]]
        mesh = [reports[i]["mesh"] for i in both]
        rows_both = [gold[reports[i]["uid"]] for i in both]
        table = {**NIH_MAP, **APPROX_MAP}
        agree = {name: agreement(rows_both, mesh, labels[both], name, table) for name in table}
        summary[f"{half} references"] = agree
        if not args.json:
            print_agreement(f"{half}: NIH gold vs MeSH reference (strict), n={len(both)}; "
                            "F1agr = labeler F1 vs NIH where the two agree", agree)  # fmt: skip
    if args.json:
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
