"""The installed cxrkit version, in a leaf module so that importing it imports nothing else of cxrkit."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cxrkit")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"
