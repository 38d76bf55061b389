"""cxrkit: pretrain and evaluate chest X-ray vision-language foundation models.

Each pipeline stage is a plain function over versioned on-disk artifacts
(``cxrkit.stages.<name>.run``); the ``cxrkit`` command line is a thin layer over
them.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cxrkit")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
