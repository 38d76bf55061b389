"""benchmarks/scale.py runs end to end at tiny sizes on the CPU, so it cannot rot.

Real path: DICOMs replicated from the real RG1 radiograph with IU reports beside
the study folders, then `cxrkit ingest`, `cxrkit annotate` and the pretrain loader
each in a subprocess whose peak RSS and CPU time come from wait4.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "scale.py"


@pytest.fixture(scope="module")
def scale_bench():
    spec = importlib.util.spec_from_file_location("bench_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_copies_get_new_uids_and_patients_in_the_mimic_layout(scale_bench, tmp_path):
    info = scale_bench.make_corpus(tmp_path, 8, source_size=160)
    files = sorted((tmp_path / "files").rglob("*.dcm"))
    assert info["files"] == len(files) == 8 and max(info["source_shape"]) == 160
    headers = [pydicom.dcmread(f) for f in files]
    for key in ("SOPInstanceUID", "PatientID"):
        values = {str(getattr(h, key)) for h in headers}
        assert len(values) == (8 if key == "SOPInstanceUID" else 2)
    assert len({str(h.StudyInstanceUID) for h in headers}) == 4  # 2 images per study
    assert len({h.PixelData for h in headers}) == 8  # every copy stores different pixels
    study = files[0].parent  # files/p10/p10000000/s50000000/<sop>.dcm, report beside
    assert study.name.startswith("s5") and study.parent.name.startswith("p1")
    assert "IMPRESSION:" in (study.parent / f"{study.name}.txt").read_text()


def test_tiny_run_measures_every_stage_and_prints_the_ratio(scale_bench, tmp_path, capsys):
    out = tmp_path / "scale.json"
    salt = tmp_path / "work" / "salt.hex"  # a fixed salt: the same split every run
    salt.parent.mkdir()
    salt.write_text("00" * 32)
    salt.chmod(0o600)
    result = scale_bench.main(
        ["--sizes", "10,20", "--work", str(tmp_path / "work"), "--row-group-mb", "0.05",
         "--json", str(out)]
    )  # fmt: skip
    assert json.loads(out.read_text()) == result
    assert [r["images"] for r in result["results"]] == [10, 20]
    for run in result["results"]:
        assert run["rows"] == run["images"]  # no copy dropped as a duplicate
        for stage in ("ingest", "annotate", "loader"):
            figures = run["stages"][stage]
            assert figures["rss_mib"] > 50 and figures["cpu_ms_per_image"] > 0
        loader = run["stages"]["loader"]
        assert loader["images"] > 0 and loader["entities"] > 0 and "dataset_built_mib" in loader
        # Per image the stage handled: the loader reads the train split only (this salt
        # puts some of the patients in val/test).
        assert loader["images"] < run["images"]
        assert loader["cpu_ms_per_image"] == pytest.approx(
            1000 * loader["cpu_s"] / loader["images"]
        )
        ingest = run["stages"]["ingest"]
        assert ingest["cpu_ms_per_image"] == pytest.approx(1000 * ingest["cpu_s"] / run["images"])
    corpus = tmp_path / "work" / "corpus-20"
    groups = pq.ParquetFile(corpus / "ds-run" / "shard-00000.parquet").num_row_groups
    assert pq.ParquetFile(corpus / "ann-run" / "annotations.parquet").num_row_groups == groups
    assert "peak RSS 20 / 10 images: ingest" in capsys.readouterr().out
