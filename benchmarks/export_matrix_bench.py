"""Export time of the full format x precision matrix for MobileNetV2 alpha 1.0 at 224 px.

Random weights (conversion time does not depend on their values), int8 calibrated on 100 real
hot-dog photos. Baseline: the TFLite fp32 conversion of the same model in this run; every
variant's time is also given as a ratio to it.

    .venv/bin/python benchmarks/export_matrix_bench.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from pocketml.benchmarks.common import machine_info, print_result, shared_data  # noqa: E402

SIZE = 224
ALPHA = 1.0
CALIBRATION_IMAGES = 100


def save_model(directory: Path) -> Path:
    import keras

    from pocketml.spec import ModelSpec, Normalization

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), alpha=ALPHA, include_top=False, weights=None)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    keras.Model(inputs, outputs).save(directory / "model.keras")
    ModelSpec(("hot_dog", "not_hot_dog"), (SIZE, SIZE), normalization=Normalization.for_mobilenet()).save(directory)
    return directory


def main() -> None:
    from pocketml.export.exporter import export_model

    from pocketml.configs.export import ExportConfig

    calibration = shared_data("hotdog", "train")
    with tempfile.TemporaryDirectory(prefix="pocketml-export-bench-") as tmp:
        model_dir = save_model(Path(tmp))
        config = ExportConfig(calibration=calibration, calibration_images=CALIBRATION_IMAGES, validate=False)
        start = time.perf_counter()
        manifest = export_model(model_dir, Path(tmp) / "export", config)
        total = time.perf_counter() - start
    baseline = manifest.find("tflite", "fp32")
    base_s = baseline.convert_seconds if baseline and baseline.convert_seconds else None
    variants = {
        a.name: {
            "status": a.status,
            "seconds": a.convert_seconds,
            "ratio_vs_tflite_fp32": round(a.convert_seconds / base_s, 2) if base_s and a.convert_seconds else None,
            "mb": round(a.bytes / 1e6, 2) if a.bytes else None,
            "reason": a.reason,
        }
        for a in manifest.artifacts
    }
    for name, row in variants.items():
        print(f"{name:24s} {row['status']:9s} {row['seconds'] or 0:7.1f} s  x{row['ratio_vs_tflite_fp32'] or 0:<5} {row['mb'] or 0:7.2f} MB")
    print(f"total {total:.1f} s for {len(variants)} variants (baseline tflite-fp32 {base_s} s)")
    print_result(
        {
            "benchmark": "export_matrix",
            "model": f"MobileNetV2 alpha {ALPHA} {SIZE}px, random weights, 2 classes",
            "calibration_images": CALIBRATION_IMAGES,
            "total_seconds": round(total, 1),
            "baseline_tflite_fp32_seconds": base_s,
            "variants": variants,
            "failed": [n for n, r in variants.items() if r["status"] != "exported"],
            "machine": machine_info(),
            "load_average": os.getloadavg(),
        }
    )


if __name__ == "__main__":
    main()
