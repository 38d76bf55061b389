"""Export format names and the ONNX opset, without importing torch.

The export stage resolves its config and decides a no-op re-run from these
alone; the format modules are imported only when there is something to export.
:data:`FORMAT_NAMES` is the key order of :data:`cxrkit.export.formats.FORMATS`
(a test holds the two equal); :mod:`cxrkit.export.onnx_format` takes its
default opset from :data:`ONNX_OPSET`.
"""

from __future__ import annotations

FORMAT_NAMES = ("safetensors", "timm", "open_clip", "onnx")
ONNX_OPSET = 17
