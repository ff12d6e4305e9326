"""The bench's measuring parts on their own: MACs, sizes, latency harness, memory probe, peak
probe, phone estimates, Pareto front, recommendation, bad input, CLI.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time

import numpy as np
import pytest
from pocketml.benchmarks import cost, estimates, peak, recommend, report
from pocketml.benchmarks.bench import PASSED, bench
from pocketml.benchmarks.cli import config_from_args, register

from pocketml import latency
from pocketml.configs.bench import BenchConfig
from pocketml.errors import PocketMLError


def test_macs_of_mobilenet_v2_224_match_the_paper():
    import keras

    model = keras.applications.MobileNetV2(input_shape=(224, 224, 3), alpha=1.0, weights=None)
    macs = cost.count_macs(model)
    assert abs(macs - 300e6) / 300e6 < 0.05, macs  # the paper's "300M multiply-adds"
    assert cost.count_params(model) == 3_538_984


def test_macs_counted_per_layer_kind_by_hand():
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(inputs)  # 4x4 positions x (3*3*3*4)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)  # 4x4 positions x (3*3*4)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(5)(x)  # 4*5
    assert cost.count_macs(keras.Model(inputs, outputs)) == 16 * 108 + 16 * 36 + 20


def test_zip_size_follows_content(tmp_path):
    zeros, noise = tmp_path / "zeros.bin", tmp_path / "noise.bin"
    zeros.write_bytes(bytes(100_000))
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8).tobytes())
    assert cost.file_sizes(zeros) == {"bytes": 100_000, "zip_bytes": cost.zipped_bytes(zeros)}
    assert cost.zipped_bytes(zeros) < 1_000
    assert 100_000 <= cost.zipped_bytes(noise) < 101_000
    package = tmp_path / "model.mlpackage"
    (package / "Data").mkdir(parents=True)
    shutil.copy(zeros, package / "Data" / "weights.bin")
    assert cost.file_sizes(package)["bytes"] == 100_000


def test_latency_harness_percentiles_and_overhead():
    a = np.random.default_rng(0).standard_normal((160, 160)).astype(np.float32)
    figures = latency.measure(lambda: a @ a @ a, min_time_s=0.3, min_runs=20, max_runs=5000, warmup_runs=3, block_runs=5)
    assert figures["runs"] >= 20
    assert 0 < figures["min_ms"] <= figures["p50_ms"] <= figures["p90_ms"] <= figures["p99_ms"]
    assert figures["timed_seconds"] >= 0.3
    assert 0 < figures["overhead_pct"] <= 5.0  # the budget for the harness itself
    assert isinstance(figures["overhead_direct_pct"], float) and figures["bare_call_ms"] > 0


def test_slow_calls_get_small_blocks():
    assert latency.block_size(lambda: time.sleep(0.03), warmup_runs=1, block_runs=5) == 1
    assert latency.block_size(lambda: None, warmup_runs=1, block_runs=5) == 5


def test_latency_harness_stops_at_max_runs():
    figures = latency.measure(lambda: None, min_time_s=10, min_runs=1, max_runs=50, warmup_runs=0, block_runs=7)
    assert figures["runs"] == 50


def test_latency_times_the_format_modules_own_predictor_set_up(tflite_export_dir):
    from pocketml.export import coreml, tflite

    image = np.zeros((1, 96, 96, 3), dtype=np.uint8)
    predictor = tflite.load(tflite_export_dir / "tflite" / "model-fp32.tflite", threads=1)
    probs = predictor.invoker(image)()  # the bare interpreter call latency times
    assert probs.shape == (1, 2) and probs.sum() == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(probs, predictor.predict(image), atol=1e-6)
    expected = None if sys.platform == "darwin" else f"n/a: no Core ML runtime on {sys.platform}"
    assert coreml.latency_unavailable() == expected


def test_peak_memory_in_a_fresh_process(tflite_export_dir):
    path = tflite_export_dir / "tflite" / "model-fp32.tflite"
    memory = cost.peak_memory("tflite", path, (96, 96), runs=2)
    assert memory["exact"] and memory["peak_rss_mb"] > memory["baseline_rss_mb"] > 0
    assert 0 < memory["peak_delta_mb"] < 500


def test_peak_probe_measures_something():
    assert peak.peak_gflops(1, size=256, seconds=0.1) > 0.5
    assert peak.achieved(300_000_000, 10.0, 100.0) == {"gmacs": 30.0, "peak_share": 0.6}
    assert peak.achieved(None, 10.0, 100.0)["gmacs"] is None


def test_phone_estimates_rest_on_published_points_with_their_error():
    fits = {fit["kernels"]: fit for fit in estimates.calibration()}
    assert set(fits) == {"float", "integer"}, "benchmarks/phones.json has counted float and integer points"
    pooled = estimates.overall_error()
    (pixel3,) = pooled.values()
    assert pixel3["points"] >= 6 and all(len(fit["families"]) >= 2 and fit["threads"] == 4 for fit in fits.values())
    float_rows, int_rows = estimates.estimate_ms(10_000_000, "fp16"), estimates.estimate_ms(10_000_000, "int8")
    assert float_rows[0]["estimate_ms"] == pytest.approx(fits["float"]["factor"] * 10_000_000)
    assert int_rows[0]["estimate_ms"] == pytest.approx(fits["integer"]["factor"] * 10_000_000)
    assert float_rows[0]["label"] == "estimate" and "leave-one-out error median" in float_rows[0]["error"]
    assert "hosted_models" in float_rows[0]["source"]
    assert estimates.estimate_ms(None, "fp32") == []


def test_pareto_front_keeps_only_undominated_points():
    points = [(10.0, 90.0, "a"), (5.0, 85.0, "b"), (20.0, 89.0, "c"), (3.0, 70.0, "d"), (6.0, 85.0, "e")]
    assert [p[2] for p in report.pareto_front(points)] == ["d", "b", "a"]


def _row(name: str, drop: float | None, p50: float | None, size: int, agreement: float = 1.0,
         status: str = "passed") -> dict:
    fmt, precision = name.split("-", 1)
    latency_figures = {"4": {"p50_ms": p50, "threads": 4}} if p50 is not None else {}
    accuracy = None if drop is None else 0.9 - drop / 100
    return {"name": name, "format": fmt, "precision": precision, "status": status, "accuracy": accuracy,
            "accuracy_drop_points": drop, "top1_agreement": agreement, "latency": latency_figures, "bytes": size,
            "images": 100}  # fmt: skip


def choices(rows, by="latency") -> dict:
    """platform -> its recommendation for the oldest OS tier (iOS: Core ML; the tiers are tested in
    tests/export/test_platforms.py)."""
    first: dict = {}
    for choice in recommend.choose(rows, by):
        first.setdefault(choice.platform, choice)
    return first


def test_recommendation_is_the_fastest_passed_file_then_the_smallest():
    rows = [
        {"name": "keras", "accuracy": 0.9},
        _row("tflite-fp32", 0.0, 10.0, 4_000_000),
        _row("tflite-int8", 0.5, 5.0, 1_000_000),
        _row("tflite-int8-dynamic", 2.0, 3.0, 1_000_000, status="failed validation"),
        _row("tflite-fp16", 0.0, 5.1, 2_000_000),
        _row("onnx-fp32", 0.0, 8.0, 4_000_000, status="failed validation"),
    ]
    chosen = choices(rows)
    assert chosen["android"].artifact == "tflite-int8"  # int8-dynamic is faster but its verdict failed
    assert chosen["onnx"].artifact is None and "onnx-fp32: failed validation" in chosen["onnx"].reason
    assert chosen["ios"].artifact is None
    assert choices(rows, "size")["android"].artifact == "tflite-int8"


def test_recommendation_reads_the_verdict_and_never_judges_again():
    # Agreement 0.95 and a 3-point drop with a passed verdict: the verdict is the one budget, so it is
    # recommended; bench has no second budget (no budget_points, no min_agreement) to overrule it.
    rows = [{"name": "keras", "accuracy": 0.9}, _row("tflite-int8", 3.0, 1.0, 1, agreement=0.95)]
    assert choices(rows)["android"].artifact == "tflite-int8"
    assert not {"budget_points", "min_agreement"} & set(BenchConfig.__dataclass_fields__)


def test_a_too_few_images_file_is_picked_only_when_nothing_passed_and_says_so():
    undecided = _row("tflite-int8", 0.0, 1.0, 1, status="too few images") | {"images_needed": 420}
    rows = [{"name": "keras", "accuracy": 0.9}, undecided, _row("tflite-fp32", 0.0, 9.0, 9)]
    assert choices(rows)["android"].artifact == "tflite-fp32"
    rows[2]["status"] = "failed validation"
    choice = choices(rows)["android"]
    assert choice.artifact == "tflite-int8" and "nothing passed" in choice.reason and "420 images" in choice.reason


def test_a_device_verdict_counts_for_the_platforms_the_device_stands_for():
    arm_failed = {"arm64": {"status": "failed", "platforms": ["android", "onnx"]}}
    rows = [{"name": "keras", "accuracy": 0.9}, _row("tflite-int8", 0.0, 1.0, 1) | {"devices": arm_failed},
            _row("tflite-fp32", 0.0, 9.0, 9)]
    assert choices(rows)["android"].artifact == "tflite-fp32"
    rows[1]["devices"] = {"web": {"status": "failed", "platforms": ["web"]}}
    assert choices(rows)["android"].artifact == "tflite-int8"


def test_ios_recommendation_rests_on_the_verdict_when_latency_cannot_be_measured():
    rows = [{"name": "keras", "accuracy": 0.9}, _row("coreml-fp16", 0.0, None, 2_000_000, status="not validated")]
    assert choices(rows)["ios"].artifact is None and "not validated" in choices(rows)["ios"].reason
    rows[1]["status"] = "passed"
    choice = choices(rows)["ios"]
    assert choice.artifact == "coreml-fp16" and "latency not measurable here" in choice.reason
    assert "its verdict passed on 100 images (accuracy drop 0.00 points)" in choice.reason


def test_a_failed_verdict_is_never_recommended():
    rows = [{"name": "keras", "accuracy": 0.9}, _row("tflite-int8", 0.0, 1.0, 1, status="failed validation"),
            _row("tflite-fp32", 0.0, 9.0, 9)]
    assert choices(rows)["android"].artifact == "tflite-fp32"


def test_export_dir_without_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(PocketMLError, match="has no manifest.json"):
        bench(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_config_is_a_clear_error(tmp_path):
    with pytest.raises(PocketMLError, match="thread counts >= 1"):
        bench(tmp_path, tmp_path / "out", BenchConfig(threads=[0]))


def test_cli_builds_the_config():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["bench", "exp", "--out", "o", "--threads", "1,2,4", "--min-time", "0.5", "--reference", "m.keras"]
    )
    config = config_from_args(args)
    assert (config.threads, config.min_time_s, config.measure_memory) == ([1, 2, 4], 0.5, True)
    assert config.keras_model == "m.keras"
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "exp", "--out", "o", "--threads", "four"])
    with pytest.raises(PocketMLError, match=r"threads = \[0\] is not accepted; give thread counts >= 1"):
        config_from_args(parser.parse_args(["bench", "exp", "--out", "o", "--threads", "0"]))


def test_cli_reports_missing_manifest_with_exit_2(tmp_path, capsys):
    from pocketml.app.cli import main

    started = time.perf_counter()
    code = main(["bench", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 2 and "has no manifest.json" in capsys.readouterr().err
    assert time.perf_counter() - started < 60


def test_bench_section_of_the_pipeline_toml():
    from pocketml.config import from_mapping

    config = from_mapping(BenchConfig, {"threads": [1, 4], "recommend_by": "size", "keras_model": None}, "bench")
    assert (config.threads, config.recommend_by, config.keras_model) == ([1, 4], "size", None)
    with pytest.raises(PocketMLError, match="did you mean 'min_time_s'"):
        from_mapping(BenchConfig, {"min_time": 1.0}, "bench")
    with pytest.raises(PocketMLError, match="recommend_by"):
        from_mapping(BenchConfig, {"recommend_by": "cheapest"}, "bench")


def test_bare_files_are_measured_judged_against_a_reference_and_labelled_from_metadata(
        tflite_export_dir, real_model_dir, photos_dir, tmp_path):
    """Files a user already has, without an export manifest: a pocketml .tflite and the same file renamed."""
    from pocketml.benchmarks.bench import bench_files

    mine = tmp_path / "phone" / "classifier.tflite"
    mine.parent.mkdir()
    shutil.copy(tflite_export_dir / "tflite" / "model-fp16.tflite", mine)
    fp32 = tflite_export_dir / "tflite" / "model-fp32.tflite"
    config = BenchConfig(threads=[1], min_time_s=0.02, min_runs=5, measure_memory=False, probe_peak=False)
    results = bench_files([fp32, mine], tmp_path / "bench", config, data=photos_dir, reference=real_model_dir)
    rows = {r["name"]: r for r in results["rows"]}
    assert list(rows) == ["keras", "tflite-fp32", "tflite-classifier"]
    assert rows["tflite-fp32"]["status"] == PASSED and rows["tflite-fp32"]["images"] == 32  # the test split
    assert rows["tflite-fp32"]["max_abs_diff"] < 1e-4 and rows["keras"]["accuracy"] == rows["tflite-fp32"]["accuracy"]
    # A renamed file does not say its precision: its figures, but no verdict to recommend it on.
    assert rows["tflite-classifier"]["status"] == "not validated" and rows["tflite-classifier"]["max_abs_diff"] < 3e-2
    assert rows["tflite-classifier"]["latency"]["1"]["p50_ms"] > 0
    assert results["recommendations"]["android"]["artifact"] == "tflite-fp32"
    alone = bench_files([mine], tmp_path / "alone", config, data=photos_dir)  # no reference: accuracy only
    row = {r["name"]: r for r in alone["rows"]}["tflite-classifier"]
    assert row["accuracy"] == rows["tflite-classifier"]["accuracy"] and row["top1_agreement"] is None


def test_cli_bench_on_files_and_a_directory_that_is_neither(tflite_export_dir, photos_dir, tmp_path, capsys):
    from pocketml.app.cli import main

    fp32 = tflite_export_dir / "tflite" / "model-fp32.tflite"
    argv = ["bench", str(fp32), "--data", str(photos_dir), "--out", str(tmp_path / "b"), "--threads", "1",
            "--min-time", "0.02", "--no-memory"]
    assert main(argv) == 0
    assert (tmp_path / "b" / "results.json").is_file()
    assert main(["bench", str(tflite_export_dir), "--data", str(photos_dir), "--out", str(tmp_path / "c")]) == 2
    assert "--data and --labels are for model files" in capsys.readouterr().err


def test_bench_on_files_keeps_the_runtimes_banners_out_of_the_terminal(tflite_export_dir, real_model_dir, photos_dir,
                                                                        tmp_path):
    # A fresh interpreter, as a user's shell runs it: TensorFlow prints its banners when the
    # reference model first imports it, before any measuring starts.
    import os
    import subprocess

    fp32 = tflite_export_dir / "tflite" / "model-fp32.tflite"
    out = tmp_path / "b"
    argv = ["bench", str(fp32), "--reference", str(real_model_dir), "--data", str(photos_dir), "--out", str(out),
            "--threads", "1", "--min-time", "0.02", "--no-memory"]
    done = subprocess.run([sys.executable, "-c", f"import sys; from pocketml.app.cli import main; sys.exit(main({argv!r}))"],
                          capture_output=True, text=True, timeout=300,
                          # TensorFlow's INFO banners on (the test session turns them off for its own process).
                          env={**os.environ, "POCKETML_VERBOSE": "", "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert done.returncode == 0, done.stderr[-2000:]
    # Which banner TensorFlow prints depends on the CPU: oneDNN's on AVX-512 VNNI, the CPU feature guard's on AVX2.
    banners = ("oneDNN", "cpu_feature_guard")
    assert not any(b in done.stdout + done.stderr for b in banners) and "tflite-fp32" in done.stdout
    assert any(b in (out / "libraries.log").read_text() for b in banners)


def test_onnx_kernel_times_are_per_op_type_as_onnxruntime_runs_them(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from pocketml.benchmarks.quantization_bench import onnx_kernel_microseconds

    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.standard_normal((32, 3, 7, 7)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
         helper.make_node("Conv", ["nchw", "w"], ["features"], pads=[3, 3, 3, 3]),
         helper.make_node("ReduceMean", ["features"], ["pooled"], axes=[2, 3], keepdims=0)],
        "probe", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 64, 64, 3])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [1, 32])], [weights])
    path = tmp_path / "probe.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    image = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)

    kernels = onnx_kernel_microseconds(path, image)

    assert all(us > 0 for us in kernels.values())
    assert list(kernels.values()) == sorted(kernels.values(), reverse=True)
    # the 7x7 conv (5M MACs) costs more than everything else in the graph together
    assert next(iter(kernels)) == "Conv" and kernels["Conv"] > sum(kernels.values()) / 2
