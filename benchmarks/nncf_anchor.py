"""NNCF's accuracy-controlled int8 of an ONNX file, the anchor quantization_bench compares pocketml with.

Runs in the bench venv (`make bench-env`: NNCF pins its own numpy/scipy range, so it stays out of the
main one): `python benchmarks/nncf_anchor.py FP32.onnx DATA.npz OUT.onnx` with DATA holding
`calibration` (uint8 [N,H,W,3]), `evaluation` and `reference` (Keras probabilities on evaluation).
Its metric is pocketml's budget as NNCF takes it: top-1 agreement with Keras, max_drop 0.01 absolute,
on the same evaluation images pocketml's ladder is judged on. Prints one JSON line with what it did.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

BATCH = 64  # images per session.run while NNCF validates a candidate


def agreement(model, images: np.ndarray, reference: np.ndarray, name: str) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    probs = np.concatenate([session.run(None, {name: images[i : i + BATCH]})[0] for i in range(0, len(images), BATCH)])
    return float((probs.argmax(1) == reference.argmax(1)).mean())


def main(fp32_path: str, data_path: str, out_path: str) -> dict:
    import nncf
    import onnx

    data = np.load(data_path)
    calibration = data["calibration"].astype(np.float32)
    evaluation, reference = data["evaluation"].astype(np.float32), data["reference"]
    model = onnx.load(fp32_path)
    name = model.graph.input[0].name
    calibration_set = nncf.Dataset(list(calibration), lambda image: {name: image[None]})
    validation_set = nncf.Dataset(list(range(len(evaluation))), lambda i: {name: evaluation[i][None]})
    started = time.perf_counter()
    quantized = nncf.quantize_with_accuracy_control(
        model, calibration_set, validation_set,
        validation_fn=lambda candidate, _items: agreement(candidate, evaluation, reference, name),
        max_drop=0.01, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calibration),
    )
    seconds = time.perf_counter() - started
    onnx.save(quantized, out_path)
    return {"nncf": nncf.__version__, "seconds": round(seconds, 2), "calibration_images": len(calibration),
            "evaluation_images": len(evaluation), "method": "quantize_with_accuracy_control(max_drop=0.01, ABSOLUTE)"}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])), flush=True)
