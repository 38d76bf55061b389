"""`cxrkit models`: list the named model configs (image tower + text tower + embedding width)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from cxrkit.cli.common import app, err, guarded, out


@app.command()
@guarded
def models(
    name: Annotated[
        str | None,
        typer.Argument(help="Show one config in full (a name from the list, or a .json path)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the configs, every field resolved, as JSON.")
    ] = False,
) -> None:
    """List the named model configs: image tower, text tower, joint embedding width."""
    from cxrkit.config import to_dict
    from cxrkit.models.registry import (
        describe_image,
        describe_text,
        get_model_config,
        list_model_configs,
    )

    configs = (
        [get_model_config(name)] if name else [get_model_config(n) for n in list_model_configs()]
    )
    if as_json or name:
        payload = [to_dict(cfg) for cfg in configs]
        out.print_json(json.dumps(payload[0] if name else payload))
        return
    table = Table(title="model configs (cxrkit/models/configs/*.json)", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("image tower", overflow="fold")
    table.add_column("text tower", overflow="fold")
    table.add_column("embed dim", justify="right")
    for cfg in configs:
        table.add_row(
            cfg.name, describe_image(cfg.image), describe_text(cfg.text), str(cfg.embed_dim)
        )
    out.print(table)
    err.print("`cxrkit models NAME` shows one config in full, with its description and sources.")
