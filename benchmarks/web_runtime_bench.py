"""LiteRT.js (.tflite) against onnxruntime-web (.onnx) in headless Chromium, on two real-weight models:
which runtime the web bundle should ship for a file of each format, by outputs and by latency.

    python benchmarks/web_runtime_bench.py      # no arguments; ends with RESULT {json}

Models (under runs/web_runtime_bench/, reused when present):
- demo: EfficientNet-Lite0 128 px on the glyphs A-J (`pocketml run examples/demo.toml --to train`);
- hotdog: EfficientNet-Lite0 96 px with the packaged ImageNet weights, trained by `pocketml.train` on
  ../shared/data/hotdog (200 train photos; its 50 val photos are the images).
Each is exported to fp32 TFLite and ONNX and run by the web device (benchmarks/devices/web.py: the web
bundle's classify.js in the system's Chromium, served with COOP/COEP) on up to 32 evaluation images:
max|Δp| against the same file in the host runtime, p50/p90 per inference measured in the page with
performance.now() at 1 WASM thread and at N (the browser's cores, at most 4), ROUNDS rounds with the
median p50 kept (the machine is shared: a drift lands on both runtimes of a round alike). The ratio
is onnxruntime-web's p50 over LiteRT.js's (> 1: LiteRT.js faster). Also the bytes each runtime adds to
a bundle. Needs `pocketml device setup web` and Chromium.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pocketml.benchmarks.common import PROJECT_ROOT, machine_info, print_result, shared_data  # noqa: E402

CACHE = PROJECT_ROOT / "runs" / "web_runtime_bench"
ROUNDS = 3
IMAGES = 32


def demo_model() -> tuple[Path, Path]:
    import pocketml

    run_dir = CACHE / "demo"
    pocketml.run(PROJECT_ROOT / "examples" / "demo.toml", run_dir, to_stage="train")
    return run_dir / "model", run_dir / "dataset"


def hotdog_model() -> tuple[Path, Path]:
    import pocketml

    data, out = shared_data("hotdog"), CACHE / "hotdog" / "model"
    if not (out / "model.keras").is_file():
        pocketml.train(data, out, backbone="efficientnet_lite0", weights="imagenet", image_size=96, seed=0,
                       epochs_finetune=0, feature_cache_copies=1)
    return out, data


def exported(model_dir: Path, data: Path, out: Path) -> Path:
    from pocketml.export.exporter import export_model

    from pocketml.configs.export import ExportConfig

    if not (out / "manifest.json").is_file():
        export_model(model_dir, out, ExportConfig(formats=["tflite", "onnx"], precisions=["fp32"], calibration=data))
    return out


def runtime_bytes() -> dict[str, int]:
    from pocketml.export import web_bundle

    root = web_bundle.runtime_cache()
    return {fmt: sum((root / p.folder / dst).stat().st_size for p in packages for dst in p.files.values())
            for fmt, packages in web_bundle.RUNTIMES.items()}


def measure(name: str, export_dir: Path) -> dict:
    from pocketml.benchmarks.devices import web
    from pocketml.export.registry import format_module

    from pocketml.artifact import ExportManifest
    from pocketml.dataset import ImageSet, load_images

    manifest = ExportManifest.load(export_dir)
    paths = ImageSet.from_dict(manifest.images["evaluation"]).paths[:IMAGES]
    images = load_images(paths, tuple(manifest.model.image_size))
    artifacts = [manifest.find(fmt, "fp32") for fmt in ("tflite", "onnx")]
    files = [export_dir / a.path for a in artifacts]
    p50s: dict[str, dict[str, list[float]]] = {a.format: {} for a in artifacts}
    p90s: dict[str, dict[str, list[float]]] = {a.format: {} for a in artifacts}
    diffs = {}
    for round_ in range(ROUNDS):
        runs = web.run(files, [a.format for a in artifacts], images, cost=True)
        for artifact, path, result in zip(artifacts, files, runs, strict=True):
            if result.error:
                sys.exit(f"{name} {artifact.name} failed in Chromium: {result.error}")
            if round_ == 0:
                host = format_module(artifact.format).load(path).predict(images)
                diffs[artifact.format] = float(np.abs(result.outputs.astype(np.float64) - host).max())
            for key, figures in result.cost["latency"].items():
                p50s[artifact.format].setdefault(key, []).append(figures["p50_ms"])
                p90s[artifact.format].setdefault(key, []).append(figures["p90_ms"])
    row = {"images": len(images), "input": list(manifest.model.image_size), "max_abs_diff_vs_host": diffs, "runtimes": {}}
    for fmt in p50s:
        row["runtimes"][fmt] = {key: {"p50_ms": round(float(np.median(v)), 2),
                                      "p90_ms": round(float(np.median(p90s[fmt][key])), 2),
                                      "p50_rounds": [round(x, 2) for x in v]} for key, v in p50s[fmt].items()}
    row["onnx_over_tflite_p50"] = {key: round(row["runtimes"]["onnx"][key]["p50_ms"] / row["runtimes"]["tflite"][key]["p50_ms"], 2)
                                   for key in row["runtimes"]["tflite"] if key in row["runtimes"]["onnx"]}
    return row


def main() -> None:
    from pocketml.benchmarks.devices import web

    state = web.status()
    if not state.ready:
        sys.exit("the web device is not ready: " + "; ".join(state.missing))
    results = {}
    for name, build in (("hotdog", hotdog_model), ("demo", demo_model)):
        model_dir, data = build()
        results[name] = measure(name, exported(model_dir, data, CACHE / name / "export"))
        row = results[name]
        print(f"{name}: max|Δp| vs host {row['max_abs_diff_vs_host']}; p50 ms "
              + ", ".join(f"{fmt} {key} {v['p50_ms']}" for fmt, keys in row["runtimes"].items() for key, v in keys.items())
              + f"; onnxruntime-web / LiteRT.js {row['onnx_over_tflite_p50']}")
    print_result({"models": results, "runtime_bytes": runtime_bytes(), "rounds": ROUNDS,
                  "chromium": state.detail.get("chromium"), "runtimes": state.detail.get("runtimes"),
                  "machine": machine_info()})


if __name__ == "__main__":
    main()
