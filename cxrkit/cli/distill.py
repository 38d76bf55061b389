"""`cxrkit distill`: PaCX-MAE distillation is planned, not built; the command says so."""

from __future__ import annotations

from cxrkit.cli.common import app, guarded, not_built


@app.command("distill", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@guarded
def distill_command() -> None:
    """(not built yet) PaCX-MAE: distil ECG and lab-panel embeddings into the image encoder."""
    not_built(
        "distill",
        "PaCX-MAE distillation (CXR-ECG-lab pairing by time window) is planned "
        "for the next release; pretrain an image encoder with `cxrkit pretrain` meanwhile",
    )
