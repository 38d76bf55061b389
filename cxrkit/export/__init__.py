"""Turn a checkpoint artifact into files other tools load: safetensors, timm, open_clip, ONNX.

Each format lives in its own module with a writer and a loader, so the export
stage (:mod:`cxrkit.stages.export`) can write a format and then prove it by
loading it back and comparing features with the cxrkit model:

- :mod:`cxrkit.export.native`: one directory per encoder (``model.safetensors`` +
  ``config.json``); the image encoder's ``config.json`` is also a timm local-dir config.
- :mod:`cxrkit.export.timm_format`: how timm loads the image encoder, and the check.
- :mod:`cxrkit.export.open_clip_format`: image-text models as an open_clip local dir.
- :mod:`cxrkit.export.onnx_format`: the image encoder with CXR normalisation in the graph.
- :mod:`cxrkit.export.card`: the model card (README.md) and ``metadata.json``;
  :mod:`cxrkit.export.card_text` keeps local paths out and summarises eval metrics.
- :mod:`cxrkit.export.preprocess`: the exact input transform, shipped in every
  export as ``preprocess.py`` (numpy, Pillow, torch only).
- :mod:`cxrkit.export.formats`: the registry ``FORMATS`` (name -> writer that loads
  back and checks, skip rule, usage snippet); a new format is one entry there, and
  its name in ``cxrkit.export.names.FORMAT_NAMES`` (torch-free; a test holds the two equal).

Nothing here unpickles: weights are safetensors, metadata is JSON.
"""

from __future__ import annotations
