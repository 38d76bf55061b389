"""`cxrkit annotate`: placeholder until the stage lands; says so and exits non-zero."""

from __future__ import annotations

from cxrkit.cli.common import app, guarded, not_built


@app.command(
    "annotate", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
@guarded
def annotate_command() -> None:
    """(not built yet) see `cxrkit annotate --help` in a later version."""
    not_built("annotate", "this stage is under construction")
