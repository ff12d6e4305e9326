"""`pocketml bench` on a real TFLite fp32 + fp16 export: the table holds real measurements."""

from __future__ import annotations

import base64
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench import FAILED_VALIDATION, PASSED, bench
from benchmarks.quality import spread_subset
from pocketml.artifact import ExportManifest
from pocketml.configs.bench import BenchConfig
from pocketml.dataset import load_image, read_records

IMAGES = 16
THREADS = [1, 2]


@pytest.fixture(scope="module")
def quick(tflite_export_dir: Path, hotdog_dir: Path, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench_quick")
    config = BenchConfig(threads=THREADS, min_time_s=0.02, min_runs=10, max_images=IMAGES, measure_memory=False)
    results = bench(tflite_export_dir, hotdog_dir, out, config)
    return {"results": results, "out": out, "rows": {r["name"]: r for r in results["rows"]}}


def test_baseline_row_first_then_one_row_per_artifact(quick, tflite_export_dir):
    names = [r["name"] for r in quick["results"]["rows"]]
    manifest = ExportManifest.load(tflite_export_dir)
    assert names == ["keras", *[a.name for a in manifest.artifacts]] == ["keras", "tflite-fp32", "tflite-fp16"]
    assert quick["rows"]["keras"]["status"] == PASSED and quick["rows"]["tflite-fp32"]["status"] == PASSED


def test_fp16_file_is_about_half_of_fp32(quick):
    rows = quick["rows"]
    assert 0.45 < rows["tflite-fp16"]["bytes"] / rows["tflite-fp32"]["bytes"] < 0.56
    assert 0 < rows["tflite-fp32"]["zip_bytes"] < rows["tflite-fp32"]["bytes"]


def test_fp16_status_follows_the_tolerance(quick):
    from export.tolerances import tolerance_for

    row = quick["rows"]["tflite-fp16"]
    assert row["top1_agreement"] == 1.0 and row["max_abs_diff"] > 0  # fp16 weights do move the outputs
    expected = PASSED if row["max_abs_diff"] <= tolerance_for("fp16").max_abs_diff else FAILED_VALIDATION
    assert row["status"] == expected


def test_accuracy_recomputed_independently(quick, tflite_export_dir, hotdog_dir):
    from ai_edge_litert.interpreter import Interpreter

    records = spread_subset([r for r in read_records(hotdog_dir) if r.split == "val"], IMAGES)
    assert {r.label for r in records} == {"hot_dog", "not_hot_dog"}
    labels = ExportManifest.load(tflite_export_dir).model["labels"]
    interpreter = Interpreter(model_path=str(tflite_export_dir / "android" / "model-fp32.tflite"))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    correct = 0
    for record in records:
        interpreter.set_tensor(inp["index"], load_image(record.path, (96, 96))[None].astype(np.float32))
        interpreter.invoke()
        correct += labels[int(interpreter.get_tensor(out["index"]).argmax())] == record.label
    row = quick["rows"]["tflite-fp32"]
    assert row["images"] == IMAGES and quick["results"]["data"]["split"] == "val"
    assert row["accuracy"] == pytest.approx(correct / IMAGES)
    assert row["top1_agreement"] == 1.0 and row["max_abs_diff"] < 1e-4


def test_latency_percentiles_ordered_and_overhead_measured(quick):
    for name in ("tflite-fp32", "tflite-fp16"):
        latency = quick["rows"][name]["latency"]
        assert set(latency) == {"1", "2"}
        for figures in latency.values():
            assert 0 < figures["min_ms"] <= figures["p50_ms"] <= figures["p90_ms"] <= figures["p99_ms"]
            assert figures["runs"] >= 10 and figures["std_ms"] >= 0
            assert 0 < figures["overhead_pct"] < 5 and isinstance(figures["overhead_direct_pct"], float)
    assert quick["rows"]["keras"]["latency"]["tf-default"]["p50_ms"] > 0
    overheads = [f["overhead_pct"] for r in quick["results"]["rows"] for f in r["latency"].values()]
    assert quick["results"]["harness_overhead_pct_max"] == max(overheads)
    assert "XNNPACK" in quick["rows"]["tflite-fp32"]["runtime"]


def test_cost_and_throughput_figures(quick):
    rows = quick["rows"]
    assert rows["keras"]["macs"] == rows["tflite-fp32"]["macs"] > 5e6  # α0.35 at 96 px: ~11 M MACs
    assert rows["keras"]["params"] == rows["tflite-fp16"]["params"] > 1e5
    peaks = quick["results"]["peak_gflops"]
    assert set(peaks) == {"1", "2"} and min(peaks.values()) > 0
    through = rows["tflite-fp32"]["throughput"]["1"]
    p50 = rows["tflite-fp32"]["latency"]["1"]["p50_ms"]
    assert through["gmacs"] == pytest.approx(rows["tflite-fp32"]["macs"] / p50 / 1e6)
    assert through["peak_share"] == pytest.approx(2 * through["gmacs"] / peaks["1"])
    estimates = rows["tflite-fp32"]["estimates"]
    assert [e["device"] for e in estimates] == ["Pixel 3"]
    assert estimates[0]["label"] == "estimate" and "tensorflow.org" in estimates[0]["source"]
    assert {"cpu_flags", "cores"} <= set(quick["results"]["machine"])
    assert "ai-edge-litert" in quick["results"]["libraries"] and quick["results"]["config"]["threads"] == THREADS


def test_outputs_written_and_recommendation_marked(quick, tflite_export_dir):
    out = quick["out"]
    saved = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in saved["rows"]] == ["keras", "tflite-fp32", "tflite-fp16"]
    with open(out / "results.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["name"] for r in table] == ["keras", "tflite-fp32", "tflite-fp16"]
    assert float(table[1]["p50_ms@1"]) == pytest.approx(quick["rows"]["tflite-fp32"]["latency"]["1"]["p50_ms"])
    page = (out / "report.html").read_text()
    images = page.split("data:image/png;base64,")[1:]
    assert len(images) == 2
    assert all(base64.b64decode(img.split("'")[0])[:8] == b"\x89PNG\r\n\x1a\n" for img in images)
    chosen = saved["recommendations"]["android"]["artifact"]
    assert chosen in ("tflite-fp32", "tflite-fp16")
    manifest = ExportManifest.load(tflite_export_dir)
    assert [a.name for a in manifest.artifacts if a.recommended] == [chosen]
    readme = (tflite_export_dir / "android" / "README.md").read_text()
    chosen_file = next(a.path for a in manifest.artifacts if a.recommended).split("/")[-1]
    assert f"Recommended: `{chosen_file}`" in readme
    row = next(line for line in readme.splitlines() if line.startswith(f"| `{chosen_file}`"))
    assert row.endswith("| **android** |") and row.count("|") == 6  # five cells, like the header
    assert saved["recommendations"]["ios"]["artifact"] is None


def test_a_file_that_failed_export_validation_is_never_passed_or_recommended(tflite_export_dir, hotdog_dir, tmp_path):
    import shutil

    export_dir = shutil.copytree(tflite_export_dir, tmp_path / "export")
    manifest = ExportManifest.load(export_dir)
    fp16 = manifest.find("tflite", "fp16")
    fp16.parity.status, fp16.parity.reason, fp16.parity.images = "failed", "top-1 agreement 0.970 < 0.99", 100
    manifest.save(export_dir)
    config = BenchConfig(threads=[1], min_time_s=0.02, min_runs=5, max_images=8, measure_memory=False)
    rows = {r["name"]: r for r in bench(export_dir, hotdog_dir, tmp_path / "bench", config)["rows"]}
    assert rows["tflite-fp16"]["status"] == FAILED_VALIDATION
    assert "export validation on 100 images: top-1 agreement 0.970" in rows["tflite-fp16"]["reason"]
    assert rows["tflite-fp16"]["recommended"] == [] and rows["tflite-fp32"]["recommended"] == ["android"]
