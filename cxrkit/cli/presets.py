"""`cxrkit presets`: list the shipped stage presets."""

from __future__ import annotations

from rich.table import Table

from cxrkit.cli.common import app, out


@app.command()
def presets() -> None:
    """List the shipped stage presets."""
    from cxrkit.config import load_preset, preset_names

    table = Table(title="presets (stages/*.toml)", title_justify="left")
    for col in ("name", "stage", "description"):
        table.add_column(col)
    for name in preset_names():
        data = load_preset(name)
        table.add_row(name, str(data.get("stage", "")), str(data.get("description", "")))
    out.print(table)
