"""Start-up of cxrkit commands: median wall and CPU time of a fresh process per command.

Baselines measured in the same run: ``python -c pass`` (the interpreter) and
``python -c "import spacy"`` (the floor of anything that labels text). The
commands: the light ones (``--help``, ``show``, ``verify``, ``models``), ``label``
on a 3-report CSV, and the no-op re-run of each stage (the artifact exists and
nothing changed: the stage says so and exits) on a tiny real pipeline built
first in a temp dir (the demo's real images ingested at 64 px, annotated, a
2-step demo-mae pretrain, eval, export; the demo's synthetic ECGs and labs
ingested and a 2-step demo-pacx distill from that checkpoint). Each command runs ``--repeat`` times
(median reported, after one untimed warm-up run that leaves byte code and the
hash cache as an installed package has them) with ``OMP_NUM_THREADS=1``; CPU time is the child's user +
system time (``os.wait4``), steadier than wall time on a shared machine. The
commands use a private hash cache in the temp dir (``CXRKIT_CACHE``), warmed by
the build, so no other process's writes to the shared one are waited for. The
last column says which heavy libraries the command imported (``sys.modules`` at
exit of one more run), so a figure can be read against what was loaded.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/startup.py [--repeat 5] [--only annotate,label]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from scale import measure  # noqa: E402  (a child's wall, CPU and peak RSS from wait4)

HEAVY = ("torch", "spacy", "thinc", "scispacy", "timm", "open_clip", "transformers",
         "accelerate", "scipy", "sklearn")  # fmt: skip
REPORTS = [
    "FINDINGS: Heart size is normal. No pleural effusion or pneumothorax.",
    "IMPRESSION: Small left pleural effusion. Possible right lower lobe pneumonia.",
    "IMPRESSION: No acute cardiopulmonary process.",
]


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", NO_COLOR="1")
    # A private hash cache: the shared one in ~/.cache is an SQLite file that other
    # processes' writes lock; a lookup gives up after 50 ms and hashes the file, so
    # contention there would show up as hashing time, not start-up.
    env["CXRKIT_CACHE"] = str(work / ".cxrkit-cache")
    # As an installed package runs: byte code cached (the warm-up run writes it).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def timed(argv: list[str], cwd: Path) -> tuple[float, float]:
    """(wall s, CPU s) of one run of ``argv`` (scale.py's wait4 measure); raises if it fails."""
    with tempfile.NamedTemporaryFile(suffix=".log") as log:
        figures = measure(argv, _env(cwd), Path(log.name), cwd=cwd)
    return figures["wall_s"], figures["cpu_s"]


# Runs ``python ARGS`` (``-c CODE`` or ``-m MODULE ...``) in this interpreter and, at exit,
# writes the heavy packages that were imported to the file named by $CXRKIT_HEAVY_OUT.
# (``-X importtime`` also lists an import that failed on purpose: cxrkit's lean spaCy
# import marks torch absent, so sys.modules is the truth.)
_WRAP = """
import atexit, json, os, runpy, sys
def _report():
    with open(os.environ["CXRKIT_HEAVY_OUT"], "w") as handle:
        json.dump([m for m in json.loads(os.environ["CXRKIT_HEAVY"])
                   if sys.modules.get(m) is not None], handle)
atexit.register(_report)
flag, target, *rest = sys.argv[1:]
if flag == "-c":
    sys.argv = ["-c", *rest]
    exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})
else:
    sys.argv = [target, *rest]
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""


def heavy_imports(argv: list[str], cwd: Path) -> list[str]:
    """The heavy top-level packages ``argv`` (a ``python -c/-m ...`` command) imports."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = dict(_env(cwd), CXRKIT_HEAVY_OUT=out.name, CXRKIT_HEAVY=json.dumps(HEAVY))
        subprocess.run([argv[0], "-c", _WRAP, *argv[1:]], cwd=cwd, env=env, check=True,
                       capture_output=True)  # fmt: skip
        return json.loads(Path(out.name).read_text())


def cxrkit(*args: str) -> list[str]:
    return [sys.executable, "-m", "cxrkit", "-q", *args]


# The stage runs, in pipeline order, that build what the commands read; each one's
# re-run is then that stage's no-op.
BASELINES = ("python -c pass", "import spacy")
STAGES = ("ingest", "annotate", "pretrain", "eval", "export", "physio", "distill")


def commands(work: Path) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    """name -> (argv, the stages that must have run first): baselines, light commands,
    label, and each stage's no-op re-run."""
    py = sys.executable
    mapping = str(work / "inputs" / "mapping.csv")
    return {
        "python -c pass": ([py, "-c", "pass"], ()),
        "import spacy": ([py, "-c", "import spacy"], ()),
        "--help": (cxrkit("--help"), ()),
        "show": (cxrkit("show", "dataset"), ("ingest",)),
        "verify": (cxrkit("verify", "dataset"), ("ingest",)),
        "models": (cxrkit("models"), ()),
        "label": (cxrkit("label", "reports.csv", "--out", "labels.csv"), ()),
        "ingest": (
            cxrkit(
                "ingest",
                "--mapping",
                mapping,
                "--out",
                "dataset",
                "--image-size",
                "64",
                "--salt-file",
                "salt.hex",
            ),
            ("ingest",),
        ),  # fmt: skip
        "annotate": (cxrkit("annotate", "dataset", "--out", "annotations"), ("ingest", "annotate")),
        "pretrain": (
            cxrkit(
                "pretrain",
                "dataset",
                "--out",
                "checkpoint",
                "--preset",
                "demo-mae",
                "--set",
                "train.max_steps=2",
                "--set",
                "train.checkpoint_every=2",
            ),
            ("ingest", "pretrain"),
        ),  # fmt: skip
        "eval": (
            cxrkit("eval", "checkpoint", "dataset", "--out", "eval"),
            ("ingest", "pretrain", "eval"),
        ),  # fmt: skip
        "export": (
            cxrkit("export", "checkpoint", "--out", "export"),
            ("ingest", "pretrain", "export"),
        ),
        "physio": (
            cxrkit(
                "ingest-physio",
                "--ecg",
                str(work / "physio-raw" / "ecg"),
                "--ecg-map",
                str(work / "physio-raw" / "ecg_map.csv"),
                "--labs",
                str(work / "physio-raw" / "labs.csv"),
                "--salt-file",
                "salt.hex",
                "--out",
                "physio",
            ),
            ("physio",),
        ),  # fmt: skip
        "distill": (
            cxrkit(
                "distill",
                "dataset",
                "--physio",
                "physio",
                "--student",
                "checkpoint",
                "--out",
                "distilled",
                "--preset",
                "demo-pacx",
                "--max-steps",
                "2",
                "--set",
                "teacher.epochs=1",
            ),
            ("ingest", "pretrain", "physio", "distill"),
        ),  # fmt: skip
    }


def label(name: str) -> str:
    return f"{name} no-op" if name in STAGES else name


def build(work: Path, names: list[str]) -> None:
    """The inputs of ``names``: the demo's real images and reports, a 3-report CSV, and the
    tiny real pipeline (64-px ingest, annotate, 2-step demo-mae, eval, export, physio,
    2-step demo-pacx distill) as far as needed."""
    from cxrkit.stages.demo import build_demo_inputs

    salt = work / "salt.hex"
    salt.write_text("00" * 32)
    salt.chmod(0o600)
    build_demo_inputs(work / "inputs")
    with open(work / "reports.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Report"])
        writer.writerows([r] for r in REPORTS)
    table = commands(work)
    needed = {stage for name in names for stage in table[name][1]}
    if "physio" in needed:  # the demo's synthetic ECGs and labs for the demo patients
        from cxrkit.stages.demo_physio import build_demo_physio

        with open(work / "inputs" / "mapping.csv", newline="") as handle:
            patients = [r["patient_id"] for r in csv.DictReader(handle) if r["patient_id"]]
        build_demo_physio(work / "physio-raw", patients)
    for stage in (s for s in STAGES if s in needed):
        subprocess.run(table[stage][0], cwd=work, env=_env(work), check=True, capture_output=True)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns ``{command: {wall_s, cpu_s, heavy}}`` (also printed)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="Runs per command (median).")
    parser.add_argument("--only", default="", help="Comma-separated command names to time.")
    parser.add_argument("--json", type=Path, help="Also write the figures to this JSON file.")
    args = parser.parse_args(argv)
    table_names = list(commands(Path(".")))
    wanted = {n.strip().removesuffix(" no-op") for n in args.only.split(",") if n.strip()}
    unknown = wanted - set(table_names)
    if unknown:
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}; choose from {table_names}")
    names = [n for n in table_names if n in BASELINES or not wanted or n in wanted]
    with tempfile.TemporaryDirectory(prefix="cxrkit-startup-") as tmp:
        work = Path(tmp)
        build(work, names)
        table = commands(work)
        runs: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
        for name in names:  # warm-up, untimed: byte code, the hash cache, the page cache
            timed(table[name][0], work)
        for _ in range(args.repeat):  # interleaved: a busy spell hits every command alike
            for name in names:
                runs[name].append(timed(table[name][0], work))
        rows = {}
        for name in names:
            wall = statistics.median(w for w, _ in runs[name])
            cpu = statistics.median(c for _, c in runs[name])
            heavy = heavy_imports(table[name][0], work)
            rows[label(name)] = {"wall_s": wall, "cpu_s": cpu, "heavy": heavy}
    base, spacy = rows["python -c pass"], rows["import spacy"]
    print(f"cxrkit start-up, median of {args.repeat}, OMP_NUM_THREADS=1, {os.cpu_count()} CPUs")
    header = f"{'command':<16} {'wall s':>7} {'cpu s':>7} {'wall - spacy':>13} {'cpu - spacy':>12}"
    print(header + "  heavy imports")
    for name, row in rows.items():
        print(f"{name:<16} {row['wall_s']:7.2f} {row['cpu_s']:7.2f} "
              f"{row['wall_s'] - spacy['wall_s']:+13.2f} {row['cpu_s'] - spacy['cpu_s']:+12.2f}  "
              f"{', '.join(row['heavy']) or '-'}")  # fmt: skip
    print(f"(interpreter alone: {base['wall_s']:.2f} s wall, {base['cpu_s']:.2f} s CPU)")
    if args.json:
        args.json.write_text(json.dumps({"repeat": args.repeat, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
