"""`pocketml bench` on a real TFLite fp32 + fp16 export: the export's verdicts beside real
measurements of latency, size and cost, the choice written to the bench directory only."""

from __future__ import annotations

import base64
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from pocketml.benchmarks.bench import PASSED, bench
from pocketml.benchmarks.report import FAILED_VALIDATION

from pocketml.artifact import ExportManifest, load_recommendations
from pocketml.configs.bench import BenchConfig
from pocketml.dataset import ImageSet, load_image

THREADS = [1, 2]


def snapshot(root: Path) -> dict:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def quick(tflite_export_dir: Path, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench_quick")
    config = BenchConfig(threads=THREADS, min_time_s=0.02, min_runs=10, measure_memory=False)
    before = snapshot(tflite_export_dir)
    results = bench(tflite_export_dir, out, config)
    return {"results": results, "out": out, "rows": {r["name"]: r for r in results["rows"]},
            "export_untouched": snapshot(tflite_export_dir) == before}


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
    from pocketml.export.tolerances import tolerance_for

    row = quick["rows"]["tflite-fp16"]
    assert row["top1_agreement"] == 1.0 and row["max_abs_diff"] > 0  # fp16 weights do move the outputs
    expected = PASSED if row["max_abs_diff"] <= tolerance_for("fp16").max_abs_diff else FAILED_VALIDATION
    assert row["status"] == expected


def test_bench_reports_the_export_verdict_and_it_is_the_truth(quick, tflite_export_dir):
    """The row's figures are the export's verdict, and that verdict matches the file recomputed
    here by hand with LiteRT on the evaluation photos the export recorded."""
    from ai_edge_litert.interpreter import Interpreter

    manifest = ExportManifest.load(tflite_export_dir)
    records = ImageSet.from_dict(manifest.images["evaluation"]).records
    assert {r.label for r in records} == {"cat", "coffee"}
    labels = list(manifest.model.labels)
    for artifact in manifest.artifacts:
        row, parity = quick["rows"][artifact.name], artifact.parity
        assert (row["accuracy"], row["top1_agreement"], row["flips"], row["max_abs_diff"], row["images"]) == (
            parity.accuracy, parity.top1_agreement, parity.flips, parity.max_abs_diff, parity.images)
    interpreter = Interpreter(model_path=str(tflite_export_dir / "tflite" / "model-fp32.tflite"))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    correct = 0
    for record in records:
        interpreter.set_tensor(inp["index"], load_image(record.path, (96, 96))[None].astype(np.float32))
        interpreter.invoke()
        correct += labels[int(interpreter.get_tensor(out["index"]).argmax())] == record.label
    row = quick["rows"]["tflite-fp32"]
    assert row["held_out_images"] == len(records) == 32 and quick["results"]["data"]["split"] == "test"
    assert row["images"] == 136  # agreement also on the 72 + 32 train and val photos that did not calibrate
    assert row["accuracy"] == pytest.approx(correct / len(records))
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
    assert rows["keras"]["macs"] == rows["tflite-fp32"]["macs"] > 5e7  # EfficientNet-Lite0 at 96 px: ~70 M MACs
    assert rows["keras"]["params"] == rows["tflite-fp16"]["params"] > 1e5
    peaks = quick["results"]["peak_gflops"]
    assert set(peaks) == {"1", "2"} and min(peaks.values()) > 0
    through = rows["tflite-fp32"]["throughput"]["1"]
    p50 = rows["tflite-fp32"]["latency"]["1"]["p50_ms"]
    assert through["gmacs"] == pytest.approx(rows["tflite-fp32"]["macs"] / p50 / 1e6)
    assert through["peak_share"] == pytest.approx(2 * through["gmacs"] / peaks["1"])
    assert rows["tflite-fp32"]["estimates"] == []  # phone estimates come from a device's count (--device arm64)
    assert {"cpu_flags", "cores"} <= set(quick["results"]["machine"])
    assert "ai-edge-litert" in quick["results"]["libraries"] and quick["results"]["config"]["threads"] == THREADS


def test_outputs_and_recommendation_written_to_the_bench_dir_only(quick):
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
    assert quick["rows"][chosen]["recommended"] == ["android"]
    saved_choices = {r.platform: r.artifact for r in load_recommendations(out)}
    assert saved_choices == {"android": chosen, "ios": None, "onnx": None}
    assert quick["export_untouched"], "bench wrote into the export directory"


def test_a_file_that_failed_export_validation_is_never_passed_or_recommended(tflite_export_dir, tmp_path):
    import shutil

    export_dir = shutil.copytree(tflite_export_dir, tmp_path / "export")
    manifest = ExportManifest.load(export_dir)
    fp16 = manifest.find("tflite", "fp16")
    fp16.parity.status, fp16.parity.reason = "failed", "top-1 agreement 0.970 < 0.99"
    manifest.save(export_dir)
    config = BenchConfig(threads=[1], min_time_s=0.02, min_runs=5, measure_memory=False, probe_peak=False)
    rows = {r["name"]: r for r in bench(export_dir, tmp_path / "bench", config)["rows"]}
    assert rows["tflite-fp16"]["status"] == FAILED_VALIDATION
    assert rows["tflite-fp16"]["reason"] == "top-1 agreement 0.970 < 0.99"
    assert rows["tflite-fp16"]["recommended"] == [] and rows["tflite-fp32"]["recommended"] == ["android"]
