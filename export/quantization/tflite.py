"""TFLite's rungs and sensitivity: per-layer error from tf.lite.experimental.QuantizationDebugger,
layers kept in float through its denylist, and 16-bit activations as the last integer rung.

Measured before this ladder was fixed (1 thread, AVX-512 VNNI laptop CPU, load ~3 from other work):
- demo EfficientNet-Lite0 128 px, 125 test glyphs: MinMax int8 2 flips; bias-corrected 1 flip
  (0.992, within budget) at 0.66 ms against 1.77 ms for fp32; the debugger's worst layer is the first
  depthwise conv (RMSE/scale 2.8; plain rounding gives 0.29).
- MobileNetV2 a0.35 96 px, 50 hot-dog photos: MinMax 1 flip, bias-corrected 1-2 (the flip is a photo
  Keras itself calls 0.524); activations then carry the error, spread over every layer: keeping any
  one tensor float lowers the mean |d log p| by at most 14 %. 16x8 is integer and near-lossless
  (0 flips on the demo) but XNNPACK has no int16 kernels: 32x slower than fp32, hence the last rung.
Since then the first rung folds the input normalisation into the first conv (fold.py): its input is
exact integers, and the demo's full-integer file passes (1 flip; 2 before), the strict uint8 one too.
On the hot-dog model the flip stays; the normalisation kept float (no fold) passes there at the same
speed, so that rung comes second.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pocketml.export.quantization.equalize import bias_corrected
from pocketml.export.quantization.fold import fold_summary, input_rescaling, integer_ready
from pocketml.export.quantization.search import Built, Candidate

from pocketml.fsutil import atomic_write_bytes

FLOAT_COUNTS = (1, 4)  # worst layers kept float (besides the input normalisation) on the fallback rungs
DEBUG_IMAGES = 50  # calibration images the debugger runs: its per-layer statistics settle by then
SENSITIVITY_ROWS = 10  # worst layers named in the manifest
BOUNDARY_OPS = ("QUANTIZE", "DEQUANTIZE")  # float I/O conversions at the edges of an integer graph


def layer_statistics(converter: Any, calibration: np.ndarray) -> list[dict]:
    """The QuantizationDebugger's per-layer statistics, worst first by RMSE / scale: the error a
    layer adds measured in its own quantisation steps (0.29 is the floor of rounding alone)."""
    import tensorflow as tf

    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=_dataset(calibration[:DEBUG_IMAGES]))
    debugger.run()
    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    rows = []
    for row in csv.DictReader(io.StringIO(buffer.getvalue())):
        scale = float(row["scale"] or 0)
        rmse = float(np.sqrt(max(float(row["mean_squared_error"] or 0), 0.0)))
        rows.append({"layer": row["tensor_name"], "op": row["op_name"], "rmse_over_scale": rmse / scale if scale else 0.0,
                     "max_abs_error": float(row["max_abs_error"] or 0)})
    return sorted(rows, key=lambda r: -r["rmse_over_scale"])


def sensitivity_table(rows: list[dict]) -> list[dict]:
    """The worst layers, short-named, for the manifest and the bench report."""
    return [{"layer": short_name(r["layer"]), "op": r["op"], "rmse_over_scale": round(r["rmse_over_scale"], 3)}
            for r in rows[:SENSITIVITY_ROWS]]


def short_name(tensor: str) -> str:
    """'classifier_1/efficientnet_lite0_1/block0_dw_relu_1/Relu6;...' -> 'block0_dw_relu_1/Relu6'."""
    first = tensor.split(";")[0]
    return "/".join(first.split("/")[-2:])


def _dataset(images: np.ndarray):
    def dataset():
        for image in images:
            yield [image[None].astype(np.float32)]

    return dataset


def float_ops(content: bytes) -> list[str]:
    """Ops of a .tflite that compute on float tensors (besides the I/O quantise/dequantise), by output name."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    found = []
    for op in interpreter._get_ops_details():  # the only listing of ops LiteRT's Python API offers
        if op["op_name"] in BOUNDARY_OPS:
            continue
        used = [i for i in [*op["inputs"], *op["outputs"]] if i >= 0 and i in tensors]
        if any(tensors[i]["dtype"] == np.float32 for i in used):
            outputs = [tensors[i]["name"] for i in op["outputs"] if i in tensors]
            found.append(f"{op['op_name']} {short_name(outputs[0]) if outputs else op['index']}")
    return found


def _denylisted(model: Any, spec: Any, calibration: np.ndarray, layers: list[str]) -> bytes:
    """int8 with `layers` (tensor names from the debugger) kept float."""
    import tensorflow as tf
    from pocketml.export.tflite import int8_converter

    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=layers)
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=int8_converter(model, spec, calibration, fallback=True),
        debug_dataset=_dataset(calibration[:DEBUG_IMAGES]), debug_options=options)
    return debugger.get_nondebug_quantized_model()


def _write(path: Path, content: bytes, finish) -> Built:
    content = finish(content)
    atomic_write_bytes(path, content)
    kept = float_ops(content)
    return Built(integer_only=not kept, float_ops=kept, activation_bits=activation_bits(content))


def activation_bits(content: bytes) -> int | None:
    """16 when the .tflite computes with int16 activations (16x8), 8 with int8 ones, None when float:
    read from the file's tensors, so what a file runs on is said from what it is."""
    from ai_edge_litert.interpreter import Interpreter

    types = {d["dtype"] for d in Interpreter(model_content=content).get_tensor_details()}
    if np.int16 in types:
        return 16
    return 8 if types & {np.int8, np.uint8} else None


def candidates(model: Any, spec: Any, calibration: np.ndarray, finish, facts: dict) -> Iterator[Candidate]:
    """The TFLite int8 ladder, built lazily: full integer with the input normalisation folded into
    the first conv (export/quantization/fold.py) and bias-corrected weights; then, on the model as it
    is, the normalisation kept float, and that plus the 1 and 4 layers the debugger ranks worst; then
    16-bit activations. `finish` adds metadata to the bytes; `facts` receives the fold, the bias
    correction and the debugger's table as they are computed."""
    from pocketml.export.tflite import int8_converter

    state: dict = {}

    def ready():
        if "ready" not in state:
            state["ready"], done = integer_ready(model, calibration, qmax=127)
            facts.update(done)
        return state["ready"]

    def corrected():
        # The float-input rungs start from the model as it is: folded, the normalisation is already exact
        # integers and keeping it float would change nothing. Unfolded, it is rounded once, at the first conv.
        if "corrected" not in state:
            state["corrected"], _ = bias_corrected(model, calibration, qmax=127)
        return state["corrected"]

    def full_integer(path: Path) -> Built:
        return _write(path, int8_converter(ready(), spec, calibration).convert(), finish)

    def ranking() -> list[dict]:
        # On the unfolded model: the float-input rungs denylist its normalisation tensors by these names
        # (folded, the multiply is gone and only the add would be kept float).
        if "ranking" not in state:
            state["ranking"] = layer_statistics(int8_converter(corrected(), spec, calibration, fallback=True), calibration)
            facts["sensitivity"] = sensitivity_table(state["ranking"])
        return state["ranking"]

    facts["rank"] = ranking  # the export names the worst layers even when the first rung passes

    yield Candidate("bias-corrected", {"calibration": "minmax", "weights": "int8 per-channel, bias-corrected",
                                       "activations": "int8", "input": fold_summary(model),
                                       "images": len(calibration)}, full_integer)

    rescaling = input_rescaling(model)

    def input_layers() -> list[str]:
        if rescaling is None:
            return []
        return [row["layer"] for row in ranking()
                if any(part.startswith(rescaling.name) for part in row["layer"].split(";")[0].split("/")[:-1])]

    if rescaling is not None:  # without one there is no normalisation to keep float
        def float_input(path: Path) -> Built:
            return _write(path, _denylisted(corrected(), spec, calibration, input_layers()), finish)

        yield Candidate("float input", {"kept_float": f"the input normalisation ({rescaling.name}), not folded"},
                        float_input)

    for count in FLOAT_COUNTS:
        def keep_float(path: Path, count: int = count) -> Built:
            worst = [row["layer"] for row in ranking() if row["layer"] not in input_layers()][:count]
            return _write(path, _denylisted(corrected(), spec, calibration, input_layers() + worst), finish)

        name = f"float input + {count}" if rescaling is not None else f"float {count}"
        yield Candidate(name, {"kept_float": f"{'input normalisation + ' if rescaling is not None else ''}"
                                             f"{count} worst layers", "ranked_by": "QuantizationDebugger RMSE/scale"},
                        keep_float)

    def int16(path: Path) -> Built:
        built = _write(path, int8_converter(ready(), spec, calibration, int16_activations=True).convert(), finish)
        built.notes.append("16-bit activations: integer, but LiteRT's CPU path (XNNPACK) has no int16 kernels")
        return built

    yield Candidate("int16x8", {"activations": "int16", "weights": "int8 per-channel, bias-corrected"}, int16)
