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


def test_ingest_figures_read_only_files_made_before_the_hash_cache_warm_up(tmp_path):
    """The ingest figure subtracts a one-file run from the N-file run. The script waits 2 s after
    making its inputs so that the warm-up leaves every digest cached; a one-file copy made
    later, inside the timed function, is too fresh to be remembered, so the subtracted run paid a
    hash that the N-file run did not, and the marginal figure read low."""
    from cxrkit.io.bundled import rg1_dicoms

    bench = _load_script()
    files = bench.make_copies(rg1_dicoms()["RG1_J2KI"], tmp_path / "in" / "lossy", 2)
    made = {p: p.stat().st_ctime_ns for p in (tmp_path / "in").rglob("*") if p.is_file()}
    salt = tmp_path / "salt.hex"
    bench.ingest_cpu_s(files[0].parent, tmp_path / "out", 64, "off", salt)
    after = {p: p.stat().st_ctime_ns for p in (tmp_path / "in").rglob("*") if p.is_file()}
    assert after == made  # no input was made (or rewritten) after the inputs were made
    assert len(made) == 3  # the two copies and the one-file run's copy of the first


def test_marginal_ingest_figure_subtracts_the_best_one_file_run_from_the_best_n_file_run():
    """Best of the rounds for each run, then the difference: the best of the differences
    would pick the round whose one-file run was slowed down (a busy spell during the
    worker's start-up) and read the marginal cost low, even below zero."""
    bench = _load_script()
    rounds = [(0.50, 0.62), (0.60, 0.62)]  # (one-file s, 4-file s) per round
    assert bench.marginal_ms(rounds, files=4) == pytest.approx(1e3 * (0.62 - 0.50) / 3)  # 40 ms


def _load_script():
    import importlib.util

    path = ROOT / "benchmarks" / "decode_bound.py"
    spec = importlib.util.spec_from_file_location("bench_decode_bound", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench
