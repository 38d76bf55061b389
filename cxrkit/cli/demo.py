"""`cxrkit demo`: placeholder replaced by the lead shortly."""

from __future__ import annotations

from cxrkit.cli.common import app, guarded, not_built


@app.command("demo")
@guarded
def demo_command() -> None:
    """(not built yet)"""
    not_built("demo", "under construction")
