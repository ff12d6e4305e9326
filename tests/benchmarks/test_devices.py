"""Devices, the pure parts (every machine): the registry, arm64's cpuinfo text and core choice, the
instruction-count regions, the sampling policy, the phone-estimate fit, recommendations and report
columns by device, and set-up's one-line errors. The emulated tier is tests/benchmarks/test_arm64_slow.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from pocketml.benchmarks import estimates, on_device, recommend, report
from pocketml.benchmarks.devices import arm64, cache_dir, device_module, parse_device

from pocketml.app.cli import main
from pocketml.artifact import PASSED
from pocketml.errors import PocketMLError


def test_device_specs_name_a_kind_and_one_of_its_variants():
    assert parse_device("arm64") == ("arm64", "cortex-a76")
    assert parse_device("arm64:neoverse-n1") == ("arm64", "neoverse-n1")
    with pytest.raises(PocketMLError, match="no variant 'max'.*cortex-a76"):
        parse_device("arm64:max")  # qemu 7.2's -cpu max computes wrong int8: never offered
    with pytest.raises(PocketMLError, match="unknown device 'gpu'; known devices: arm64"):
        device_module("gpu")


def test_cache_dir_follows_pocketml_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("POCKETML_CACHE", str(tmp_path))
    assert cache_dir("arm64") == tmp_path / "arm64"
    monkeypatch.delenv("POCKETML_CACHE")
    assert cache_dir("arm64").parts[-3:] == (".cache", "pocketml", "arm64")


def test_cpuinfo_text_describes_the_chosen_core_as_an_arm64_kernel_does():
    text = arm64.cpuinfo_text(arm64.CORES["cortex-a76"], cpus=2)
    blocks = [b for b in text.split("\n\n") if b.strip()]
    assert len(blocks) == 2 and blocks[1].startswith("processor\t: 1\n")
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in blocks[0].splitlines())}
    assert {k: fields[k] for k in ("CPU implementer", "CPU part", "CPU architecture")} == {
        "CPU implementer": "0x41", "CPU part": "0xd0b", "CPU architecture": "8"}
    assert "asimddp" in fields["Features"].split()  # the dot-product kernels are chosen from this flag
    assert "0xd0c" in arm64.cpuinfo_text(arm64.CORES["neoverse-n1"])


def test_instruction_regions_drop_the_warm_up_and_report_the_median_and_spread():
    regions = arm64.parse_regions("900 10 1\n1000 400 30\n1003 401 30\n1001 400 30\n")
    cost = arm64.region_cost(regions)
    assert cost == {"instructions": 1001, "simd": 400, "dot": 30, "threads": 1, "repeats": 3,
                    "spread": pytest.approx(3 / 1001)}
    assert arm64.region_cost(regions[:1]) == {}
    with pytest.raises(PocketMLError, match="line 2 is not 'total simd dot'"):
        arm64.parse_regions("1 2 3\n1 2\n")


def test_files_are_dealt_to_processes_largest_first(tmp_path):
    files = []
    for name, size in (("a", 10), ("b", 1000), ("c", 400), ("d", 500)):
        (tmp_path / name).write_bytes(b"x" * size)
        files.append(tmp_path / name)
    assert arm64.split_files(files, 2) == [[1], [0, 2, 3]]
    assert arm64.split_files(files[:1], 4) == [[0]]


def test_status_of_an_empty_cache_lists_every_step(monkeypatch, tmp_path):
    monkeypatch.setenv("POCKETML_CACHE", str(tmp_path))
    state = arm64.status("cortex-a76")
    assert not state.ready
    assert [line.split(":")[0] for line in state.missing if "not prepared" in line] == [
        "root", "wheels", "core-cortex-a76", "plugin"]


def test_setup_names_every_missing_tool_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("POCKETML_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing installed
    with pytest.raises(PocketMLError) as caught:
        arm64.setup("cortex-a76", log=lambda line: None)
    message = str(caught.value)
    assert "\n" not in message and "apt-get install qemu-user" in message and "debootstrap" in message
    assert "gcc" in message
    assert not (tmp_path / "cache" / "arm64" / "stamps").exists()  # nothing half-done


def test_cli_device_status_of_an_unknown_core_is_a_one_line_error(capsys):
    assert main(["device", "status", "arm64:max"]) == 1
    assert "arm64:max: unavailable: device 'arm64' has no variant 'max'" in capsys.readouterr().out
    assert main(["device", "setup", "phone"]) == 2


def test_stratified_sample_takes_every_class_in_turn():
    truth = np.array([0] * 20 + [1] * 3 + [2] * 10)
    chosen = on_device.stratified_sample(truth, len(truth), count=8)
    assert len(chosen) == 8 and set(truth[chosen]) == {0, 1, 2}
    assert list(chosen) == sorted(chosen)
    assert list(on_device.stratified_sample(None, 5, count=8)) == [0, 1, 2, 3, 4]
    assert len(on_device.stratified_sample(None, 100, count=16)) == 16


def test_host_comparison_says_bit_identical_or_by_how_much():
    host = np.array([[0.25, 0.75]], np.float32)
    assert on_device.host_comparison(host.copy(), host) == {"images": 1, "max_abs_diff": 0.0, "bit_identical": True}
    moved = on_device.host_comparison(host + np.float32(2e-7), host)
    assert not moved["bit_identical"] and moved["max_abs_diff"] == pytest.approx(2e-7, rel=0.1)
    assert moved["max_abs_diff"] <= on_device.HOST_EPSILON


def point(ms, instructions, family="f"):
    return {"model": "m", "family": family, "precision": "fp32", "runtime": "tflite", "threads": 4, "ms": ms,
            "source": "s", "instructions": instructions}


def test_calibration_fit_is_a_geometric_mean_and_leave_one_out_is_honest():
    exact = [point(2.0, 2e6), point(4.0, 4e6), point(8.0, 8e6)]
    assert estimates.fit_factor(exact) == pytest.approx(1e-6)
    assert estimates.leave_one_out(exact) == pytest.approx([0, 0, 0])
    noisy = [point(1.0, 1e6), point(2.0, 1e6), point(4.0, 1e6)]
    errors = estimates.leave_one_out(noisy)
    assert errors[0] == pytest.approx(math.sqrt(8) - 1)  # fit on 2 and 4 ms: sqrt(8) ms for the first
    assert estimates.median([0.1, 0.5, 0.2]) == 0.2 and estimates.median([0.1, 0.2]) == pytest.approx(0.15)


def device_row(name, speed, status=PASSED, fmt="tflite", size=100):
    return {"name": name, "format": fmt, "status": PASSED, "accuracy_drop_points": 0.0, "top1_agreement": 1.0,
            "bytes": size, "images": 10, "latency": {"1": {"p50_ms": 1.0 if name.endswith("fp32") else 5.0}},
            "devices": {"arm64:cortex-a76": {"status": status, "speed": speed, "cost": {"instructions": 1e6},
                                             "estimates": []}}}


def test_recommendation_ranks_by_the_device_and_never_ships_a_file_failing_there():
    keras = {"name": "keras", "format": "keras"}
    rows = [keras, device_row("tflite-fp32", 10.0, size=400), device_row("tflite-int8", 4.0)]
    host = {c.platform: c for c in recommend.choose(rows, "latency")}
    by_device = {c.platform: c for c in recommend.choose(rows, "latency", devices={"android": "arm64:cortex-a76"})}
    assert host["android"].artifact == "tflite-fp32"  # host wall time
    assert by_device["android"].artifact == "tflite-int8" and "fastest on arm64:cortex-a76" in by_device["android"].reason
    rows[2]["devices"]["arm64:cortex-a76"]["status"] = "failed validation"
    again = {c.platform: c for c in recommend.choose(rows, "latency", devices={"android": "arm64:cortex-a76"})}
    assert again["android"].artifact == "tflite-fp32"


def test_report_labels_host_timings_and_adds_device_columns():
    row = {"name": "tflite-int8", "format": "tflite", "precision": "int8", "path": "p", "status": PASSED,
           "reason": None, "bytes": 1000, "zip_bytes": 900, "params": 1, "macs": 1, "images": 10, "accuracy": 0.9,
           "accuracy_drop_points": 0.0, "top1_agreement": 1.0, "flips": 0, "max_abs_diff": 0.01,
           "mean_abs_diff": 0.001, "latency": {"1": {"p50_ms": 2.0}}, "latency_note": None, "throughput": {},
           "memory": None, "recommended": [], "notes": [], "runtime": "r",
           "estimates": [{"device": "Pixel 3 class", "estimate_ms": 3.2}],
           "devices": {"arm64:cortex-a76": {
               "status": PASSED, "reason": None, "basis": "host verdict stands: outputs bit-identical", "images": 10,
               "accuracy": 0.9, "top1_agreement": 1.0, "max_abs_diff": 0.01,
               "vs_host": {"images": 16, "max_abs_diff": 0.0, "bit_identical": True},
               "cost": {"instructions": 3_230_000, "simd": 2_000_000, "dot": 700_000, "spread": 0.0},
               "estimates": [{"device": "Pixel 3 class", "estimate_ms": 3.2}]}}}
    results = {"rows": [row], "devices": ["arm64:cortex-a76"]}
    columns, table = report.summary_rows(results)
    assert "host p50 ms @1" in columns and "p50 ms @1" not in columns
    cells = dict(zip(columns, table[0], strict=True))
    assert cells["arm64:cortex-a76 verdict"] == "passed (host's)"
    assert cells["arm64:cortex-a76 cost/inference"] == "3.23 M (0.70 M dot)"
    assert cells["arm64:cortex-a76 est. ms"] == 3.2
    csv_columns, flat = report.csv_rows(results)
    assert flat[0]["arm64:cortex-a76:instructions"] == 3_230_000
    assert flat[0]["arm64:cortex-a76:bit_identical_to_host"] is True
    assert "arm64:cortex-a76:estimate_ms[Pixel 3 class]" in csv_columns


def test_bench_refuses_an_unknown_or_unprepared_device_before_measuring(monkeypatch, tmp_path):
    from pocketml.benchmarks.bench import check_devices

    from pocketml.config import from_mapping
    from pocketml.configs.bench import BenchConfig

    monkeypatch.setenv("POCKETML_CACHE", str(tmp_path))
    config = from_mapping(BenchConfig, {"devices": ["arm64"]}, "bench")  # `[bench] devices = ["arm64"]`
    with pytest.raises(PocketMLError, match=r"device arm64:cortex-a76 is not ready .*pocketml device setup arm64"):
        check_devices(config)
    with pytest.raises(PocketMLError, match="no variant 'max'"):
        check_devices(BenchConfig(devices=["arm64:max"]))
    check_devices(BenchConfig())  # no device: nothing to prepare
