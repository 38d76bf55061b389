"""Peak memory and time of `cxrkit ingest-physio` on a MIMIC-IV-shaped labevents table.

Writes a synthetic ``hosp/labevents.csv.gz`` with MIMIC-IV's exact columns (N rows,
``--items`` itemids of which the 50 most frequent are kept, ~12 tests per blood draw,
some text results with an empty valuenum) and its ``d_labitems.csv.gz``, then runs,
each in its own process (peak RSS from wait4's ``ru_maxrss``):

- ``cxrkit ingest-physio --labs labevents.csv.gz`` (chunked, two passes);
- the naive baseline: ``pandas.read_csv`` of the whole table with its default types
  (what reading it as one long table costs before any panel is built).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/labevents.py [--rows 2000000]``
"""

from __future__ import annotations

import argparse
import csv
import gzip
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HEADER = (
    "labevent_id", "subject_id", "hadm_id", "specimen_id", "itemid", "order_provider_id",
    "charttime", "storetime", "value", "valuenum", "valueuom", "ref_range_lower",
    "ref_range_upper", "flag", "priority", "comments",
)  # fmt: skip


def write_tables(folder: Path, rows: int, items: int, seed: int = 0) -> Path:
    """labevents.csv.gz + d_labitems.csv.gz with ``rows`` rows; returns labevents."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    itemids = 50800 + np.arange(items)
    with gzip.open(folder / "d_labitems.csv.gz", "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["itemid", "label", "fluid", "category"])
        for i in itemids:
            writer.writerow([i, f"Test {i}", "Blood", "Chemistry"])
    per_draw = 12
    draws = rows // per_draw
    popularity = 1.0 / np.arange(1, items + 1)  # a few tests dominate, as in MIMIC-IV
    popularity /= popularity.sum()
    subjects = 10000000 + rng.integers(0, max(draws // 6, 1), draws)
    base = np.datetime64("2150-01-01T00:00") + rng.integers(0, 5 * 365 * 24 * 60, draws).astype(
        "timedelta64[m]"
    )
    path = folder / "labevents.csv.gz"
    with gzip.open(path, "wt", newline="", compresslevel=1) as handle:
        handle.write(",".join(HEADER) + "\n")
        step = 50_000
        for start in range(0, draws, step):
            n = min(step, draws - start)
            draw = np.repeat(np.arange(start, start + n), per_draw)
            item = rng.choice(itemids, size=draw.size, p=popularity)
            value = np.round(rng.lognormal(1.0, 0.5, draw.size), 2)
            text = rng.random(draw.size) < 0.05  # "<0.01"-style results: no valuenum
            times = pd.Series(base[draw]).dt.strftime("%Y-%m-%d %H:%M:%S").to_numpy()
            frame = pd.DataFrame(
                {
                    "labevent_id": np.arange(draw.size) + start * per_draw,
                    "subject_id": subjects[draw],
                    "hadm_id": 20000000 + draw,
                    "specimen_id": 70000000 + draw,
                    "itemid": item,
                    "order_provider_id": "",
                    "charttime": times,
                    "storetime": times,
                    "value": np.where(text, "<0.01", value.astype(str)),
                    "valuenum": np.where(text, "", value.astype(str)),
                    "valueuom": np.where(text, "", "mg/dL"),
                    "ref_range_lower": "",
                    "ref_range_upper": "",
                    "flag": "",
                    "priority": "ROUTINE",
                    "comments": "",
                }
            )
            frame.to_csv(handle, header=False, index=False)
    return path


def measure(command: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall s, peak RSS MiB, exit code) of a command run as a child process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    return time.perf_counter() - start, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--items", type=int, default=300)
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        labevents = write_tables(tmp / "hosp", args.rows, args.items)
        size = labevents.stat().st_size / 2**20
        print(
            f"wrote {args.rows:,} rows ({size:.0f} MiB gz) in {time.perf_counter() - start:.0f} s"
        )
        salt = tmp / "salt.hex"
        salt.write_text("00" * 32)
        salt.chmod(0o600)
        ours = [sys.executable, "-m", "cxrkit", "ingest-physio", "--labs", str(labevents),
                "--out", str(tmp / "physio"), "--salt-file", str(salt), "-q"]  # fmt: skip
        naive = [sys.executable, "-c", f"import pandas as pd; pd.read_csv({str(labevents)!r})"]
        idle = [sys.executable, "-c", "import pandas, pyarrow, cxrkit.stages.physio"]
        results = {name: measure(cmd, env) for name, cmd in
                   (("imports only", idle), ("naive read_csv", naive), ("ingest-physio", ours))}  # fmt: skip
        for name, (wall, rss, code) in results.items():
            print(f"{name:16s} wall {wall:7.1f} s  peak RSS {rss:7.0f} MiB  exit {code}")
        ratio = results["ingest-physio"][1] / results["naive read_csv"][1]
        print(f"peak RSS ingest-physio / naive read_csv: {ratio:.2f}")
        stats = pd.read_json(tmp / "physio" / "manifest.json", typ="series")["stats"]
        print({k: v for k, v in stats.items() if k.startswith("lab")})


if __name__ == "__main__":
    main()
