"""`cxrkit ingest`: placeholder replaced by the lead shortly."""

from __future__ import annotations

from cxrkit.cli.common import app, guarded, not_built


@app.command("ingest", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@guarded
def ingest_command() -> None:
    """(not built yet)"""
    not_built("ingest", "under construction")
