"""benchmarks/gpu.py runs end to end at tiny shapes on the CPU, so it cannot rot before a GPU run.

Real path: the demo presets' objectives built as `cxrkit pretrain` builds them,
the real Trainer, batches from a Parquet dataset artifact of the real pediatric
JPEGs and IU reports through the pretrain stage's loader construction; MMCLIP
needs annotations, so the annotate stage runs on that dataset first.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


@pytest.fixture(scope="module")
def gpu_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_reports_finite_throughput_flops_and_memory(gpu_bench, tmp_path, capsys):
    out = tmp_path / "gpu.json"
    result = gpu_bench.main(
        [
            "--tiny",
            "--cpu",
            "--presets",
            "mae,maco,mmclip,m3ae,no-such-preset",
            "--steps",
            "2",
            "--compile",
            "off",
            "--json",
            str(out),
        ]  # fmt: skip
    )
    printed = capsys.readouterr().out
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert [row["preset"] for row in result["rows"]] == ["mae", "maco", "mmclip", "m3ae"]
    assert "no-such-preset" in result["skipped"]  # skipped with a reason, not an error
    for row in result["rows"]:
        for key in ("images_per_s", "step_s", "data_wait_fraction", "gflop_per_image",
                    "tflops_achieved", "final_loss"):  # fmt: skip
            assert math.isfinite(row[key]), (row["preset"], key)
        assert row["flops_per_step"] > 0
        assert row["images_per_s"] > 0 and 0 <= row["data_wait_fraction"] < 1
        assert row["peak_memory_bytes"] > 0 and row["peak_memory_kind"] == "process_rss"
        assert row["batch"] == 2 and row["steps"] == 2 and row["precision"] == "no"
        assert row["mfu"] is None  # no bf16 peak on a CPU
        assert row["fused_attn"] is True  # timm's scaled_dot_product_attention path
        assert f"{row['preset']:<12} compile off" in printed
    mae, maco, mmclip, _ = result["rows"]
    # MMCLIP's entities and prompts came from `cxrkit annotate`; MAE needs none.
    assert mmclip["annotations"] and not mae["annotations"] and not maco["annotations"]
    # The MaCo step adds a text tower and a 2x-size reconstruction: more FLOPs per image.
    assert maco["gflop_per_image"] > mae["gflop_per_image"]
    assert "device: CPU" in printed and "MFU     n/a" in printed


def test_peak_table_matches_longest_names_first(gpu_bench):
    assert gpu_bench.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu_bench.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu_bench.peak_tflops("NVIDIA A10") == 125.0
    assert gpu_bench.peak_tflops("NVIDIA L40S") == 362.0
    assert gpu_bench.peak_tflops("NVIDIA L4") == 121.0
    assert gpu_bench.peak_tflops("Tesla T4") is None
