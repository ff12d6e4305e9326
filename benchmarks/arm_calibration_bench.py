"""Count the instructions of the published calibration models on the emulated cortex-a76 and refit the
phone estimates: `python benchmarks/arm_calibration_bench.py` (needs `pocketml device setup arm64`).

For every point of benchmarks/phones.json it builds the same architecture in Keras (random weights:
the kernels a runtime picks, and so the instructions, depend on the shapes, not on the values),
converts it to TFLite at the point's precision, counts one inference at 1 thread (the fewest of 3 after a
warm-up) and writes the count into the point. Then it prints each class's fit with its leave-one-out
error per point and ends with one line `RESULT {json}`.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pocketml.benchmarks import estimates
from pocketml.benchmarks.devices import arm64

from pocketml.fsutil import atomic_write_text

ARCHITECTURES = {
    # model name in phones.json -> (keras.applications builder, alpha, input size)
    "MobileNetV1 1.0 224": ("MobileNet", 1.0, 224),
    "MobileNetV1 0.5 224": ("MobileNet", 0.5, 224),
    "MobileNetV1 0.25 128": ("MobileNet", 0.25, 128),
    "MobileNetV2 1.0 224": ("MobileNetV2", 1.0, 224),
}


def keras_model(name: str):
    import keras

    builder, alpha, size = ARCHITECTURES[name]
    keras.utils.set_random_seed(0)
    return getattr(keras.applications, builder)(input_shape=(size, size, 3), alpha=alpha, weights=None,
                                                classes=1000), size


def tflite_bytes(model, size: int, precision: str) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if precision == "int8":
        rng = np.random.default_rng(0)

        def representative():
            for _ in range(8):
                yield [rng.uniform(-1, 1, (1, size, size, 3)).astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.uint8
    return converter.convert()


def count_points(points: list[dict], folder: Path) -> None:
    files, sizes = [], []
    for point in points:
        model, size = keras_model(point["model"])
        path = folder / f"{point['model'].replace(' ', '_')}-{point['precision']}.tflite"
        path.write_bytes(tflite_bytes(model, size, point["precision"]))
        files.append(path)
        sizes.append(size)
    for size in sorted(set(sizes)):  # one emulated batch per input size
        chosen = [i for i, s in enumerate(sizes) if s == size]
        image = np.random.default_rng(1).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
        runs = arm64.run([files[i] for i in chosen], ["tflite"] * len(chosen), image, "cortex-a76", cost=True)
        for i, result in zip(chosen, runs, strict=True):
            if result.error:
                raise SystemExit(f"{files[i].name}: {result.error}")
            points[i]["instructions"] = result.cost["instructions"]
            points[i]["count_spread"] = result.cost["spread"]


def main() -> None:
    started = time.time()
    data = json.loads(estimates.PHONES_FILE.read_text())
    todo = [p for phone in data["classes"] for p in phone["points"]
            if p["model"] in ARCHITECTURES and ("--recount" in sys.argv or not p.get("instructions"))]
    with tempfile.TemporaryDirectory() as tmp:
        count_points(todo, Path(tmp))
    atomic_write_text(estimates.PHONES_FILE, json.dumps(data, indent=2) + "\n")
    estimates.calibration.cache_clear()
    summary = {}
    for fit in estimates.calibration():
        points = [p for phone in data["classes"] if phone["name"] == fit["phone"] for p in estimates.counted(phone["points"])
                  if estimates.kernels(p["precision"]) == fit["kernels"]]
        print(f"{fit['phone']} ({fit['runtime']}, {fit['threads']} threads), {fit['kernels']} kernels: "
              f"{fit['factor'] * 1e6:.3g} ms per M instructions")
        for point, error in zip(points, fit["loo_errors"], strict=True):
            print(f"  {point['model']:<22} {point['precision']:<5} {point['instructions'] / 1e6:8.1f} M instr  "
                  f"published {point['ms']:6.1f} ms  fit {fit['factor'] * point['instructions']:6.1f} ms  "
                  f"leave-one-out error {error:5.0%}")
    for phone, error in estimates.overall_error().items():
        summary[phone] = {k: round(v, 3) for k, v in error.items()}
        print(f"goal: {phone}: leave-one-out median error <= 25 %: {error['loo_median']:.0%} over {error['points']} "
              f"points, worst {error['loo_max']:.0%} ({'met' if error['loo_median'] <= 0.25 else 'NOT met'})")
    summary["seconds"] = round(time.time() - started, 1)
    print("RESULT " + json.dumps(summary))


if __name__ == "__main__":
    main()
