"""benchmarks/decode_bound.py runs end to end on the real RG1 files, so it cannot rot.

Slow (6 s on an idle 2-core machine, 90 s on a loaded one: JPEG 2000 full decodes per
encoding and a dozen small ingests). No timing is asserted: the figures are the script's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_tiny_run_prints_one_row_per_encoding_against_ingests_decoder(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    args = ["--copies", "2", "--repeat", "1", "--image-size", "64"]
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "decode_bound.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=True,
    )
    rows = {}
    for line in run.stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 9 and cells[0] != "encoding":
            rows[cells[0]] = cells
    assert set(rows) == {"uncompressed", "J2K lossless", "J2K lossy", "JPEG baseline"}
    for name, (_, default, bound, sha, reduced, off, over_off, on, over_on) in rows.items():
        assert all(float(v) >= 0 for v in (default, bound, sha)), name
        # ingest figures are marginal (2 files - 1 file): tiny at 64 px, may dip below 0
        assert all(abs(float(v)) < 5000 for v in (off, on)), name
        assert over_off.endswith("%") and over_on.endswith("%")
        # a reduced decode exists for JPEG 2000 and JPEG baseline (64 px is far below 1955)
        assert (reduced == "-") == (name == "uncompressed"), name
    assert not any(tmp_path.glob("cxrkit-decode-bound-*"))  # its temp dir is removed
