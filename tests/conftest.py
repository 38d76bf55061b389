"""Shared fixtures: small REAL artifacts built once per test session.

`demo_inputs` lays out the demo's real images and reports; `demo_dataset` ingests
them (64-px long side, fast); both are reused by the stage tests downstream.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")
if "CXRKIT_CACHE" not in os.environ:  # keep the feature cache out of the user's home
    import tempfile

    os.environ["CXRKIT_CACHE"] = tempfile.mkdtemp(prefix="cxrkit-test-cache-")


@pytest.fixture(autouse=True)
def _restore_cxrkit_logger():
    """In-process CLI calls configure the `cxrkit` logger; give each test a clean one."""
    import logging

    logger = logging.getLogger("cxrkit")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


@pytest.fixture(scope="session")
def salt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("salt") / "salt.hex"
    path.write_text("00" * 32)
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
