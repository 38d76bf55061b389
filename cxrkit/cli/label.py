"""`cxrkit label`: a CSV of report texts -> the 14 CheXpert-style labels (no images needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cxrkit.cli.common import app, err, guarded, out


@app.command("label")
@guarded
def label_command(
    reports: Annotated[
        Path, typer.Argument(help="CSV of report texts (one report per row); - reads stdin.")
    ],
    out_csv: Annotated[
        Path, typer.Option("--out", "-o", help="Labelled CSV to write; - writes stdout.")
    ],
    text_column: Annotated[
        str, typer.Option("--text-column", help="Header name of the report column.")
    ] = "Report",
    no_header: Annotated[
        bool, typer.Option("--no-header", help="No header row: the first column is the report.")
    ] = False,
    scispacy_model: Annotated[
        str | None,
        typer.Option(
            "--scispacy-model", help="scispaCy model directory or package; merges its NER."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Reports per nlp.pipe batch.", min=1)] = 256,
    sections: Annotated[
        str,
        typer.Option(
            "--sections",
            help="Sections that make labels: 'impression' (CheXpert's: the IMPRESSION of a "
            "report that has one, else its findings / header-less text) or "
            "'findings+impression' (what `cxrkit annotate` uses). Both read an ADDENDUM; "
            "a MIMIC WET READ only when there is no final report.",
        ),
    ] = "impression",
) -> None:
    """Label report texts with the 14 CheXpert observations (1.0 / 0.0 / -1.0 / blank).

    Writes the CheXpert labeler's format (Reports + 14 class columns) so it is a
    drop-in; empty or garbage rows get blank labels. Prints the output path (or,
    with ``--out -``, the labelled CSV itself). ``cxrkit label - --out - < in.csv > out.csv``
    works in a pipe.
    """
    import sys
    import tempfile

    if not scispacy_model:  # the model-free pipeline never uses thinc's torch layers
        from cxrkit.text.lean import import_spacy_without_torch

        import_spacy_without_torch()  # ~3 s less start-up (see cxrkit/text/lean.py)
    from cxrkit.artifacts.files import prepare_output_file
    from cxrkit.text.csvlabel import label_csv
    from cxrkit.text.labeler import Labeler

    to_stdout = str(out_csv) == "-"
    if not to_stdout:
        prepare_output_file(out_csv)  # a folder, a file as parent, no permission: exit 3 now
    labeler = Labeler(scispacy_model, sections=sections)
    with tempfile.TemporaryDirectory(prefix="cxrkit-label-") as scratch:
        source = reports
        if str(reports) == "-":
            source = Path(scratch) / "stdin.csv"
            source.write_bytes(sys.stdin.buffer.read())
        target = Path(scratch) / "labelled.csv" if to_stdout else out_csv
        column = None if no_header else text_column
        stats = label_csv(source, target, column, labeler, batch_size)
        if to_stdout:
            sys.stdout.write(target.read_text(encoding="utf-8"))
            sys.stdout.flush()
    positives = ", ".join(f"{k} {v}" for k, v in sorted(stats["positives"].items())) or "none"
    err.print(f"labelled {stats['rows']} reports ({stats['reports_per_s']:.0f}/s); "
              f"positives: {positives}")  # fmt: skip
    if not to_stdout:
        out.print(str(out_csv))
