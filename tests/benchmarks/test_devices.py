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


def test_instruction_regions_drop_the_warm_up_and_report_the_fewest_and_spread():
    regions = arm64.parse_regions("900 10 1\n1003 401 31\n1000 400 30\n1001 400 30\n")
    cost = arm64.region_cost(regions)
    assert cost == {"instructions": 1000, "simd": 400, "dot": 30, "threads": 1, "repeats": 3,
                    "spread": pytest.approx(3 / 1000)}
    assert arm64.region_cost(regions[:1]) == {}
    with pytest.raises(PocketMLError, match="line 2 is not 'total simd dot'"):
        arm64.parse_regions("1 2 3\n1 2\n")


def test_every_file_is_shared_out_over_the_processes_and_each_cost_counted_once():
    groups = arm64.deal([10, 3, 1], workers=2, cost=True)
    assert len(groups) == 2
    for file, count in enumerate([10, 3, 1]):  # each file's images, once, in order, over the processes
        shares = sorted((u.start, u.stop) for group in groups for u in group if u.file == file and u.stop > u.start)
        assert shares[0][0] == 0 and shares[-1][1] == count
        assert all(a[1] == b[0] for a, b in zip(shares, shares[1:], strict=False))
        assert sum(u.cost for group in groups for u in group if u.file == file) == 1  # counted in one process
    assert [u.file for u in groups[1] if u.cost] == [1]  # the costed calls are spread too: file f in process f % 2
    assert sum(u.stop - u.start for u in groups[0]) in (7, 8)  # balanced by images, not by file
    assert arm64.deal([5], workers=8, cost=False) == [[arm64.Unit(0, i, i + 1, False)] for i in range(5)]
    assert not any(u.cost for group in arm64.deal([4, 4], workers=2, cost=False) for u in group)


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


def plan_for(precision: str, host: np.ndarray, reference: np.ndarray, moved: float, every_image: bool = False):
    from pocketml.export.judge import Judge

    sample = np.array([0, 1])
    on_sample = host[sample] + np.float32(moved) * np.array([1, -1], np.float32)
    entry = on_device.Entry(None, "tflite", precision, {})
    judge = Judge(np.zeros((len(host), 2, 2, 3), np.uint8), reference, None)
    return on_device.DevicePlan(entry, host, sample, on_sample, judge, every_image)


def test_a_file_that_differs_runs_on_the_device_the_images_whose_outcome_could_change():
    # int8 (agreement only): images 2..9 clear, image 5 a near tie on the host; the sample moved outputs by 0.02
    host = np.array([[0.9, 0.1]] * 10, np.float32)
    host[5] = [0.52, 0.48]
    plan = plan_for("int8", host, host.copy(), moved=0.02)
    assert plan.reach == pytest.approx(on_device.REACH * 0.02)
    assert list(plan.rest) == [5] and not plan.every  # 0.04 < 2 x reach: the top two could cross there
    merged = plan.outputs(np.array([[0.4, 0.6]], np.float32))
    assert merged[5].tolist() == pytest.approx([0.4, 0.6]) and merged[0].tolist() == pytest.approx([0.92, 0.08])
    assert merged[7].tolist() == pytest.approx(host[7].tolist())  # not run there: its host output stands
    assert "judged on the device on 3 of 10" in plan.basis(10)
    assert list(plan_for("int8", host, host.copy(), moved=0.01, every_image=True).rest) == list(range(2, 10))


def test_a_sample_that_barely_moved_still_leaves_room_for_a_sparse_move_elsewhere():
    # int8 outputs move in sparse steps: a sample moved by 1e-4 says little about the other images, so the
    # reach is at least a quarter of what the precision may move (0.2 / 4), and a 0.08 margin is at risk
    host = np.array([[0.9, 0.1]] * 10, np.float32)
    host[7] = [0.54, 0.46]
    plan = plan_for("int8", host, host.copy(), moved=1e-4)
    assert plan.reach == pytest.approx(on_device.MOVE_SHARE * 0.2) and list(plan.rest) == [7]


def test_images_near_a_bound_of_the_budget_run_on_the_device_too():
    # fp32 allows max|dp| 1e-4: image 6 already moved 9e-5 from Keras on the host, so a 4e-5 reach could cross it
    reference = np.array([[0.9, 0.1]] * 10, np.float32)
    host = reference.copy()
    host[6] += np.float32(9e-5) * np.array([1, -1], np.float32)
    assert list(plan_for("fp32", host, reference, moved=1e-5).rest) == [6]


def test_when_most_images_are_at_risk_every_image_runs_on_the_device():
    host = np.array([[0.51, 0.49]] * 10, np.float32)
    plan = plan_for("int8", host, host.copy(), moved=0.01)
    assert plan.every and list(plan.rest) == list(range(2, 10))
    assert "all 10 evaluation images" in plan.basis(10)


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
