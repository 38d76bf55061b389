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
    "physio",
    "show",
    "verify",
    "presets",
    "models",
    "label",
    "pretrain",
)
for _command in COMMANDS:
    importlib.import_module(f"cxrkit.cli.{_command}")


_GLOBAL_FLAGS = frozenset({"-q", "--quiet", "--verbose"})


def hoist_global_flags(args: list[str]) -> list[str]:
    """Move ``-q/--quiet`` and ``-v/--verbose`` given after the subcommand to the front,
    so ``cxrkit eval ... -q`` works like ``cxrkit -q eval ...`` (typer reads them only
    before the subcommand). Nothing after a literal ``--`` moves."""
    cut = args.index("--") if "--" in args else len(args)
    moved = [a for a in args[:cut] if a in _GLOBAL_FLAGS or _is_verbose(a)]
    kept = [a for a in args[:cut] if not (a in _GLOBAL_FLAGS or _is_verbose(a))]
    return moved + kept + args[cut:]


def _is_verbose(arg: str) -> bool:
    return len(arg) >= 2 and arg[0] == "-" and set(arg[1:]) == {"v"}


def main() -> None:
    """Console-script entry point."""
    import sys

    app(args=hoist_global_flags(sys.argv[1:]))


__all__ = ["COMMANDS", "app", "main"]
