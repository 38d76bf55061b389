"""`cxrkit eval`: placeholder until the stage lands; says so and exits non-zero."""

from __future__ import annotations

from cxrkit.cli.common import app, guarded, not_built


@app.command("eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@guarded
def evaluate_command() -> None:
    """(not built yet) see `cxrkit eval --help` in a later version."""
    not_built("eval", "this stage is under construction")
