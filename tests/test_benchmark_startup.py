"""benchmarks/startup.py runs (one repeat, a few commands) so it cannot rot.

Its figures are timings and are never asserted; what is checked is that every
requested command ran, the baselines were measured in the same run, and the
heavy-import column reads ``sys.modules``.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "startup.py"


def test_one_repeat_times_the_commands_against_both_baselines(capsys):
    spec = importlib.util.spec_from_file_location("bench_startup", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(["--repeat", "1", "--only", "models,verify"])
    assert list(rows) == ["python -c pass", "import spacy", "verify", "models"]
    assert all(math.isfinite(r["wall_s"]) and r["cpu_s"] > 0 for r in rows.values())
    assert rows["python -c pass"]["heavy"] == [] and "spacy" in rows["import spacy"]["heavy"]
    assert rows["models"]["heavy"] == [] and rows["verify"]["heavy"] == []
    assert "import spacy" in capsys.readouterr().out
