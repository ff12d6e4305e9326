"""ONNX's rungs and sensitivity: QDQ settings chosen for the CPU, bias-corrected weights, the tensors
whose quantisation costs most kept float, and 16-bit activations as the last integer rung.

The CPU decides the weights' grid. x86 runs u8 x s8 products with VPMADDUBSW, whose int16 pair sums
saturate unless the weights have 7 bits (reduce_range) - except on CPUs with VNNI, whose VPDPBUSD
accumulates in int32 and never saturates. Measured on an AVX-512 VNNI CPU (1 thread):
- MobileNetV2 a0.35 96 px, 50 hot-dog photos: U8S8 reduce_range 4 flips, mean |d log p| 0.59 on the
  calibration images; full 8-bit U8S8 2 flips, 0.32; + bias correction 1 flip, 0.19. S8S8 is as
  accurate (0.18) but 1.4x slower than fp32 here (no fast S8 activation kernels), U8S8 1.15x faster.
- EfficientNet-Lite0 128 px, 125 test glyphs: reduce_range 4 flips; 8-bit U8S8 1 flip (within budget)
  at 0.72 ms against 1.78 ms for fp32.
So: VNNI (or ARM, whose dot products do not saturate) -> U8S8 8-bit per-channel; x86 without VNNI ->
U8S8 reduce_range. The rounding grid of the bias correction follows (+-127 or +-64).

Sensitivity is measured end to end on calibration images: for each quantised activation, the mean
KL divergence from the Keras probabilities once that one tensor stays float (no re-quantisation: its Q/DQ pair is cut
out of the graph, as NNCF's accuracy control ranks its quantizers, leaving only the clip to its range).
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pocketml.export.quantization.equalize import bias_corrected
from pocketml.export.quantization.fold import fold_summary, input_rescaling, integer_ready
from pocketml.export.quantization.search import Built, Candidate

FLOAT_COUNTS = (1, 2, 4, 8)  # tensors kept float on the successive fallback rungs
RANKING_IMAGES = 32  # calibration images the ranking runs on (one pass per tensor): keeps it ~10 s on Lite0 128 px
SENSITIVITY_ROWS = 10
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags() -> set[str]:
    """This CPU's feature flags (Linux /proc/cpuinfo; empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def cpu_settings(machine: str | None = None, flags: set[str] | None = None) -> dict:
    """QDQ settings for the CPU this runs on: activation/weight types, reduce_range and why."""
    machine = (machine or platform.machine()).lower()
    flags = cpu_flags() if flags is None else flags
    x86 = machine in ("x86_64", "amd64", "i386", "i686")
    vnni = bool(flags & set(VNNI_FLAGS))
    if x86 and not vnni:
        reason = "x86 without VNNI: 7-bit weights (reduce_range) so u8 x s8 pair sums cannot saturate"
        reduce_range = True
    else:
        reason = ("VNNI: int32 accumulation never saturates, full 8-bit weights" if x86
                  else f"{machine}: dot products accumulate without saturation, full 8-bit weights")
        reduce_range = False
    return {"activations": "uint8", "weights": "int8 per-channel symmetric", "reduce_range": reduce_range,
            "cpu": machine, "vnni": vnni, "why": reason}


def weight_grid(settings: dict) -> int:
    """Half-width of ONNX Runtime's symmetric int8 weight grid: +-64 with reduce_range, else +-127."""
    return 64 if settings["reduce_range"] else 127


def float_ops(proto: Any) -> list[str]:
    """Compute nodes that take a float (not dequantised) tensor, besides the output softmax."""
    produced = {out: node.op_type for node in proto.graph.node for out in node.output}
    initializers = {i.name for i in proto.graph.initializer}
    kept = []
    for node in proto.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear", "Softmax"):
            continue
        inputs = [i for i in node.input if i and i not in initializers]
        if any(produced.get(i) != "DequantizeLinear" for i in inputs):
            kept.append(f"{node.op_type} {node.name}")
    return kept


def without_quantizers(proto: Any, tensors: list[str]) -> Any:
    """A copy of a QDQ `proto` in which `tensors` (float activation names) skip their rounding: each
    Q/DQ pair becomes a Clip to the range the pair could represent. The clip is what stays of the
    quantiser: ONNX Runtime's quantiser drops a ReLU6 / Clip whose range its Q/DQ covers, so without
    it a ReLU6 output kept float would not be clipped at all."""
    import onnx
    from onnx import helper, numpy_helper

    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    nodes = list(copy.graph.node)
    initializers = {i.name: i for i in copy.graph.initializer}
    cut = {i for i, n in enumerate(nodes) if n.op_type == "QuantizeLinear" and n.input[0] in tensors}
    clips = {}  # float tensor -> the Clip node standing for its Q/DQ pair
    for i in sorted(cut):
        quantizer = nodes[i]
        low, high = representable_range(quantizer, initializers)
        source = quantizer.input[0]
        bounds = [f"{source}_kept_float_min", f"{source}_kept_float_max"]
        copy.graph.initializer.extend(numpy_helper.from_array(np.array(v, np.float32), name)
                                      for v, name in zip((low, high), bounds, strict=True))
        clips[quantizer.output[0]] = helper.make_node("Clip", [source, *bounds], [f"{source}_kept_float"],
                                                      name=f"{source}_kept_float_clip")
    rename = {}
    for i, node in enumerate(nodes):
        if node.op_type == "DequantizeLinear" and node.input[0] in clips:
            rename[node.output[0]] = clips[node.input[0]].output[0]
            cut.add(i)
    kept = []
    for i, node in enumerate(nodes):
        if i in cut:
            if node.op_type == "QuantizeLinear":
                kept.append(clips[node.output[0]])  # in the pair's place: the order stays topological
            continue
        node.input[:] = [rename.get(name, name) for name in node.input]
        kept.append(node)
    del copy.graph.node[:]
    copy.graph.node.extend(kept)
    return copy


def representable_range(quantizer: Any, initializers: dict) -> tuple[float, float]:
    """The float interval a QuantizeLinear node's scale, zero point and integer type cover."""
    from onnx import numpy_helper

    scale = float(numpy_helper.to_array(initializers[quantizer.input[1]]))
    zero = numpy_helper.to_array(initializers[quantizer.input[2]])
    info = np.iinfo(zero.dtype)
    return (info.min - float(zero)) * scale, (info.max - float(zero)) * scale


def before_first_conv(proto: Any) -> list[str]:
    """The quantised activations computed before the first Conv's input (the input normalisation's):
    everything upstream of the tensor that conv reads, not that tensor itself."""
    produced = {out: node for node in proto.graph.node for out in node.output}
    activations = set(activation_tensors(proto))
    conv = next((n for n in proto.graph.node if n.op_type == "Conv"), None)
    if conv is None:
        return []
    dequantized = produced.get(conv.input[0])
    if dequantized is None or dequantized.op_type != "DequantizeLinear":
        return []
    quantizer = produced.get(dequantized.input[0])
    start = quantizer.input[0] if quantizer is not None and quantizer.op_type == "QuantizeLinear" else None
    found, pending, seen = [], [produced[start]] if start in produced else [], set()
    while pending:
        node = pending.pop()
        for name in node.input:
            if name in seen:
                continue
            seen.add(name)
            if name in activations:
                found.append(name)
            if name in produced:
                pending.append(produced[name])
    return found


def activation_tensors(proto: Any) -> list[str]:
    """Names of the float activations a QDQ graph quantises (weights excluded)."""
    initializers = {i.name for i in proto.graph.initializer}
    return [n.input[0] for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in initializers]


def divergence(reference: np.ndarray, probs: np.ndarray) -> float:
    """Mean KL(reference || probs): how far a file's probabilities move, weighted where the reference
    puts its mass (log-probabilities of classes near 0 would let the tail dominate)."""
    p = np.clip(reference.astype(np.float64), 1e-12, 1.0)
    q = np.clip(probs.astype(np.float64), 1e-12, 1.0)
    return float((p * (np.log(p) - np.log(q))).sum(axis=1).mean())


def ranked_tensors(quantized: Any, model: Any, calibration: np.ndarray) -> list[dict]:
    """Every quantised activation with the end-to-end error (vs the Keras `model`) left when it alone
    stays float, worst first: the larger the drop in error, the more that tensor's quantisation costs."""
    from pocketml.export.keras_model import KerasPredictor
    from pocketml.export.onnx import session_outputs

    images = calibration[:RANKING_IMAGES]
    reference = KerasPredictor(model, tuple(images.shape[1:3])).predict(images)
    base = divergence(reference, session_outputs(quantized, images))
    rows = []
    for tensor in activation_tensors(quantized):
        error = divergence(reference, session_outputs(without_quantizers(quantized, [tensor]), images))
        rows.append({"tensor": tensor, "error_if_float": error, "share": (base - error) / base if base else 0.0})
    return sorted(rows, key=lambda r: r["error_if_float"])


def sensitivity_table(rows: list[dict]) -> list[dict]:
    return [{"tensor": r["tensor"].split(";")[0], "kl_if_float": round(r["error_if_float"], 5),
             "error_removed": round(r["share"], 3)} for r in rows[:SENSITIVITY_ROWS]]


def candidates(model: Any, spec: Any, opset: int, calibration: np.ndarray, finish, facts: dict,
               settings: dict | None = None) -> Iterator[Candidate]:
    """The ONNX int8 ladder, built lazily: QDQ with the CPU's settings from the model with its input
    normalisation folded (export/quantization/fold.py) and bias-corrected weights; the model as it is
    with its normalisation kept float; then the 1, 2, 4, 8 costliest activations of the first rung
    kept float; then 16-bit activations. `finish` turns a ModelProto into the file's bytes (metadata,
    checks); `facts` collects the CPU choice, the fold, the correction, the sensitivity.

    Measured on quantization_bench's hot-dog model (50 val photos): folded 1 flip (max |dp| 0.13),
    the normalisation kept float 0 flips at 0.21 ms; before, the ladder went on to 1 tensor float,
    which kept two convs float (0.24 ms, slower than fp32's 0.23)."""
    from pocketml.export.onnx import float32_model, static_int8_model

    settings = settings or cpu_settings()
    facts["cpu"] = settings
    state: dict = {}

    def corrected_fp32():
        if "fp32" not in state:
            ready, done = integer_ready(model, calibration, qmax=weight_grid(settings))
            facts.update(done)
            state["fp32"] = float32_model(ready, spec, opset)
        return state["fp32"]

    def quantized():
        if "quantized" not in state:
            state["quantized"] = static_int8_model(corrected_fp32(), calibration, reduce_range=settings["reduce_range"])
        return state["quantized"]

    def first(path: Path) -> Built:
        return _write(path, quantized(), finish)

    def ranking() -> list[dict]:
        if "ranking" not in state:
            state["ranking"] = ranked_tensors(quantized(), model, calibration)
            facts["sensitivity"] = sensitivity_table(state["ranking"])
        return state["ranking"]

    facts["rank"] = ranking

    yield Candidate("bias-corrected", {"calibration": "minmax", "images": len(calibration), **_short(settings),
                                       "input": fold_summary(model)}, first)

    rescaling = input_rescaling(model)
    if rescaling is not None:  # without one there is no normalisation to keep float
        def float_input(path: Path) -> Built:
            # The model as it is (not folded), bias-corrected: its normalisation computes in float and is
            # rounded once, where the first conv reads it.
            corrected, _ = bias_corrected(model, calibration, qmax=weight_grid(settings))
            proto = static_int8_model(float32_model(corrected, spec, opset), calibration,
                                      reduce_range=settings["reduce_range"])
            return _write(path, without_quantizers(proto, before_first_conv(proto)), finish)

        yield Candidate("float input", {"kept_float": f"the input normalisation ({rescaling.name}), not folded"},
                        float_input)

    for count in FLOAT_COUNTS:
        def keep_float(path: Path, count: int = count) -> Built:
            tensors = [row["tensor"] for row in ranking()[:count]]
            return _write(path, without_quantizers(quantized(), tensors), finish)

        yield Candidate(f"float {count}", {"tensors_kept_float": count, "ranked_by": "end-to-end error on calibration images"},
                        keep_float)

    def int16(path: Path) -> Built:
        proto = static_int8_model(corrected_fp32(), calibration, reduce_range=False, activation_bits=16)
        built = _write(path, proto, finish)
        built.activation_bits = 16  # the file's QDQ pairs carry uint16 activations
        built.notes.append("16-bit activations (com.microsoft QDQ): integer, but ONNX Runtime's CPU kernels for it are slow")
        return built

    yield Candidate("int16 activations", {"activations": "uint16", "weights": "int8 per-channel, bias-corrected"}, int16)


def _short(settings: dict) -> dict:
    return {k: settings[k] for k in ("activations", "weights", "reduce_range")}


def _write(path: Path, proto: Any, finish) -> Built:
    path.write_bytes(finish(proto))
    kept = float_ops(proto)
    return Built(integer_only=not kept, float_ops=kept)
