"""Quantisation before -> after the recovery ladder, per format, on two real models, with NNCF's
accuracy-controlled int8 as the anchor on the same ONNX fp32 file and the same images.

    python benchmarks/quantization_bench.py      # no arguments; ends with RESULT {json}

Models (built again on every run under runs/quantization_bench/, so the figures are the current code's):
- demo: EfficientNet-Lite0 128 px on the glyphs A-J (`pocketml run examples/demo.toml --to train`);
- hotdog: MobileNetV2 a0.35 96 px, ImageNet weights from ../shared/data/weights, trained by
  `pocketml.train` on ../shared/data/hotdog (200 train photos, 50 val photos judge).
Images: pocketml.dataset.choose_images (calibration from train, evaluation from test/val, disjoint).
Per format: fp32 (the speed and size baseline), "before" (the recipe pocketml shipped before the
ladder: TFLite MinMax int8, ONNX U8S8 reduce_range, Core ML 6-bit palettes) and "after" (the ladder's
choice), each judged once by export.judge.Judge; latency is the p50 of batch-1 calls at one thread,
each runtime's files timed in turn over 5 rounds once all are built (median per file). For ONNX
fp32 and the ladder's choice, `kernel_us` says where that time goes per op type, from onnxruntime's
profiler (on narrow networks the int8 convolutions are no faster in sum than fp32's).
NNCF runs in the bench venv (`make bench-env`; POCKETML_BENCH_PYTHON overrides where its python is).
Every TFLite and ONNX file is also judged and costed on the emulated ARM phone core cortex-a76 (bench's
device policy, benchmarks/on_device.py; `pocketml device setup arm64` first, else said and skipped): the
speed goal is judged there on instructions per inference beside the host's x86 timings, because the x86
int8 kernels are not the phone's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pocketml.benchmarks.common import PROJECT_ROOT, machine_info, print_result, shared_data  # noqa: E402

CACHE = PROJECT_ROOT / "runs" / "quantization_bench"
MOBILENET_V2_035 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
SPEEDUP_GOAL = 1.5  # an integer file at least this much faster than its fp32 at one thread
SIZE_GOAL = 0.30  # a Core ML file at most this fraction of its fp32's bytes
ARM_CORE = "cortex-a76"  # the phone core the integer files' speed goal is judged on


def demo_model() -> tuple[Path, Path]:
    import pocketml

    run_dir = CACHE / "demo"
    # force: a model trained by older code must not stand in for what the demo trains today.
    pocketml.run(PROJECT_ROOT / "examples" / "demo.toml", run_dir, to_stage="train", force=True)
    return run_dir / "model", run_dir / "dataset"


def hotdog_model() -> tuple[Path, Path]:
    import pocketml

    data, out = shared_data("hotdog"), CACHE / "hotdog"
    pocketml.train(data, out, backbone="mobilenet_v2", alpha=0.35, image_size=96, seed=0,
                   weights=str(shared_data("weights", MOBILENET_V2_035)), epochs_finetune=0, feature_cache_copies=1)
    return out, data


LATENCY_REPEATS = 5  # rounds of timing, median taken per file: one timing of a 0.1 ms model moved by 30 % between runs


def interleaved_latencies(files: list[tuple], image) -> None:
    """Time every (module, path, row) of one runtime in turn, LATENCY_REPEATS rounds of the ladder's
    own p50 timing (export.quantization.search.latency_ms), and set each row's latency_ms to its
    median. Interleaved, a drift in the machine's load lands on every file of a round alike, so the
    ratios to fp32 hold; timed one file after another, it landed on whichever file was being timed."""
    from pocketml.export.quantization.search import latency_ms

    samples: dict[int, list] = {i: [] for i in range(len(files))}
    for _ in range(LATENCY_REPEATS):
        for i, (module, path, _row) in enumerate(files):
            samples[i].append(latency_ms(module, path, image))
    for i, (_module, _path, row) in enumerate(files):
        row["latency_ms"] = None if samples[i][0] is None else round(float(np.median(samples[i])), 4)


PROFILED_RUNS = 300  # batch-1 runs under onnxruntime's profiler; each node's median over them is kept


def onnx_kernel_microseconds(path: Path, image) -> dict:
    """Where one batch-1 call of an ONNX file spends its time at one thread: per op type (as
    onnxruntime runs it after its own fusions), the sum over nodes of each node's median kernel time
    in microseconds, from onnxruntime's profiler. The profiler adds a little to every node, so the
    figures are for comparing op types and files, not for adding up to the latency."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.enable_profiling, options.log_severity_level = True, 3
    with tempfile.TemporaryDirectory(prefix="pocketml-qbench-profile-") as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: image[None].astype(np.float32)}
        for _ in range(PROFILED_RUNS):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_node: dict[tuple, list] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_node.setdefault((event["name"], event["args"]["op_name"]), []).append(event["dur"])
    totals: dict[str, float] = {}
    for (_name, op_type), durations in per_node.items():
        totals[op_type] = totals.get(op_type, 0.0) + float(np.median(durations))
    return {op: round(us, 1) for op, us in sorted(totals.items(), key=lambda item: -item[1])}


def judged(module, precision: str, path: Path, judge, seconds: float, details: dict | None = None) -> dict:
    from pocketml.fsutil import tree_bytes

    parity = judge.of(precision, module.load(path))
    details = details or {}
    return {"precision": precision, "status": parity.status, "agreement": parity.top1_agreement, "flips": parity.flips,
            "images": parity.images, "agreement_low": round(parity.agreement_low, 4) if parity.agreement_low else None,
            "accuracy_drop_points": parity.accuracy_drop_points, "latency_ms": None, "file": (module, path),
            "bytes": tree_bytes(path), "seconds": round(seconds, 1), "integer_only": details.get("integer_only"),
            "float_ops": len(details.get("float_ops") or []),
            "chosen": (details.get("search") or {}).get("chosen"),
            "ladder": [f"{s['step']}: {s['status']} {s['flips']}/{s['images']}" for s in (details.get("search") or {}).get("ladder", [])],
            "search_seconds": (details.get("search") or {}).get("seconds"),
            "worst": [next(iter(row.values())) for row in (details.get("sensitivity") or [])[:3]]}


def timed(call, *args, **kwargs):
    start = time.perf_counter()
    result = call(*args, **kwargs)
    return result, time.perf_counter() - start


def tflite_rows(source, calibration, judge, work: Path) -> dict:
    from pocketml.export import tflite

    rows = {}
    fp32 = work / "tflite-fp32.tflite"
    _, seconds = timed(tflite.convert, source.model, source.spec, "fp32", fp32, None)
    rows["fp32"] = judged(tflite, "fp32", fp32, judge, seconds)
    before = work / "tflite-before.tflite"
    _, seconds = timed(lambda: before.write_bytes(tflite.int8_converter(source.model, source.spec, calibration).convert()))
    rows["before"] = judged(tflite, "int8", before, judge, seconds, {"integer_only": True})
    for name, precision in (("after", "int8"), ("strict", "int8-uint8io")):
        path = work / f"tflite-{precision}.tflite"
        converted, seconds = timed(tflite.convert, source.model, source.spec, precision, path, calibration, judge=judge)
        rows[name] = judged(tflite, precision, path, judge, seconds, converted.details)
    return rows


def onnx_rows(source, calibration, judge, work: Path) -> dict:
    from pocketml.export import onnx

    rows = {}
    fp32 = work / "onnx-fp32.onnx"
    _, seconds = timed(lambda: onnx.convert(source.model, source.spec, "fp32", fp32, None))
    rows["fp32"] = judged(onnx, "fp32", fp32, judge, seconds)
    before = work / "onnx-before.onnx"
    proto, seconds = timed(lambda: onnx.static_int8_model(onnx.float32_model(source.model, source.spec), calibration,
                                                          reduce_range=True))
    before.write_bytes(onnx.finished(proto, source.spec, "int8"))
    rows["before"] = judged(onnx, "int8", before, judge, seconds)
    after = work / "onnx-int8.onnx"
    converted, seconds = timed(lambda: onnx.convert(source.model, source.spec, "int8", after, calibration, judge=judge))
    rows["after"] = judged(onnx, "int8", after, judge, seconds, converted.details)
    rows["after"]["cpu"] = converted.details.get("cpu", {}).get("why")
    for row, path in ((rows["fp32"], fp32), (rows["after"], after)):
        row["kernel_us"] = onnx_kernel_microseconds(path, judge.images[0])
    return rows


def coreml_rows(source, calibration, judge, work: Path) -> dict:
    from pocketml.export import coreml

    rows = {}
    for name, precision in (("fp32", "fp32"), ("before", "palettized-6bit"), ("int8-weights", "int8-weights")):
        path = work / f"coreml-{precision}.mlpackage"
        _, seconds = timed(coreml.convert, source.model, source.spec, precision, path, None)
        rows[name] = judged(coreml, precision, path, judge, seconds)
    path = work / "coreml-compressed.mlpackage"
    converted, seconds = timed(lambda: coreml.convert(source.model, source.spec, "compressed", path, calibration, judge=judge))
    rows["after"] = judged(coreml, "compressed", path, judge, seconds, converted.details)
    for row in rows.values():
        row["size_vs_fp32"] = round(row["bytes"] / rows["fp32"]["bytes"], 3)
    return rows


def bench_python() -> Path | None:
    configured = os.environ.get("POCKETML_BENCH_PYTHON")
    path = Path(configured) if configured else PROJECT_ROOT / ".venv-bench" / "bin" / "python"
    return path if path.is_file() else None


def nncf_row(fp32: Path, calibration, judge, work: Path) -> dict:
    """NNCF's quantize_with_accuracy_control on the same fp32 file and images, judged by the same Judge."""
    from pocketml.export import onnx

    python = bench_python()
    if python is None:
        return {"status": "not run: no bench venv (make bench-env, or set POCKETML_BENCH_PYTHON)"}
    data, out = work / "nncf-data.npz", work / "nncf-int8.onnx"
    np.savez(data, calibration=calibration, evaluation=judge.images, reference=judge.reference)
    script = PROJECT_ROOT / "benchmarks" / "nncf_anchor.py"
    done = subprocess.run([str(python), str(script), str(fp32), str(data), str(out)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ""}, timeout=1800)
    if done.returncode != 0:
        return {"status": f"failed: {(done.stderr.strip().splitlines() or ['?'])[-1][:300]}"}
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    return {**judged(onnx, "int8", out, judge, facts["seconds"]), "nncf": facts}


def model_figures(name: str, model_dir: Path, dataset: Path) -> dict:
    from pocketml.export.judge import judge_for
    from pocketml.export.keras_model import KerasPredictor
    from pocketml.export.source import load_source

    from pocketml.dataset import choose_images, load_images

    source = load_source(model_dir)
    calibration_set, evaluation_set = choose_images(dataset, dataset)
    calibration = load_images(calibration_set.paths, source.spec.image_size)
    judge = judge_for(evaluation_set, KerasPredictor(source.model, source.spec.image_size), list(source.spec.labels))
    figures = {"calibration_images": len(calibration), "evaluation_images": len(judge.images),
               "evaluation_split": evaluation_set.split}
    with tempfile.TemporaryDirectory(prefix=f"pocketml-qbench-{name}-") as work:
        work = Path(work)
        for fmt, rows in (("tflite", tflite_rows), ("onnx", onnx_rows), ("coreml", coreml_rows)):
            print(f"{name}: {fmt} ...", flush=True)
            figures[fmt] = rows(source, calibration, judge, work)
        print(f"{name}: nncf ...", flush=True)
        figures["nncf"] = nncf_row(work / "onnx-fp32.onnx", calibration, judge, work)
        print(f"{name}: arm64:{ARM_CORE} ...", flush=True)
        figures["arm"] = arm_figures(figures, judge)
        print(f"{name}: timing ...", flush=True)
        runtime_rows = [*figures["onnx"].values(), *([figures["nncf"]] if "file" in figures["nncf"] else [])]
        for group in (list(figures["tflite"].values()), runtime_rows, list(figures["coreml"].values())):
            interleaved_latencies([(*row.pop("file"), row) for row in group], judge.images[0])
    figures["goals"] = goals(figures)
    return figures


def arm_figures(figures: dict, judge) -> str:
    """Each TFLite and ONNX row's verdict and instructions per inference on the emulated ARM core, as
    row["arm"]; returns what ran (or why not)."""
    from pocketml.benchmarks import on_device
    from pocketml.benchmarks.devices import arm64

    state = arm64.status(ARM_CORE)
    if not state.ready:
        return f"not run: arm64:{ARM_CORE} is not ready ({state.missing[0]})"
    rows = [row for fmt in ("tflite", "onnx") for row in figures[fmt].values()]
    entries = [on_device.Entry(row["file"][1], fmt, row["precision"], {
        "status": row["status"], "images": row["images"], "top1_agreement": row["agreement"], "flips": row["flips"],
        "accuracy_drop_points": row["accuracy_drop_points"]}) for fmt in ("tflite", "onnx") for row in figures[fmt].values()]
    target = on_device.targets([f"arm64:{ARM_CORE}"])[0]
    for row, record in zip(rows, on_device.judge_on(target, entries, judge), strict=True):
        cost, first = record.get("cost") or {}, (record.get("estimates") or [{}])[0]
        row["arm"] = {"status": record["status"], "basis": record.get("basis") or record.get("reason"),
                      "instructions": cost.get("instructions"), "dot": cost.get("dot"),
                      "estimate_ms": first.get("estimate_ms"), "estimate_error": first.get("error")}
    return f"arm64:{ARM_CORE}"


def _arm_ratio(rows: dict, name: str) -> float | None:
    """How many times fewer instructions per inference than the format's fp32 on the ARM core."""
    fp32, row = (rows["fp32"].get("arm") or {}).get("instructions"), (rows.get(name, {}).get("arm") or {}).get("instructions")
    return round(fp32 / row, 2) if fp32 and row else None


def _speedup(rows: dict, name: str) -> float | None:
    fp32, row = rows["fp32"].get("latency_ms"), rows.get(name, {}).get("latency_ms")
    return round(fp32 / row, 2) if fp32 and row else None


def goals(figures: dict) -> dict:
    """The issue's goals, each as measured here."""
    found = {}
    for fmt in ("tflite", "onnx"):
        rows = figures[fmt]
        for name, row in rows.items():
            row["speedup_vs_fp32"] = _speedup(rows, name)
        passing = [row for name, row in rows.items() if name != "fp32" and row["status"] == "passed"
                   and (row["speedup_vs_fp32"] or 0) >= SPEEDUP_GOAL]
        found[f"{fmt}_passing_integer_{SPEEDUP_GOAL:g}x"] = bool(passing)
        for name, row in rows.items():
            row["arm_fewer_instructions_x"] = _arm_ratio(rows, name)
        on_arm = [row for name, row in rows.items() if name != "fp32" and (row.get("arm") or {}).get("status") == "passed"
                  and (row["arm_fewer_instructions_x"] or 0) >= SPEEDUP_GOAL]
        if any(row.get("arm") for row in rows.values()):
            found[f"{fmt}_passing_integer_{SPEEDUP_GOAL:g}x_fewer_instructions_on_{ARM_CORE}"] = bool(on_arm)
    coreml = figures["coreml"]
    found["coreml_passing_within_30pct"] = any(row["status"] == "passed" and row["size_vs_fp32"] <= SIZE_GOAL
                                               for name, row in coreml.items() if name != "fp32")
    ours, nncf = figures["onnx"]["after"], figures["nncf"]
    if "agreement" in nncf:
        found["onnx_matches_nncf"] = bool(ours["agreement"] >= nncf["agreement"] and ours["latency_ms"] <= nncf["latency_ms"])
    return found


def print_summary(name: str, figures: dict) -> None:
    print(f"\n{name}: calibration {figures['calibration_images']} train images, verdicts on "
          f"{figures['evaluation_images']} {figures['evaluation_split']} images")
    print(f"{'file':22s} {'verdict':8s} {'agree':>14s} {'drop':>6s} {'ms@1':>7s} {'x fp32':>7s} {'MB':>6s} {'float':>5s} {'s':>6s}")
    for fmt in ("tflite", "onnx", "coreml", "nncf"):
        rows = figures[fmt] if fmt != "nncf" else {"anchor": figures["nncf"]}
        for row_name, row in rows.items():
            if "agreement" not in row:
                print(f"{fmt + ' ' + row_name:22s} {row.get('status')}")
                continue
            agree = f"{row['agreement']:.3f} ({row['flips']}/{row['images']})"
            speed = row.get("speedup_vs_fp32") or row.get("size_vs_fp32")
            print(f"{fmt + ' ' + row_name:22s} {row['status']:8s} {agree:>14s} {row['accuracy_drop_points'] or 0:6.2f} "
                  f"{row['latency_ms'] or float('nan'):7.3f} {speed or float('nan'):7.2f} {row['bytes'] / 1e6:6.2f} "
                  f"{row['float_ops']:5d} {row['seconds']:6.1f}")
            if row.get("arm"):
                arm = row["arm"]
                print(f"{'':22s} {ARM_CORE}: {arm['status']}, {(arm['instructions'] or 0) / 1e6:.2f} M instructions "
                      f"({row.get('arm_fewer_instructions_x')}x fewer than fp32; host x86 {row.get('speedup_vs_fp32')}x), "
                      f"estimate {arm['estimate_ms'] or float('nan'):.2f} ms ({arm['estimate_error']})")
            if row.get("ladder"):
                print(f"{'':22s} ladder: {' -> '.join(row['ladder'])}")
            if row.get("kernel_us"):
                top = ", ".join(f"{op} {us:.0f}" for op, us in list(row["kernel_us"].items())[:4])
                print(f"{'':22s} profiled kernel µs: {top}")


def main() -> None:
    started = time.perf_counter()
    results = {}
    for name, build in (("demo", demo_model), ("hotdog", hotdog_model)):
        model_dir, dataset = build()
        results[name] = model_figures(name, model_dir, dataset)
        print_summary(name, results[name])
    print_result({"benchmark": "quantization", "machine": machine_info(), "load_avg": os.getloadavg(),
                  "seconds": round(time.perf_counter() - started, 1), "models": results})


if __name__ == "__main__":
    main()
