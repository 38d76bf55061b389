"""The ``cxrkit`` command line: a thin typer layer over the stage functions.

One module per stage registers its command on the shared app; each command
resolves a config, calls ``cxrkit.stages.<name>.run`` and renders the result.
"""

from __future__ import annotations

from cxrkit.cli import annotate as _annotate  # noqa: E402,F401
from cxrkit.cli import demo as _demo  # noqa: E402,F401
from cxrkit.cli import distill as _distill  # noqa: E402,F401
from cxrkit.cli import evaluate as _evaluate  # noqa: E402,F401
from cxrkit.cli import export as _export  # noqa: E402,F401

# Importing the command modules registers their commands on `app` (order = help order).
from cxrkit.cli import ingest as _ingest  # noqa: E402,F401
from cxrkit.cli import inspect as _inspect  # noqa: E402,F401
from cxrkit.cli import label as _label  # noqa: E402,F401
from cxrkit.cli import models as _models  # noqa: E402,F401
from cxrkit.cli import pretrain as _pretrain  # noqa: E402,F401
from cxrkit.cli.common import app


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
