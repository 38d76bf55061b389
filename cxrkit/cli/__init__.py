"""The ``cxrkit`` command line: a thin typer layer over the stage functions.

One module per stage registers its command on the shared app; each command
resolves a config, calls ``cxrkit.stages.<name>.run`` and renders the result.
"""

from __future__ import annotations

import importlib

from cxrkit.cli.common import app

# One module per command (cli/X.py for `cxrkit X`); importing one registers its
# commands on `app`, so this order is the order of `cxrkit --help`.
COMMANDS = (
    "annotate",
    "demo",
    "distill",
    "eval",
    "export",
    "ingest",
    "show",
    "verify",
    "presets",
    "models",
    "label",
    "pretrain",
)
for _command in COMMANDS:
    importlib.import_module(f"cxrkit.cli.{_command}")


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["COMMANDS", "app", "main"]
