"""Label a CSV of report texts, streaming, in the CheXpert labeler's output format.

Output: a ``Reports`` column followed by the 14 observations in the CheXpert
labeler's column order, cells "1.0" / "0.0" / "-1.0" or blank (not mentioned),
so it is a drop-in for that tool's ``labeled_reports.csv`` (on that tool's
``sample_reports.csv`` the two files are byte-identical). Rows are read one
at a time (``csv`` module) and labelled in ``nlp.pipe`` batches; an empty or
unreadable row, or one without a letter, gets blank labels; other text without a
mention (non-English, garbage) is No Finding = 1, as in the CheXpert labeler. Never
an exception.
"""

from __future__ import annotations

import csv
import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from cxrkit.errors import InputError
from cxrkit.text.labeler import CHEXPERT_CLASSES, Labeler, format_label

log = logging.getLogger(__name__)

# The CheXpert labeler writes Lung Lesion before Lung Opacity (its CATEGORIES order).
CHEXPERT_CSV_COLUMNS = [
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Lung Opacity",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices",
]  # fmt: skip
_FIELD_LIMIT = 1 << 24  # 16 MB: a longer "report" is garbage, but must not stop the run


def _rows(handle, text_column: str | None, path: Path) -> Iterator[str]:
    """Report texts, one per data row; a row the csv module cannot parse yields ""."""
    reader = csv.reader(handle)
    index = 0
    if text_column is not None:
        header = next(reader, None)
        if header is None:
            return
        names = [h.strip() for h in header]
        if text_column not in names:
            raise InputError(f"{path}: no column {text_column!r} (columns: {', '.join(names)}); "
                             "pass --text-column NAME, or --no-header for a one-column file")  # fmt: skip
        index = names.index(text_column)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            log.warning("%s line %d: unparseable row (%s); labels left blank",
                        path, reader.line_num, exc)  # fmt: skip
            row = []
        yield row[index] if index < len(row) else ""


def label_csv(path: str | Path, out: str | Path, text_column: str | None = "Report",
              labeler: Labeler | None = None, batch_size: int = 256) -> dict:  # fmt: skip
    """Label every row of ``path`` and write ``out`` (atomically). Returns summary stats.

    ``text_column=None`` reads a header-less file whose first column is the
    report (the CheXpert labeler's input). Raises InputError when the input
    cannot be opened or lacks the column.
    """
    path, out = Path(path), Path(out)
    csv.field_size_limit(_FIELD_LIMIT)
    labeler = labeler or Labeler()
    order = [CHEXPERT_CLASSES.index(c) for c in CHEXPERT_CSV_COLUMNS]
    positives: Counter = Counter()
    rows = 0
    start = time.perf_counter()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        source = open(path, newline="", encoding="utf-8", errors="replace")  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"{path}: cannot open the reports CSV ({exc})") from exc
    try:
        with source, open(tmp, "w", newline="", encoding="utf-8") as sink:
            # "\n" rows, as the CheXpert labeler's pandas writer makes them: byte-comparable.
            writer = csv.writer(sink, lineterminator="\n")
            writer.writerow(["Reports", *CHEXPERT_CSV_COLUMNS])
            texts = _rows(source, text_column, path)
            while batch := list(itertools.islice(texts, batch_size)):
                for text, (labels, _) in zip(batch, labeler.label(batch, batch_size), strict=True):
                    writer.writerow([text, *(format_label(labels[i]) for i in order)])
                    positives.update(c for c, i in zip(CHEXPERT_CSV_COLUMNS, order, strict=True)
                                     if labels[i] == 1)  # fmt: skip
                    rows += 1
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    elapsed = time.perf_counter() - start
    return {
        "rows": rows,
        "positives": dict(positives),
        "reports_per_s": rows / elapsed if elapsed else 0.0,
    }
