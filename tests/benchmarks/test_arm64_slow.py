"""The emulated ARM core, for real (slow tier; CI installs qemu-user first with `make device-arm64`):
set-up, the real-weights EfficientNet-Lite0 model through aarch64 LiteRT and ONNX Runtime on
cortex-a76, instruction counts in a known band and repeatable, outputs agreeing with the host's (a
core emulated wrongly, like qemu 7.2's -cpu max on int8, fails here), and `bench --device arm64`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pocketml.benchmarks.devices import arm64
from pocketml.export.registry import format_module

# The int8 export fixture alone took over 900 s on 2 shared cores; the emulated runs add minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]
FILES = (("tflite", "fp32"), ("tflite", "int8"), ("onnx", "fp32"), ("onnx", "int8"))


@pytest.fixture(scope="module")
def arm64_ready():
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-user is not installed (make device-arm64 installs and prepares it)")
    arm64.setup("cortex-a76", log=lambda line: None)  # idempotent: a no-op when prepared
    assert arm64.status("cortex-a76").ready


@pytest.fixture(scope="module")
def arm_export(tmp_path_factory, real_model_dir: Path, photos_dir: Path) -> Path:
    from pocketml.export.exporter import export_model

    from pocketml.configs.export import ExportConfig

    export_dir = tmp_path_factory.mktemp("arm_export")
    export_model(real_model_dir, export_dir, ExportConfig(formats=["tflite", "onnx"], precisions=["fp32", "fp16", "int8"],
                                                          calibration=photos_dir))
    return export_dir


@pytest.fixture(scope="module")
def runs(arm64_ready, arm_export: Path, photos_dir: Path):
    from pocketml.dataset import load_images

    paths = [arm_export / fmt / f"model-{precision}.{fmt}" for fmt, precision in FILES]
    images = load_images(sorted((photos_dir / "test").rglob("*.jpg"))[:6], (96, 96))
    results = arm64.run(paths, [fmt for fmt, _ in FILES], images, "cortex-a76", cost=True)
    hosts = [format_module(fmt).load(path).predict(images) for (fmt, _), path in zip(FILES, paths, strict=True)]
    return dict(zip(FILES, zip(results, hosts, strict=True), strict=True)), paths, images


def test_every_file_runs_on_the_core_and_agrees_with_the_host(runs):
    by_file, _, _ = runs
    for key, (result, host) in by_file.items():
        assert result.error is None, key
        assert result.outputs.shape == host.shape
        assert (result.outputs.argmax(1) == host.argmax(1)).all(), key  # a wrongly emulated core flips these
        tolerance = 1e-5 if key[1] == "fp32" else 0.02  # int8: at most a few output steps apart
        assert np.abs(result.outputs - host).max() <= tolerance, key


def test_instruction_counts_fall_in_the_known_bands(runs):
    by_file, _, _ = runs
    cost = {key: result.cost for key, (result, _) in by_file.items()}
    for key, figures in cost.items():
        # The fewest of 3; one call in several may run a few hundred thousand more (seen: ONNX int8-dynamic, +1.3 %
        # once in 8; ONNX fp16 up to 1.8 %): the repeat across processes below is what must hold to 0.1 %.
        assert figures["repeats"] == 3 and figures["spread"] <= 2e-2, key
        assert 0 < figures["dot"] <= figures["simd"] < figures["instructions"] or key[1] == "fp32", key
    assert cost[("tflite", "fp32")]["dot"] == 0 < cost[("tflite", "int8")]["dot"]  # SDOT only in int8 kernels
    tflite_ratio = cost[("tflite", "int8")]["instructions"] / cost[("tflite", "fp32")]["instructions"]
    onnx_vs_tflite = cost[("onnx", "fp32")]["instructions"] / cost[("tflite", "fp32")]["instructions"]
    assert 0.2 <= tflite_ratio <= 0.8  # measured 0.40 on the demo's Lite0, 0.58 on MobileNetV2 a0.35
    assert 1.3 <= onnx_vs_tflite <= 4.0  # ONNX Runtime's fp32 path costs ~2.2-2.5x LiteRT's on ARM


def test_counts_repeat_across_processes(runs):
    by_file, paths, images = runs
    again = arm64.run(paths[1:2], ["tflite"], images[:1], "cortex-a76", cost=True)[0]
    first = by_file[("tflite", "int8")][0].cost["instructions"]
    assert abs(again.cost["instructions"] - first) <= 1e-3 * first


def test_a_file_that_differs_on_the_core_gets_the_verdict_guided_that_every_image_gives(arm64_ready, arm_export):
    from pocketml.benchmarks import on_device
    from pocketml.export.keras_model import load_keras_predictor

    from pocketml.artifact import ExportManifest

    manifest = ExportManifest.load(arm_export)
    size = tuple(manifest.model.image_size)
    keras = load_keras_predictor(Path(manifest.model.source), size, manifest.model.normalization)
    judge = on_device.device_judge(manifest, keras, size)
    fp16 = next(a for a in manifest.artifacts if a.name == "onnx-fp16")
    entry = on_device.Entry(arm_export / fp16.path, "onnx", "fp16", {})
    target = on_device.targets(["arm64"])[0]
    guided, every = (on_device.judge_on(target, [entry], judge, every_image=all_images)[0] for all_images in (False, True))
    assert guided["vs_host"]["max_abs_diff"] > on_device.HOST_EPSILON, guided  # ARM's kernels compute fp16 in fp16
    assert guided["status"] == every["status"] and guided["flips"] == every["flips"], (guided, every)
    assert guided["device_images"] < every["device_images"] == every["images"] == len(judge.images)
    assert every["vs_host_judged"]["max_abs_diff"] <= guided["reach"]  # the move guided judging assumed away
    assert "keep their host outputs" in guided["basis"] and every["reach"] is None


def test_bench_with_the_device_judges_costs_and_recommends_by_it(arm64_ready, arm_export: Path, tmp_path):
    from pocketml.benchmarks.bench import bench

    from pocketml.configs.bench import BenchConfig

    config = BenchConfig(threads=[1], min_time_s=0.05, min_runs=3, warmup_runs=1, measure_memory=False,
                         probe_peak=False, devices=["arm64"])
    results = bench(arm_export, tmp_path / "bench", config)
    rows = {row["name"]: row for row in results["rows"]}
    assert results["devices"] == ["arm64:cortex-a76"]
    for name in ("tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8"):
        record = rows[name]["devices"]["arm64:cortex-a76"]
        assert record["status"] == rows[name]["status"], (name, record)  # the ARM kernels agree on these files
        assert record["cost"]["instructions"] > 1e6 and record["estimates"][0]["label"] == "estimate"
        assert record["basis"]
    assert rows["tflite-fp32"]["devices"]["arm64:cortex-a76"]["status"] == "passed"
    assert "fastest on arm64:cortex-a76" in results["recommendations"]["android"]["reason"]
    assert "arm64:cortex-a76:instructions" in (tmp_path / "bench" / "results.csv").read_text().splitlines()[0]
    assert "<h2>Devices</h2>" in (tmp_path / "bench" / "report.html").read_text()
