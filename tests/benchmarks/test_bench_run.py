"""`pocketml bench` across every format with broken entries mixed in: each row keeps its place with
a status and reason, the run carries on, and memory is measured per artifact in a fresh process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pocketml.benchmarks.bench import FAILED_VALIDATION, PASSED, ROW_FAILED, bench
from pocketml.export.coreml import latency_unavailable

from pocketml.artifact import load_recommendations
from pocketml.configs.bench import BenchConfig

pytestmark = pytest.mark.slow  # exports three formats and probes memory in subprocesses: ~1-3 minutes


@pytest.fixture(scope="module")
def results(bench_export_dir: Path, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench")
    config = BenchConfig(threads=[1, 2], min_time_s=0.05, min_runs=10, memory_runs=2)
    results = bench(bench_export_dir, out, config)
    return {"results": results, "out": out, "rows": {r["name"]: r for r in results["rows"]}}


def test_every_row_has_a_status_and_the_run_carries_on(results):
    from pocketml.export.tolerances import tolerance_for

    rows = results["rows"]
    assert list(rows)[0] == "keras" and rows["keras"]["status"] == PASSED
    assert rows["tflite-fp32"]["status"] == rows["onnx-fp32"]["status"] == PASSED
    for name in ("tflite-fp16", "onnx-fp16", "coreml-fp16"):
        expected = PASSED if rows[name]["max_abs_diff"] <= tolerance_for("fp16").max_abs_diff else FAILED_VALIDATION
        assert rows[name]["status"] == expected and rows[name]["top1_agreement"] == 1.0
    swapped = rows["tflite-int8"]
    assert swapped["status"] == FAILED_VALIDATION and "agreement" in swapped["reason"]
    assert swapped["top1_agreement"] == 0.0 and swapped["latency"]  # measured all the same
    garbage = rows["onnx-int8-dynamic"]  # its verdict: it cannot be loaded
    assert garbage["status"] == FAILED_VALIDATION and "not an ONNX model" in garbage["reason"]
    assert not garbage["latency"]
    assert rows["onnx-int8"]["status"] == ROW_FAILED and "calibration crashed" in rows["onnx-int8"]["reason"]


def test_onnx_timed_per_thread_count_and_core_ml_said_plainly(results):
    rows = results["rows"]
    for figures in rows["onnx-fp32"]["latency"].values():
        assert 0 < figures["p50_ms"] <= figures["p90_ms"] <= figures["p99_ms"]
    assert set(rows["onnx-fp32"]["latency"]) == {"1", "2"}
    coreml = rows["coreml-fp16"]
    assert coreml["latency"] == {} and coreml["latency_note"] == latency_unavailable()
    assert coreml["latency_note"] == "n/a: no Core ML runtime on linux"
    assert coreml["accuracy"] == rows["keras"]["accuracy"]  # judged through the reference executor
    assert coreml["estimates"] == []  # no MAC scaling: phone estimates come from instructions counted on arm64
    assert "n/a: no Core ML runtime on linux" in (results["out"] / "report.html").read_text()


def test_peak_memory_per_artifact(results):
    rows = results["rows"]
    for name in ("keras", "tflite-fp32", "onnx-fp32"):
        memory = rows[name]["memory"]
        assert memory["exact"] and memory["peak_delta_mb"] > 0
    # fp32 weights are mapped or copied into memory: the fp32 file's peak is not below its size
    assert rows["tflite-fp32"]["memory"]["peak_delta_mb"] * 1e6 > rows["tflite-fp32"]["bytes"]


def test_one_recommendation_per_platform(results):
    saved = json.loads((results["out"] / "results.json").read_text())
    chosen = {p: c["artifact"] for p, c in saved["recommendations"].items()}
    assert chosen["android"] in ("tflite-fp32", "tflite-fp16")
    assert chosen["onnx"] in ("onnx-fp32", "onnx-fp16")
    assert chosen["ios"] == "coreml-fp16"
    assert {r.platform: r.artifact for r in load_recommendations(results["out"])} == chosen
