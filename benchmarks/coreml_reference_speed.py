"""Seconds per image of the Core ML reference executor on MobileNetV2 α1.0 at 224 px (fp32 and fp16
programs), against Keras on the same image in the same invocation (the baseline of the ratio).

The issue's target: <= 2 s per image on this machine. Run: `.venv/bin/python benchmarks/coreml_reference_speed.py`.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZE = 224  # px
REPEATS = 5  # timed runs per runtime (after one warm-up)


def seconds_per_call(fn) -> float:
    fn()
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    import numpy as np
    from pocketml.benchmarks.common import machine_info, print_result
    from pocketml.export import coreml
    from pocketml.export.coreml_reference import load_reference
    from pocketml.training.backbones import Weights, build_backbone, get_backbone
    from pocketml.training.model import build_classifier

    from pocketml.spec import ModelSpec

    # Built as `pocketml train` builds it and converted by the exporter's own module.
    backbone = get_backbone("mobilenet_v2")
    network = build_backbone(backbone, SIZE, 1.0, Weights("none"))
    model = build_classifier(network, backbone.normalization, num_classes=2, dropout=0.0)
    spec = ModelSpec(labels=("a", "b"), image_size=(SIZE, SIZE))
    image = np.random.default_rng(0).integers(0, 256, (1, SIZE, SIZE, 3)).astype(np.uint8)
    keras_s = seconds_per_call(lambda: model.predict(image.astype(np.float32), verbose=0))
    figures = {"keras_s": round(keras_s, 4)}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "fp16"):
            path = Path(tmp) / f"mnv2_{precision}.mlpackage"
            coreml.convert(model, spec, precision, path, None, minimum_deployment_target="iOS16")
            predictor = load_reference(path)
            seconds = seconds_per_call(lambda p=predictor: p.predict(image))
            figures[f"reference_{precision}_s"] = round(seconds, 4)
            figures[f"reference_{precision}_vs_keras"] = round(seconds / keras_s, 2)
            print(f"reference executor {precision}: {seconds:.3f} s/image ({seconds / keras_s:.1f}x Keras {keras_s:.3f} s)")
    figures["within_2s"] = max(figures["reference_fp32_s"], figures["reference_fp16_s"]) <= 2.0
    print_result({"machine": machine_info(), "model": "MobileNetV2 alpha 1.0, 224 px, random weights", **figures})


if __name__ == "__main__":
    main()
