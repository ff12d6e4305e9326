"""The phone's own kernels, measured: every TFLite and ONNX file of two real models judged and costed on
the emulated cortex-a76 through `pocketml bench --device arm64`, beside the host.

    python benchmarks/arm64_bench.py      # no arguments; needs `pocketml device setup arm64`; ends with RESULT {json}

Models (exported with every TFLite and ONNX precision into runs/arm64_bench/, kept between runs):
- hotdog: MobileNetV2 a0.35 96 px, ImageNet weights from ../shared/data/weights, head fitted on
  ../shared/data/hotdog/train (tests/models.py), judged on its val photos;
- lite0: EfficientNet-Lite0 128 px with the packaged ImageNet weights (the demo's backbone and size),
  head fitted on tests/photos.py's photos, judged on their test split.
Per model: bench without and with the device (the seconds the device adds), again with every evaluation
image on the device (`--device-images all`: the verdicts guided judging must match, and the largest
device move it assumed away), then every file's cost again in a fresh emulated process (counts must
repeat within 0.1 %). Prints the issue's goal lines.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pocketml.benchmarks.common import PROJECT_ROOT, machine_info, print_result, shared_data  # noqa: E402

WORK = PROJECT_ROOT / "runs" / "arm64_bench"
CORE = "cortex-a76"
GOAL_RATIO = 1.5  # the hot-dog ONNX int8 file: at least this many times fewer instructions than its fp32
MOBILENET_V2_035 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"


def hotdog_export() -> Path:
    from tests.models import save_real_classifier

    data = shared_data("hotdog")
    return exported("hotdog", lambda d: save_real_classifier(d, shared_data("weights", MOBILENET_V2_035), 96,
                                                             data / "train"), data)


def lite0_export() -> Path:
    from tests.models import save_lite_classifier
    from tests.photos import write_photo_folder

    photos = WORK / "photos"
    if not (photos / "test").is_dir():
        write_photo_folder(photos)
    return exported("lite0", lambda d: save_lite_classifier(d, photos / "train", size=128), photos)


def exported(name: str, save_model, data: Path) -> Path:
    from pocketml.export.exporter import export_model

    from pocketml.configs.export import ExportConfig

    model_dir, export_dir = WORK / name / "model", WORK / name / "export"
    if not (export_dir / "manifest.json").is_file():
        model_dir.mkdir(parents=True, exist_ok=True)
        save_model(model_dir)
        export_model(model_dir, export_dir, ExportConfig(formats=["tflite", "onnx"], calibration=data,
                                                         validation_images=data))
    return export_dir


def bench_once(export_dir: Path, out: Path, devices: list[str], device_images: str = "guided") -> tuple[dict, float]:
    from pocketml.benchmarks.bench import bench

    from pocketml.configs.bench import BenchConfig

    config = BenchConfig(threads=[1], min_time_s=0.5, measure_memory=False, devices=devices,
                         device_images=device_images)
    started = time.perf_counter()
    results = bench(export_dir, out, config)
    return results, time.perf_counter() - started


def recount(export_dir: Path, rows: list[dict]) -> dict[str, float]:
    """Each file counted in two fresh emulated processes on the same image: their relative difference.
    (Compared with bench's count, made on its first sample image, a count on another image differed by up to
    0.33 % on the Lite0 export: the repeat is measured on one image, twice.)"""
    import numpy as np
    from pocketml.benchmarks.devices import arm64

    label = f"arm64:{CORE}"
    costed = [r for r in rows if (r.get("devices", {}).get(label) or {}).get("cost")]
    image = np.random.default_rng(0).integers(0, 256, (1, *rows_size(export_dir), 3), dtype=np.uint8)
    paths, formats = [export_dir / r["path"] for r in costed], [r["format"] for r in costed]
    first, second = (arm64.run(paths, formats, image, CORE) for _ in range(2))
    return {r["name"]: abs(a.cost["instructions"] - b.cost["instructions"]) / a.cost["instructions"]
            for r, a, b in zip(costed, first, second, strict=True) if a.cost and b.cost}


def guided_against_all(guided: list[dict], every: list[dict]) -> dict:
    """The guided judging (bench's default) checked against every evaluation image on the device: per file it
    judged there, whether the verdicts match and the largest device move over all images / the reach it assumed."""
    label = f"arm64:{CORE}"
    all_by_name = {row["name"]: row["devices"].get(label) or {} for row in every[1:]}
    files = {}
    for row in guided[1:]:
        record = row["devices"].get(label) or {}
        if record.get("reach") is None:
            continue
        full = all_by_name.get(row["name"], {})
        largest = (full.get("vs_host_judged") or {}).get("max_abs_diff")
        files[row["name"]] = {"guided": record["status"], "all": full.get("status"), "device_images": record["device_images"],
                              "images": record["images"], "reach": record["reach"], "largest_move_all": largest,
                              "largest_move_over_reach": round(largest / record["reach"], 3) if largest is not None else None}
    return files


def rows_size(export_dir: Path) -> tuple[int, int]:
    from pocketml.artifact import ExportManifest

    return tuple(ExportManifest.load(export_dir).model.image_size)


def model_figures(name: str, export_dir: Path) -> dict:
    label = f"arm64:{CORE}"
    host, host_s = bench_once(export_dir, WORK / name / "bench-host", [])
    with_device, device_s = bench_once(export_dir, WORK / name / "bench-arm64", ["arm64"])
    every, every_s = bench_once(export_dir, WORK / name / "bench-arm64-all", ["arm64"], "all")
    guided_check = guided_against_all(with_device["rows"], every["rows"])
    files = {}
    for row in with_device["rows"][1:]:
        record = row.get("devices", {}).get(label)
        if record is None:
            continue
        cost = record.get("cost") or {}
        files[row["name"]] = {
            "host_verdict": row["status"], "arm_verdict": record["status"], "basis": record.get("basis") or record.get("reason"),
            "bit_identical": (record.get("vs_host") or {}).get("bit_identical"),
            "vs_host_max_abs_diff": (record.get("vs_host") or {}).get("max_abs_diff"),
            "instructions": cost.get("instructions"), "simd": cost.get("simd"), "dot": cost.get("dot"),
            "spread": cost.get("spread"),
            "estimate_ms": record["estimates"][0]["estimate_ms"] if record.get("estimates") else None,
            "host_p50_ms@1": (row["latency"].get("1") or {}).get("p50_ms"),
            "device_images": record.get("device_images"),
        }
    repeat = recount(export_dir, with_device["rows"])
    ratios = {}
    for fmt in ("tflite", "onnx"):
        fp32 = (files.get(f"{fmt}-fp32") or {}).get("instructions")
        for precision in ("int8", "int8-dynamic", "int8-uint8io"):
            row = files.get(f"{fmt}-{precision}")
            if fp32 and row and row["instructions"]:
                host_fp32, host_row = files[f"{fmt}-fp32"]["host_p50_ms@1"], row["host_p50_ms@1"]
                ratios[f"{fmt}-{precision}"] = {
                    "arm_fewer_instructions_x": round(fp32 / row["instructions"], 2),
                    "host_speedup_x": round(host_fp32 / host_row, 2) if host_fp32 and host_row else None,
                    "arm_verdict": row["arm_verdict"]}
    return {"files": files, "ratios": ratios, "repeat_max_rel_diff": max(repeat.values()) if repeat else None,
            "bench_seconds_host": round(host_s, 1), "bench_seconds_with_device": round(device_s, 1),
            "device_added_seconds": round(device_s - host_s, 1),
            "device_added_seconds_all_images": round(every_s - host_s, 1), "guided_vs_all": guided_check,
            "recommendations": {p: c["artifact"] for p, c in with_device["recommendations"].items()},
            "host_recommendations": {p: c["artifact"] for p, c in host["recommendations"].items()}}


def print_model(name: str, figures: dict) -> None:
    print(f"\n{name}: {'file':18s} {'host':8s} {'arm':8s} {'M instr':>8s} {'M dot':>7s} {'spread':>7s} "
          f"{'est ms':>7s} {'host ms@1':>9s}  basis")
    for file, f in figures["files"].items():
        print(f"{'':{len(name) + 2}s}{file:18s} {f['host_verdict']:8.8s} {f['arm_verdict']:8.8s} "
              f"{(f['instructions'] or 0) / 1e6:8.2f} {(f['dot'] or 0) / 1e6:7.2f} {f['spread'] or 0:7.1e} "
              f"{f['estimate_ms'] or float('nan'):7.2f} {f['host_p50_ms@1'] or float('nan'):9.3f}  {f['basis']}")
    for file, g in figures["guided_vs_all"].items():
        print(f"  guided {file}: {g['device_images']} of {g['images']} images on the device, verdict {g['guided']} "
              f"(all images there: {g['all']}); largest move over all images {g['largest_move_all']:.2g} = "
              f"{g['largest_move_over_reach']:.2f} x the reach {g['reach']:.2g} it assumed")
    for file, r in figures["ratios"].items():
        print(f"  {file} vs fp32: {r['arm_fewer_instructions_x']}x fewer instructions on {CORE}, host (x86) "
              f"speed-up {r['host_speedup_x']}x, ARM verdict {r['arm_verdict']}")
    print(f"  recommendations by {CORE}: {figures['recommendations']}; by host time: {figures['host_recommendations']}")
    print(f"  bench: {figures['bench_seconds_host']} s host only, {figures['bench_seconds_with_device']} s with "
          f"--device arm64 (+{figures['device_added_seconds']} s; +{figures['device_added_seconds_all_images']} s with "
          f"--device-images all); counts repeat within "
          f"{figures['repeat_max_rel_diff']:.2e} across processes")


def goals(models: dict) -> dict:
    from pocketml.benchmarks import estimates
    from pocketml.benchmarks.report import FAILED_VALIDATION

    from pocketml.artifact import PASSED, TOO_FEW

    verdicts = (PASSED, FAILED_VALIDATION, TOO_FEW)  # the three outcomes a judged file can have
    every = all(f["arm_verdict"] in verdicts and f["instructions"] for m in models.values() for f in m["files"].values())
    repeat = max(m["repeat_max_rel_diff"] or 0 for m in models.values())
    onnx = models["hotdog"]["ratios"].get("onnx-int8", {})
    fit = next(iter(estimates.overall_error().items()))
    fit = {"phone": fit[0], **fit[1]}
    found = {
        "every_file_arm_verdict_and_count": every,
        "counts_repeat_within_0.1pct": repeat <= 1e-3,
        "hotdog_onnx_int8_1.5x_fewer_instructions": bool(onnx.get("arm_fewer_instructions_x", 0) >= GOAL_RATIO
                                                         and onnx.get("arm_verdict") == "passed"),
        "estimate_loo_median_error": round(fit["loo_median"], 3),
        "estimate_loo_median_le_25pct": fit["loo_median"] <= 0.25,
        "lite0_device_added_seconds_le_180": models["lite0"]["device_added_seconds"] <= 180,
        "guided_verdicts_match_all_images": all(g["guided"] == g["all"] for m in models.values()
                                                for g in m["guided_vs_all"].values()),
        "guided_largest_move_over_reach": max((g["largest_move_over_reach"] or 0 for m in models.values()
                                               for g in m["guided_vs_all"].values()), default=None),
    }
    print("\ngoals:")
    print(f"  every TFLite and ONNX file has an ARM verdict and an instruction count on {CORE}: {every}")
    print(f"  counts repeat within 0.1 % across runs: {repeat:.2e} ({repeat <= 1e-3})")
    print(f"  hot-dog ONNX int8 >= {GOAL_RATIO}x fewer instructions than fp32 on {CORE} (and passing there): "
          f"{onnx.get('arm_fewer_instructions_x')}x ({found['hotdog_onnx_int8_1.5x_fewer_instructions']})")
    print(f"  phone estimate leave-one-out median error <= 25 %: {fit['loo_median']:.0%} (worst {fit['loo_max']:.0%}, "
          f"{fit['points']} points, {fit['phone']})")
    print(f"  guided device judging gives the verdicts of judging every image there: "
          f"{found['guided_verdicts_match_all_images']} (largest move over all images / assumed reach: "
          f"{found['guided_largest_move_over_reach']}; <= 1 means the assumption held)")
    print(f"  bench --device arm64 adds <= 3 minutes on the Lite0 128 px export: "
          f"+{models['lite0']['device_added_seconds']} s (load average {os.getloadavg()[0]:.1f})")
    return found


def main() -> None:
    started = time.perf_counter()
    models = {}
    for name, build in (("hotdog", hotdog_export), ("lite0", lite0_export)):
        models[name] = model_figures(name, build())
        print_model(name, models[name])
    print_result({"benchmark": "arm64", "core": CORE, "machine": machine_info(), "load_avg": os.getloadavg(),
                  "goals": goals(models), "seconds": round(time.perf_counter() - started, 1), "models": models})


if __name__ == "__main__":
    main()
