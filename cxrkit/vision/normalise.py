"""The one definition of how cxrkit normalises chest X-ray pixels for a model.

Stored grey levels scaled to [0, 1] become ``(x - CXR_MEAN) / CXR_STD``, i.e. [-1, 1].
The loader's transforms, the reconstruction previews, evaluation encoders, the
checkpoint's preprocessing record and every export read these two numbers.
"""

from __future__ import annotations

CXR_MEAN = 0.5
"""Mean used to normalise images scaled to [0, 1]; export and eval reuse it."""

CXR_STD = 0.5
"""Std used to normalise images scaled to [0, 1]; (x - 0.5) / 0.5 maps [0, 1] to [-1, 1]."""
