"""Shared fixtures: small REAL artifacts built once per test session.

`demo_inputs` lays out the demo's real images and reports; `demo_dataset` ingests
them (64-px long side, fast); both are reused by the stage tests downstream.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")
# What the tests read from the CLI is plain text at rich's and typer's defaults, wherever
# they run: CI services set variables that force a terminal (ANSI codes split "--uint16"
# into styled pieces and colour `--json` output) or fix the help width. Popped before
# rich or typer is imported (typer reads them at import) and so for every subprocess.
for _name in (
    "FORCE_COLOR",
    "PY_COLORS",
    "GITHUB_ACTIONS",
    "TTY_COMPATIBLE",
    "TTY_INTERACTIVE",
    "TERMINAL_WIDTH",
):
    os.environ.pop(_name, None)
if "CXRKIT_CACHE" not in os.environ:  # keep the feature cache out of the user's home
    import tempfile

    os.environ["CXRKIT_CACHE"] = tempfile.mkdtemp(prefix="cxrkit-test-cache-")


_PRISTINE_LOGGER = (
    list(logging.getLogger("cxrkit").handlers),
    logging.getLogger("cxrkit").level,
    logging.getLogger("cxrkit").propagate,
)


def _reset_cxrkit_cli_state() -> None:
    logger = logging.getLogger("cxrkit")
    logger.handlers[:] = _PRISTINE_LOGGER[0]
    logger.setLevel(_PRISTINE_LOGGER[1])
    logger.propagate = _PRISTINE_LOGGER[2]
    common = sys.modules.get("cxrkit.cli.common")
    if common is not None:  # `-q` of an in-process CLI call stays set until the next call
        common._state["quiet"] = False


@pytest.fixture(autouse=True)
def _restore_cxrkit_cli_state():
    """In-process CLI calls configure the `cxrkit` logger and remember `-q`; every test
    starts and ends with both as they were at start-up (module- or session-scoped fixtures
    that call the CLI run outside a test, so restoring "what it was before the test" is not
    enough). A table or summary printed by a direct call after a `-q` run was silenced."""
    _reset_cxrkit_cli_state()
    yield
    _reset_cxrkit_cli_state()


@pytest.fixture(scope="session")
def salt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("salt") / "salt.hex"
    path.write_text("00" * 32)
    path.chmod(0o600)  # a salt readable by others is warned about
    return path


@pytest.fixture(scope="session")
def demo_inputs(tmp_path_factory):
    """Mapping CSV of the demo's real inputs (pediatric JPEGs, adult DICOM, bad files)."""
    from cxrkit.stages.demo import build_demo_inputs

    return build_demo_inputs(tmp_path_factory.mktemp("demo-inputs"))


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory, demo_inputs, salt_file):
    """A dataset artifact ingested from the real demo inputs at 64 px (path)."""
    from cxrkit.stages.ingest import IngestConfig, run

    out = tmp_path_factory.mktemp("artifacts") / "dataset"
    cfg = IngestConfig(
        mapping=str(demo_inputs), out=str(out), image_size=64, salt_file=str(salt_file)
    )
    run(cfg)
    return out


@pytest.fixture
def mount_tmpfs(tmp_path):
    """Mount a small tmpfs (skips where mounting is not allowed); unmounted afterwards."""
    mounted = []

    def mount(size: str, read_only: bool = False) -> Path:
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)
