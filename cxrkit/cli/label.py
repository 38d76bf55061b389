"""`cxrkit label`: placeholder until the labeler lands."""

from __future__ import annotations

from cxrkit.cli.common import app, guarded, not_built


@app.command("label", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@guarded
def label_command() -> None:
    """(not built yet) label a CSV of report texts with the 14 CheXpert observations."""
    not_built("label", "under construction")
