"""`cxrkit models`: list the named model configs (image tower + text tower + embedding width)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cxrkit.cli.common import app, err, guarded, out, print_json
from cxrkit.errors import ConfigError

if TYPE_CHECKING:
    from cxrkit.models.registry import ModelConfig


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
    build: Annotated[
        bool,
        typer.Option(
            "--build",
            help="Build NAME's towers (offline) and report parameters and widths; "
            "checks that local model paths and vocabularies exist.",
        ),
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

    if build:
        if not name:
            raise ConfigError("--build needs a model config NAME")
        _report_build(get_model_config(name), as_json)
        return
    configs = (
        [get_model_config(name)] if name else [get_model_config(n) for n in list_model_configs()]
    )
    if as_json or name:
        payload = [to_dict(cfg) for cfg in configs]
        print_json(payload[0] if name else payload)
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


def _report_build(cfg: ModelConfig, as_json: bool) -> None:
    """Build both towers and print their sizes (exit 2/3 through the raised errors)."""
    from cxrkit.models.registry import build_towers

    image, text = build_towers(cfg)
    result = {
        "name": cfg.name,
        "image_parameters": sum(p.numel() for p in image.parameters()),
        "image_width": int(image.embed_dim),
        "text_parameters": sum(p.numel() for p in text.parameters()),
        "text_width": text.width,
        "text_vocab_size": text.tokenizer().vocab_size,
        "embed_dim": cfg.embed_dim,
    }
    if as_json:
        print_json(result)
        return
    table = Table(title=f"model config {cfg.name} (built)", title_justify="left", show_header=False)
    for key, value in result.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    out.print(table)
