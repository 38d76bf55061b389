"""Helpers for the hostile-input tests: tiny real inputs, CLI runs in and out of process."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from cxrkit.io import bundled

ROOT = Path(__file__).resolve().parent.parent


def tiny_mapping(folder: Path, count: int = 3) -> Path:
    """Copy ``count`` real pediatric JPEGs into ``folder`` and write a mapping CSV for them."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, source in enumerate(bundled.pediatric_jpegs()[:count]):
        target = folder / f"img{index}.jpeg"
        shutil.copyfile(source, target)
        rows.append({"image_path": str(target), "report_text": f"No acute disease. Case {index}."})
    mapping = folder / "mapping.csv"
    with open(mapping, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image_path", "report_text"])
        writer.writeheader()
        writer.writerows(rows)
    return mapping


def cli(*args: str, env: dict | None = None):
    """Run the CLI in process; returns typer's Result (exit_code, output)."""
    from cxrkit.cli import app

    saved = dict(os.environ)
    try:
        os.environ.update(env or {})
        return CliRunner().invoke(app, [str(a) for a in args])
    finally:
        os.environ.clear()
        os.environ.update(saved)


def cli_process(*args: str, env: dict | None = None) -> subprocess.Popen:
    """Start the CLI as a real process (stdout/stderr captured)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "cxrkit", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        cwd=ROOT,
    )


def ingest_args(mapping: Path, out: Path, salt: Path) -> list[str]:
    return ["ingest", "--mapping", mapping, "--out", out, "--salt-file", salt, "--image-size", 32]
