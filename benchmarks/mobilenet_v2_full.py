"""The full bench for MobileNetV2 α1.0 at 224 px (random weights, 2 classes): export every format ×
precision, calibrated on ../shared/data/hotdog/train, then `bench` on its val split.

Run: `.venv/bin/python -m benchmarks.mobilenet_v2_full` (no arguments; ~10-20 minutes on 2 cores).
Prints each artifact's latency and size as ratios to the Keras baseline measured in the same run.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine_info, print_result, shared_data

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))  # tests.models builds classifiers the way training does


def build_model(directory: Path) -> Path:
    from pocketml.spec import ModelSpec, Normalization
    from tests.models import LABELS, build_classifier

    build_classifier(None, size=224, alpha=1.0).save(directory / "model.keras")
    spec = ModelSpec(labels=LABELS, image_size=(224, 224), normalization=Normalization.for_mobilenet(), weights="none")
    spec.save(directory)
    return directory


def ratios(results: dict) -> dict[str, dict]:
    """Per artifact: p50 latency at the most threads and file size, each divided by the Keras row's."""
    from benchmarks.report import primary_latency

    base = results["rows"][0]
    base_ms, base_bytes = primary_latency(base), base["bytes"]
    out = {}
    for row in results["rows"][1:]:
        ms = primary_latency(row)
        out[row["name"]] = {
            "status": row["status"],
            "latency_vs_keras": ms / base_ms if ms and base_ms else None,
            "size_vs_keras": row["bytes"] / base_bytes if row["bytes"] and base_bytes else None,
        }
    return out


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from benchmarks.bench import bench
    from export.exporter import export_model
    from pocketml.configs.bench import BenchConfig
    from pocketml.configs.export import ExportConfig

    hotdog = shared_data("hotdog")
    with tempfile.TemporaryDirectory(prefix="pocketml-mnv2-") as tmp:
        model = build_model(Path(tmp))
        started = time.perf_counter()
        export_model(model, Path(tmp) / "export", ExportConfig(calibration=hotdog / "train", validate=False))
        export_seconds = time.perf_counter() - started
        results = bench(Path(tmp) / "export", hotdog, Path(tmp) / "bench", BenchConfig())
    table = ratios(results)
    for name, figures in table.items():
        print(f"{name:22s} {figures['status']:32s} latency x{figures['latency_vs_keras'] or float('nan'):.3f} "
              f"size x{figures['size_vs_keras'] or float('nan'):.3f}")  # fmt: skip
    print_result({"machine": machine_info(), "export_seconds": export_seconds, "vs_keras": table,
                  "recommendations": {p: c["artifact"] for p, c in results["recommendations"].items()}})  # fmt: skip


if __name__ == "__main__":
    main()
