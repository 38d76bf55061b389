"""A no-op re-run of `cxrkit ingest-physio` imports no torch, pandas or image decoders.

The artifact's id covers the ECG files, the ECG map and the lab table by their bytes,
so the same command finds OUT up to date before it reads any table (pandas) or any
record; only a changed input takes the full path, which reads the map as before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from physio_support import serum_long_table, write_wfdb
from typer.testing import CliRunner

from cxrkit.artifacts import open_artifact
from cxrkit.cli import app
from cxrkit.io.deid import Pseudonymizer
from cxrkit.stages import physio

SALT = bytes(range(32))
HEAVY = ("torch", "pandas", "pydicom", "scipy", "timm", "wfdb")
PROBE = """
import json, sys
from typer.testing import CliRunner
from cxrkit.cli import app
result = CliRunner().invoke(app, json.loads(sys.argv[1]))
heavy = [m for m in json.loads(sys.argv[2]) if m in sys.modules]
print(json.dumps({"exit_code": result.exit_code, "heavy": heavy, "output": result.output}))
"""


def _probe(args: list[str]) -> dict:
    """``cxrkit ARGS`` in a fresh interpreter: exit code, heavy modules imported, output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)],
                          capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_noop_rerun_imports_no_torch_pandas_or_decoders_and_a_changed_map_reruns(tmp_path):
    salt = tmp_path / "salt.hex"
    salt.write_text(SALT.hex())
    salt.chmod(0o600)
    record = write_wfdb(tmp_path / "ecg", "rec1", patient="p_header")
    ecg_map = tmp_path / "ecg_map.csv"
    ecg_map.write_text(f"path,patient_id\n{record}.hea,p_mapped\n")
    labs_csv = tmp_path / "labs.csv"
    serum_long_table(["p_mapped", "p2"]).to_csv(labs_csv, index=False)
    out = tmp_path / "physio"
    args = ["ingest-physio", "--ecg", str(tmp_path / "ecg"), "--ecg-map", str(ecg_map),
            "--labs", str(labs_csv), "--salt-file", str(salt), "--out", str(out)]  # fmt: skip
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    manifest = (out / "manifest.json").read_bytes()

    again = _probe(args)
    assert again["exit_code"] == 0, again["output"]
    assert again["heavy"] == [], f"a no-op ingest-physio imported {again['heavy']}"
    assert "up to date" in again["output"]
    assert (out / "manifest.json").read_bytes() == manifest

    # the map names another patient: its bytes change the id, the full path reads it
    ecg_map.write_text(f"path,patient_id\n{record}.hea,p_other\n")
    refused = _probe(args)
    assert refused["exit_code"] == 4 and "different physio artifact" in refused["output"]
    remade = _probe([*args, "--force"])
    assert remade["exit_code"] == 0, remade["output"]
    assert "pandas" in remade["heavy"]
    _, rows = physio.load_ecgs(open_artifact(out))
    assert [r["patient_id"] for r in rows] == [Pseudonymizer(SALT).pseudonym("patient", "p_other")]
