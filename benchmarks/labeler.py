"""Measure the CheXpert-style labeler against the MeSH terms of the 3,955 real IU reports.

Run: ``python benchmarks/labeler.py [--json]``. Reads the reports in place from
torchxrayvision's bundled ``NLMCXR_reports.tgz`` (CC BY-NC-ND: never copied).

Protocol (the split was fixed before any measurement; what changed after is said):
- Split by the numeric report uid: even uids are the development half (the
  lexicon and cues were tuned looking at it), odd uids are held out. Both are
  printed; the held-out one is the score.
- Report text = the text ``cxrkit ingest`` stores (``cxrkit.io.reports``:
  "FINDINGS: ..\n\nIMPRESSION: ..\n\nINDICATION: .." and the other sections);
  the labeler must ignore indication/comparison by itself.
- Reference: a class is positive when one of the report's MeSH *major* terms
  maps to it (MESH_MAP below, first "/"-part of the term; for Cardiomegaly also
  "Cardiac Shadow/.../enlarged" and "Heart/.../enlarged"); otherwise negative.
  No Finding is positive for "normal" or when every major term is a device
  (CheXpert's No Finding ignores most Support Devices). Reports indexed
  "No Indexing" (no reference at all) are left out. These two rules were
  added after the first dev-half run: without them every un-indexed or
  device-only report counts as a No Finding false positive.
- Prediction: positive when the label is 1 ("U-Zeros": -1, 0 and NaN are
  negative); U-Ones figures (1 or -1 positive) are printed as well. We first
  planned U-Ones as the headline, assuming MeSH indexers code hedged findings;
  reviewing dev-half errors showed they mostly do not ("concerning for
  pneumonia", "cannot exclude ..." carry no MeSH term), so U-Zeros is the
  headline. The choice was made on the dev half; both are always printed.
- Added with the CheXpert conventions (issue 16, decided on the dev half, from the
  reference's phrases/mention lists, not from scores): MeSH "Cicatrix" (not pleural)
  is a Lung Opacity reference ("scar" is a lung_opacity.txt phrase) and a "round"
  Opacity / Density a Lung Lesion reference ("nodular opacity / density" are
  lung_lesion.txt phrases). The labeler is run with the ``findings+impression``
  section policy (MeSH indexes the whole report); ``cxrkit label`` defaults to the
  impression.
- Added in the second issue-16 pass (decided on the dev half, from the reference's own
  files; the per-class U/pres and U/abs columns showed that most remaining disagreements
  are the labeler's -1 against a MeSH term, i.e. convention):
  * uncertain forms: MeSH "Pulmonary Congestion" without "Pulmonary Edema" / "Heart
    Failure" is CheXpert's uncertain Edema (post_negation_uncertainty.txt: "vascular
    congestion", "pulmonary congestion"); "Cardiomegaly/borderline" (every heart term
    "borderline") is its uncertain Cardiomegaly ("borderline heart size"). These count
    like a -1 label: negative under U-Zeros, positive under U-Ones. The "strict MeSH"
    macro F1 (printed next to it) counts them present both ways, as before.
  * MeSH "Markings" qualified "interstitial" / "reticular" and "Lung Diseases,
    Interstitial" are Lung Opacity references (lung_opacity.txt: "interstitial marking",
    "reticular marking", "interstitial lung").
  * Opacity / Density / Cicatrix terms qualified by a non-lung site (ribs, adipose
    tissue, breast, spine, ...: NON_LUNG_SITES) are not Lung Opacity / Lung Lesion
    references (dev half: bone islands, nipple shadows, a breast scar).
  * A "Nodule" term with a "Calcinosis" / "Calcified Granuloma" term at the same site
    is a calcified nodule, not a Lung Lesion reference (the reference's
    unmention/lung_lesion.txt: "calcified nodul"; the labeler reads "calcified <size and
    site words> nodule" the same way).
  * No Finding is also positive when the only other term is "Technical Quality of Image
    Unsatisfactory" (image quality is not an observation).
  * Reports with no text at all (14 per half, all indexed "normal") are left out like
    "No Indexing" ones: there is nothing to label.
  Tried on the dev half and dropped: "Hydropneumothorax" as a Pneumothorax reference
  (indexed from "effusion with air-fluid level ... no pneumothorax"), a round density
  next to a granuloma term as no Lung Lesion (the labeler follows the reference's
  literal "nodule" there).
  Both macro F1s are printed for both halves; the definition is printed with the tables.
- Assertion accuracy (printed per class x affirmed / negated / uncertain): every
  mention phrase of the CheXpert labeler's ``phrases/mention`` lists, in the
  sentences of ``tests/test_text_chexpert_reference.py``, rewritten three ways
  ("There is X" -> "There is no X" / "There may be X"; "X is enlarged" -> "X is not
  enlarged" / "X may be enlarged"); expected: the reference's value, 0, -1.
- Long reports: the reports joined into one text of 10,000 and one of 100,000 characters
  (the labeler's MAX_CHARS); CPU time per character of each and their ratio (near 1 when the
  labeler is linear in the report's length). Before issue 16's robustness pass the
  assertion tagger was quadratic: ratio 1.75-1.92 here (now 1.15-1.36, CPU time, two
  alternating runs), and about 14x per character at 100,000 on cue-dense text.
- End to end: ``python -m cxrkit label`` in a fresh process on a temporary CSV of
  the reports (deleted after the run) and on a 2-row CSV, next to a bare
  ``python -c "import spacy"``: reports/s including start-up, and start-up itself.
- Macro F1 is the mean over the classes in MESH_MAP (Support Devices is
  printed separately: MeSH's device terms also cover clips and sternotomy wires).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from cxrkit.text.labeler import CHEXPERT_CLASSES, Labeler, has_letters

MESH_MAP: dict[str, set[str]] = {
    "No Finding": {"normal"},
    "Cardiomegaly": {"Cardiomegaly"},
    "Lung Opacity": {"Opacity", "Airspace Disease", "Infiltrate", "Density"},
    "Lung Lesion": {"Nodule", "Mass"},
    "Edema": {"Pulmonary Edema", "Pulmonary Congestion", "Heart Failure"},
    "Consolidation": {"Consolidation"},
    "Pneumonia": {"Pneumonia"},
    "Atelectasis": {"Pulmonary Atelectasis"},
    "Pneumothorax": {"Pneumothorax"},
    "Pleural Effusion": {"Pleural Effusion"},
    "Fracture": {"Fractures, Bone"},
}
EXTRA_MAP: dict[str, set[str]] = {
    "Support Devices": {"Catheters, Indwelling", "Implanted Medical Device", "Tube, Inserted",
                        "Medical Device", "Stents", "Pacemaker, Artificial"},
}  # fmt: skip
ENLARGED_HEART_HEADS = {"Cardiac Shadow", "Heart"}
# Not an observation: a report indexed with only this (and devices) has no finding.
IMAGE_QUALITY = "Technical Quality of Image Unsatisfactory"
HEADLINE = (
    "Macro F1 over the 11 classes of MESH_MAP. Reference: a MeSH major term of the class "
    "(present); 'Pulmonary Congestion' alone (Edema) and an all-'borderline' Cardiomegaly are "
    "the uncertain forms CheXpert's rules define, counted like the labeler's -1: negative "
    "under U-Zeros, positive under U-Ones. 'strict MeSH' counts them present either way. "
    "U/pres: labeler -1 where MeSH has the class (a U-Zeros miss); U/abs: labeler -1 where "
    "MeSH has none (a U-Ones false alarm)."
)
# MeSH terms for devices: a report whose only terms are devices is "normal" for CheXpert's
# No Finding, which ignores Support Devices.
DEVICE_HEADS = {"Catheters, Indwelling", "Implanted Medical Device", "Tube, Inserted",
                "Medical Device", "Stents", "Pacemaker, Artificial", "Surgical Instruments",
                "Sutures", "Foreign Bodies"}  # fmt: skip


def read_reports() -> list[dict]:
    """uid, text and MeSH major terms of every indexed report, via cxrkit.io.reports."""
    from cxrkit.io.reports import iter_iu_reports

    reports = []
    for report in iter_iu_reports():
        if report.mesh == ["No Indexing"]:
            continue  # not indexed: no reference to score against
        if not has_letters(report.text):
            continue  # no text at all (14 per half, all indexed "normal"): nothing to label
        uid = int(str(report.uid).removeprefix("CXR"))
        reports.append({"uid": uid, "text": report.text, "mesh": list(report.mesh)})
    return sorted(reports, key=lambda r: r["uid"])


# Sites that make an Opacity / Density term something other than a lung opacity
# (issue 16, dev half: "Density/ribs/.../round", "Density/adipose tissue", "Opacity/thoracic
# vertebrae" are bone islands, nipple shadows and fragments, not lung findings).
NON_LUNG_SITES = ("ribs", "adipose tissue", "breast", "thoracic vertebrae", "spine", "clavicle",
                  "humerus", "shoulder", "abdomen", "soft tissue", "nipple")  # fmt: skip
# MeSH qualifiers naming a CheXpert lung_opacity.txt phrase ("interstitial marking",
# "reticular marking"); "Lung Diseases, Interstitial" is its "interstitial lung".
OPACITY_MARKINGS = ("interstitial", "reticular")
# MeSH qualifiers that describe rather than place a finding.
DESCRIPTORS = {"multiple", "small", "large", "focal", "round", "scattered", "mild", "chronic",
               "severe", "moderate", "diffuse", "patchy"}  # fmt: skip


def _qualifiers(term: str) -> list[str]:
    return [part.strip() for part in term.split("/")[1:]]


def _site(term: str, sites: tuple[str, ...]) -> bool:
    """Whether one of the term's qualifiers is in ``sites``."""
    return bool(set(_qualifiers(term)) & set(sites))


def _same_site(term: str, other: str) -> bool:
    """Whether two terms name the same site (their qualifiers less DESCRIPTORS)."""
    return set(_qualifiers(term)) - DESCRIPTORS == set(_qualifiers(other)) - DESCRIPTORS


def _calcified(nodule: str, mesh: list[str]) -> bool:
    """Whether a Nodule term has a Calcinosis / Calcified Granuloma term at the same site:
    a calcified nodule, which CheXpert's unmention list ("calcified nodul") keeps out of
    Lung Lesion."""
    return any(t.split("/")[0] in ("Calcinosis", "Calcified Granuloma")
               and _same_site(nodule, t) for t in mesh)  # fmt: skip


def reference(mesh: list[str], name: str, table: dict[str, set[str]]) -> float:
    """1 / -1 / 0: the MeSH reference for one class (see the module docstring).

    -1 ("uncertain form") only where the indexed term itself is what CheXpert's rules
    call uncertain: "Pulmonary Congestion" without an edema / heart-failure term (its
    post_negation_uncertainty.txt: vascular / pulmonary congestion), and a Cardiomegaly
    that every term qualifies "borderline" ("borderline heart size").
    """
    heads = {term.split("/")[0].strip() for term in mesh}
    if name == "No Finding" and heads and heads - {IMAGE_QUALITY} <= DEVICE_HEADS:
        return 1.0  # only devices and image quality: no finding
    lung = [t for t in mesh if not _site(t, NON_LUNG_SITES)]
    lung_heads = {t.split("/")[0].strip() for t in lung}
    if name in ("Lung Opacity", "Lung Lesion"):
        heads = {h for h in heads if h not in ("Opacity", "Density")} | (
            lung_heads & {"Opacity", "Density"}
        )
    if name == "Edema":
        if heads & {"Pulmonary Edema", "Heart Failure"}:
            return 1.0
        return -1.0 if "Pulmonary Congestion" in heads else 0.0
    if name == "Cardiomegaly":
        enlarged = [t for t in mesh if t.split("/")[0] == "Cardiomegaly"
                    or (t.split("/")[0] in ENLARGED_HEART_HEADS and "enlarged" in t)]  # fmt: skip
        if not enlarged:
            return 0.0
        return -1.0 if all("borderline" in _qualifiers(t) for t in enlarged) else 1.0
    if name != "Lung Lesion" and heads & table[name]:
        return 1.0
    # CheXpert's class definitions (phrases/mention/): a lung scar is a Lung Opacity
    # ("scar"), interstitial / reticular markings too; a round opacity / density is a
    # Lung Lesion ("nodular opacity / density").
    if name == "Lung Opacity" and (
        any(t.startswith("Cicatrix") and "pleura" not in t for t in lung)
        or "Lung Diseases, Interstitial" in heads
        or any(t.startswith("Markings") and _site(t, OPACITY_MARKINGS) for t in mesh)
    ):
        return 1.0
    if name == "Lung Lesion" and heads & table[name] - {"Nodule"}:
        return 1.0
    if name == "Lung Lesion" and any(
        t.split("/")[0] == "Nodule" and not _calcified(t, mesh) for t in mesh
    ):
        return 1.0
    if name == "Lung Lesion" and any(
        t.split("/")[0] in ("Opacity", "Density") and "round" in _qualifiers(t) for t in lung
    ):
        return 1.0
    return 0.0


def truth_vector(reports: list[dict], name: str, table: dict[str, set[str]],
                 uncertain_positive: bool, strict: bool = False) -> np.ndarray:  # fmt: skip
    """Boolean reference per report: an uncertain-form term counts like the labeler's -1
    (positive only with ``uncertain_positive``), or always present with ``strict``."""
    ref = np.array([reference(r["mesh"], name, table) for r in reports])
    return (ref == 1) | ((ref == -1) & (uncertain_positive or strict))


def score(reports: list[dict], labels: np.ndarray, table: dict[str, set[str]],
          uncertain_positive: bool, strict: bool = False) -> dict[str, dict]:  # fmt: skip
    out = {}
    for name in table:
        column = labels[:, CHEXPERT_CLASSES.index(name)]
        predicted = (column == 1) | ((column == -1) & uncertain_positive)
        truth = truth_vector(reports, name, table, uncertain_positive, strict)
        p, r, f, _ = precision_recall_fscore_support(truth, predicted, average="binary",
                                                     zero_division=0)  # fmt: skip
        # Disagreements where the labeler said "uncertain": MeSH present (a U-Zeros miss)
        # or absent (a U-Ones false alarm) -- convention, not necessarily error.
        hedged = column == -1
        out[name] = {"precision": p, "recall": r, "f1": f, "support": int(truth.sum()),
                     "uncertain_vs_present": int((hedged & truth & ~predicted).sum()),
                     "uncertain_vs_absent": int((hedged & ~truth & predicted).sum())}  # fmt: skip
    return out


def print_table(title: str, rows: dict[str, dict]) -> None:
    print(f"\n{title}")
    print(f"{'class':<20} {'P':>6} {'R':>6} {'F1':>6} {'n+':>5} {'U/pres':>7} {'U/abs':>6}")
    for name, m in rows.items():
        print(f"{name:<20} {m['precision']:6.3f} {m['recall']:6.3f} {m['f1']:6.3f} "
              f"{m['support']:5d} {m['uncertain_vs_present']:7d} {m['uncertain_vs_absent']:6d}")  # fmt: skip


def assertion_cases() -> list[tuple[str, str, str, float]]:
    """(class, kind, sentence, expected) from the reference's mention phrases (see docstring)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.test_text_chexpert_reference import MENTION_CASES

    cases = []
    for name, _, sentence, value in MENTION_CASES:
        cases.append((name, "affirmed", sentence, float(value)))
        there = re.match(r"There (?:is|are) (?:an? )?(.*)$", sentence)
        statement = re.match(r"(.*) (is|are) (enlarged|widened|increased|in place|present)\.$",
                             sentence)  # fmt: skip
        if there:
            negated, uncertain = f"There is no {there.group(1)}", f"There may be {there.group(1)}"
        elif statement:
            subject, verb, state = statement.groups()
            negated, uncertain = f"{subject} {verb} not {state}.", f"{subject} may be {state}."
        else:
            continue
        cases.append((name, "negated", negated, 0.0))
        cases.append((name, "uncertain", uncertain, -1.0))
    return cases


def assertion_accuracy(labeler: Labeler) -> dict[str, dict[str, list[int]]]:
    """class -> kind -> [right, total] over :func:`assertion_cases`."""
    cases = assertion_cases()
    table: dict[str, dict[str, list[int]]] = {}
    results = labeler.label([sentence for _, _, sentence, _ in cases])
    for (name, kind, _, expected), (labels, _) in zip(cases, results, strict=True):
        cell = table.setdefault(name, {}).setdefault(kind, [0, 0])
        cell[0] += int(labels[CHEXPERT_CLASSES.index(name)] == expected)
        cell[1] += 1
    return table


def print_assertions(table: dict[str, dict[str, list[int]]]) -> None:
    kinds = ("affirmed", "negated", "uncertain")
    print("\nassertion accuracy on the reference's mention phrases (right/total)")
    print(f"{'class':<27}" + "".join(f"{k:>12}" for k in kinds))
    totals = {k: [0, 0] for k in kinds}
    for name, row in table.items():
        cells = []
        for kind in kinds:
            right, total = row.get(kind, [0, 0])
            totals[kind][0] += right
            totals[kind][1] += total
            cells.append(f"{right:>5}/{total:<6}" if total else f"{'-':>12}")
        print(f"{name:<27}" + "".join(cells))
    print(f"{'all':<27}" + "".join(f"{r / t:>11.1%} " for r, t in totals.values()))


def _run(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - start


def end_to_end(reports: list[dict], repeats: int = 3) -> dict:
    """Median wall seconds of fresh processes: bare spaCy import, label 2 rows, label all."""
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        small, big = Path(tmp) / "two.csv", Path(tmp) / "all.csv"
        for path, rows in ((small, reports[:2]), (big, reports)):
            with open(path, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["Report"])
                writer.writerows([r["text"]] for r in rows)
        label = [python, "-m", "cxrkit", "label", "--out", str(Path(tmp) / "out.csv")]
        spacy_s = sorted(_run([python, "-c", "import spacy"]) for _ in range(repeats))
        two_s = sorted(_run([*label, str(small)]) for _ in range(repeats))
        all_s = _run([*label, str(big), "--sections", "findings+impression"])
    return {
        "import_spacy_s": spacy_s[repeats // 2],
        "label_2_rows_s": two_s[repeats // 2],
        "label_all_s": all_s,
        "reports_per_s_with_startup": len(reports) / all_s,
    }


def long_reports(labeler: Labeler, reports: list[dict], repeats: int = 3) -> dict:
    """CPU seconds per character for one report of ~10,000 and one of ~100,000 characters (the
    labeler's MAX_CHARS), each the real reports joined: linear time has a ratio near 1."""
    joined = "\n\n".join(r["text"] for r in reports)
    out = {}
    for size in (10_000, 100_000):
        text = joined[:size]
        best = min(_timed(labeler, text) for _ in range(repeats))
        out[f"us_per_char_{size}"] = best / len(text) * 1e6
    out["ratio"] = out["us_per_char_100000"] / out["us_per_char_10000"]
    return out


def _timed(labeler: Labeler, text: str) -> float:
    """CPU seconds to label ``text`` (steadier than wall time on a shared machine)."""
    start = time.process_time()
    list(labeler.label([text]))
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--errors", metavar="CLASS", help="print dev-half errors for one class")
    parser.add_argument("--errors-mode", choices=("U-Ones", "U-Zeros"), default="U-Ones",
                        help="how --errors counts uncertain labels")  # fmt: skip
    parser.add_argument("--no-end-to-end", action="store_true",
                        help="skip the fresh-process start-up and end-to-end timings")  # fmt: skip
    args = parser.parse_args()
    reports = read_reports()
    labeler = Labeler(sections="findings+impression")  # MeSH terms index the whole report
    start = time.perf_counter()
    results = list(labeler.label([r["text"] for r in reports]))
    elapsed = time.perf_counter() - start
    labels = np.array([lab for lab, _ in results], dtype=np.float32)  # (N, 14)
    halves = {
        "dev (even uid)": [i for i, r in enumerate(reports) if r["uid"] % 2 == 0],
        "held-out (odd uid)": [i for i, r in enumerate(reports) if r["uid"] % 2 == 1],
    }
    summary: dict = {"reports": len(reports), "reports_per_s": len(reports) / elapsed}
    if not args.json:
        print(HEADLINE)
    for half, index in halves.items():
        subset = [reports[i] for i in index]
        for mode, unc in (("U-Ones", True), ("U-Zeros", False)):
            rows = score(subset, labels[index], MESH_MAP, unc)
            extra = score(subset, labels[index], EXTRA_MAP, unc)
            macro = float(np.mean([m["f1"] for m in rows.values()]))
            strict_rows = score(subset, labels[index], MESH_MAP, unc, strict=True)
            strict = float(np.mean([m["f1"] for m in strict_rows.values()]))
            summary[f"{half} {mode}"] = {
                "classes": rows,
                "macro_f1": macro,
                "macro_f1_strict": strict,
                "extra": extra,
            }
            if not args.json:
                print_table(f"{half}, {mode}: n={len(subset)}, macro F1 {macro:.3f} "
                            f"(strict MeSH: {strict:.3f})", {**rows, **extra})  # fmt: skip
    if args.errors:
        column = CHEXPERT_CLASSES.index(args.errors)
        table = {**MESH_MAP, **EXTRA_MAP}
        unc = args.errors_mode == "U-Ones"
        for i in halves["dev (even uid)"]:
            (truth,) = truth_vector([reports[i]], args.errors, table, unc)
            predicted = labels[i, column] == 1 or (unc and labels[i, column] == -1)
            if truth != predicted:
                kind = "FN" if truth else "FP"
                print(f"--- {kind} uid {reports[i]['uid']} label {labels[i, column]} "
                      f"mesh {reports[i]['mesh']}\n{reports[i]['text']}")  # fmt: skip
    summary["assertions"] = assertion_accuracy(labeler)
    summary["long_reports"] = long_reports(labeler, reports)
    if not args.no_end_to_end:
        summary["end_to_end"] = end_to_end(reports)
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print_assertions(summary["assertions"])
    print(
        f"\n{len(reports)} reports in {elapsed:.1f}s: {summary['reports_per_s']:.0f} reports/s "
        "(one process, pipeline build excluded)"
    )
    long = summary["long_reports"]
    print(
        f"one long report: {long['us_per_char_10000']:.1f} us/char at 10,000 characters, "
        f"{long['us_per_char_100000']:.1f} at 100,000 (ratio {long['ratio']:.2f}; 1 = linear)"
    )
    if "end_to_end" in summary:
        e = summary["end_to_end"]
        print(f"fresh processes (median of 3): import spacy {e['import_spacy_s']:.2f}s, "
              f"cxrkit label 2 rows {e['label_2_rows_s']:.2f}s "
              f"(start-up - spaCy import = {e['label_2_rows_s'] - e['import_spacy_s']:+.2f}s); "
              f"all {len(reports)} reports {e['label_all_s']:.1f}s = "
              f"{e['reports_per_s_with_startup']:.0f} reports/s including start-up")  # fmt: skip


if __name__ == "__main__":
    main()
