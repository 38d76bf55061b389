"""ONNX export of the image encoder with the CXR preprocessing inside the graph.

Graph contract (also written to ``metadata.json``):

- input ``image``: (batch, 1, S, S) at the model's size S, batch dynamic; either
  ``float32`` in [0, 1] (default; covers 8- and 16-bit sources once divided by their
  maximum) or ``uint8`` in [0, 255]. MONOCHROME2 convention: bone bright.
- inside: scale to [0, 1] (uint8 only), then ``(x - mean) / std`` with the
  checkpoint's constants (0.5, 0.5 -> [-1, 1]).
- outputs ``embedding`` (batch, D), the encoder's pooled feature (eval's for image-only
  objectives; image-text ones use their projection, see the card), and ``tokens``
  (batch, prefix + L, D), the normed token sequence.

Resizing stays outside the graph, on purpose: downscaling a radiograph without
antialiasing aliases badly, and torch's antialiased resize
(``F.interpolate(..., antialias=True)``, op ``_upsample_bilinear2d_aa``) has no
ONNX export in the TorchScript exporter (checked with opsets 17 and 18). Resize the
long side to S and centre-pad, as cxrkit's ``EvalTransform`` does, before calling.

We use the TorchScript exporter (``dynamo=False``): the dynamo exporter needs
``onnxscript``, which cxrkit does not depend on.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from cxrkit.errors import ConfigError
from cxrkit.export.names import ONNX_OPSET
from cxrkit.export.native import max_abs_diff

log = logging.getLogger(__name__)

ONNX_FILE = "image_encoder.onnx"
OPSET = ONNX_OPSET


class PreprocessedEncoder(nn.Module):
    """The image encoder behind its input scaling and normalisation (what the graph holds)."""

    def __init__(self, encoder: nn.Module, mean: float, std: float, input_dtype: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.mean, self.std = float(mean), float(std)
        self.scale = 1.0 / 255.0 if input_dtype == "uint8" else 1.0

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = image.float() * self.scale  # (B, 1, S, S) in [0, 1]
        x = (x - self.mean) / self.std
        tokens = self.encoder.forward_features(x)  # (B, P + L, D)
        return self.encoder.forward_head(tokens, pre_logits=True), tokens  # (B, D), (B, P + L, D)


def export_onnx(
    encoder: nn.Module,
    path: Path,
    image_size: int,
    in_chans: int,
    mean: float,
    std: float,
    input_dtype: Literal["float32", "uint8"] = "float32",
    opset: int = OPSET,
) -> Path:
    """Write the encoder with preprocessing as an ONNX graph with a dynamic batch axis.

    Takes the timm ViT, the output path, the model's input size and channels, the
    normalisation constants and the graph's input dtype. Returns ``path``.
    """
    wrapped = PreprocessedEncoder(encoder, mean, std, input_dtype).eval()
    if input_dtype == "uint8":
        example = torch.zeros(2, in_chans, image_size, image_size, dtype=torch.uint8)
    else:
        example = torch.zeros(2, in_chans, image_size, image_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer warns about Python-side shape asserts in timm; the shapes are fixed here.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        # The TorchScript exporter is chosen on purpose (see module docstring).
        warnings.simplefilter("ignore", category=DeprecationWarning)
        try:
            torch.onnx.export(
                wrapped,
                (example,),
                str(path),
                input_names=["image"],
                output_names=["embedding", "tokens"],
                dynamic_axes={
                    "image": {0: "batch"},
                    "embedding": {0: "batch"},
                    "tokens": {0: "batch"},
                },
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        except RuntimeError as exc:  # OnnxExporterError is one
            if not isinstance(exc, torch.onnx.errors.OnnxExporterError) and "opset" not in str(exc):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"onnx_opset {opset}: the ONNX exporter cannot write this encoder ({first}); "
                f"use --set onnx_opset={ONNX_OPSET} (the default)"
            ) from exc
    return path


def probe_input(images01: torch.Tensor, input_dtype: str) -> torch.Tensor:
    """[0, 1] images in the graph's input dtype (uint8 rounds to 0..255)."""
    if input_dtype == "uint8":
        return (images01 * 255).round().clamp(0, 255).to(torch.uint8)
    return images01.float()


@torch.no_grad()
def verify(
    path: Path,
    encoder: nn.Module,
    images01: torch.Tensor,
    mean: float,
    std: float,
    input_dtype: str,
) -> dict[str, Any]:
    """Run the ONNX graph in ONNX Runtime and compare with the PyTorch encoder.

    Takes the graph, the cxrkit encoder, (B, C, S, S) images in [0, 1] (use a batch
    size other than the export's 2 to exercise the dynamic axis), the normalisation
    constants and the input dtype. Returns ``max_abs_diff`` (embedding and tokens),
    the providers and the batch size checked.
    """
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    graph_input = probe_input(images01, input_dtype)
    embedding, tokens = session.run(["embedding", "tokens"], {"image": graph_input.numpy()})
    reference = PreprocessedEncoder(encoder.eval(), mean, std, input_dtype).eval()
    ref_embedding, ref_tokens = reference(graph_input)
    diff_embedding = max_abs_diff(torch.from_numpy(embedding), ref_embedding)
    diff_tokens = max_abs_diff(torch.from_numpy(tokens), ref_tokens)
    scale = max(float(ref_embedding.abs().max()), float(ref_tokens.abs().max()))
    return {
        "max_abs_diff": max(diff_embedding, diff_tokens),
        "reference_scale": scale,
        "max_abs_diff_embedding": diff_embedding,
        "max_abs_diff_tokens": diff_tokens,
        "batch_checked": int(images01.shape[0]),
        "input_dtype": input_dtype,
        "opset": int(onnx.load(str(path)).opset_import[0].version),
        "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider",
    }
