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


def load(path, device="cpu", verify=True):  # noqa: ANN001,ANN201 - see cxrkit.models.loading.load
    """Load a checkpoint or export artifact directory: ``cxrkit.load("runs/mae")``.

    Every file hash is verified first (``verify=False`` skips it). See
    :func:`cxrkit.models.loading.load` for what is returned and raised.
    """
    from cxrkit.models.loading import load as _load

    return _load(path, device=device, verify=verify)


__all__ += ["load"]
