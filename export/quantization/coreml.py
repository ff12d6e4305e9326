"""Core ML's rungs and sensitivity: weight compression ordered from least to most lossy, each rung
taken only when its package is at most SIZE_GOAL of the fp32 package's bytes; 6-bit palettes again
with the rounding's mean shift absorbed into the biases (export/quantization/equalize.py), then the
ops whose compressed weights cost most kept at 8 bits on the later rungs.

Measured (pocketml's reference executor, held-out images), fp32 = 1.0:
- MobileNetV2 a0.35 96 px (50 hot-dog photos): int8 weights 0 flips at 0.348 of fp32's size (its
  many small tensors stay fp16, so 8 bits cannot reach 0.30), 8-bit palettisation 0 flips at 0.350,
  6-bit 0 flips at 0.292, 6-bit per-grouped-channel (16) 0 flips at 0.357 (channel counts of 24 and 56
  do not divide, those tensors stay fp16), 4-bit grouped 8 flips at 0.297.
- the same backbone trained by `pocketml.train` (quantization_bench's hot-dog model) is more fragile:
  6-bit 4 flips at 0.292; 6-bit with the 2 / 4 / 10 ops of largest own error at 8 bits 6 / 3 / 1 flips
  at 0.300 / 0.303 / 0.310 of fp32's size; int8 weights 1 flip at 0.35. Grouped palettes need iOS18.
- EfficientNet-Lite0 128 px (125 glyphs): int8 weights 0 flips at 0.264; 8-bit palettisation 1 flip
  at 0.262 (47 s of k-means); 6-bit 1 flip at 0.200.
- with bias correction for the palettes (quantization_bench's hot-dog model, 200 calibration photos):
  6-bit 0 flips at 0.292 (max |dp| 0.10, from 0.22 and 2 flips without it).
Sensitivity: each compressed op's own error, the relative error of its output minus that of its
input, from the reference executor run on both programs (fp16 and compressed) on calibration images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pocketml.export.quantization.search import Built, Candidate, Step

SIZE_GOAL = 0.30  # a compressed package may be at most this fraction of the fp32 package
GROUP_SIZE = 16  # output channels sharing one look-up table in per-grouped-channel palettisation
KEPT_8BIT = 4  # most sensitive ops kept at 8 bits on the mixed rungs
SENSITIVITY_IMAGES = 4  # calibration images run through both programs: each op's error settles fast
SENSITIVITY_ROWS = 10
WEIGHT_OPS = ("conv", "linear", "matmul", "conv_transpose")
WEIGHT_THRESHOLD = 2048  # weights with fewer elements stay fp16 (coremltools' default, set here so the
# bias correction knows which kernels the palettiser rounds)


def size_precheck(fp32_bytes: int):
    """The rung condition beside the budget: the package is at most SIZE_GOAL of fp32's bytes."""
    def check(step: Step) -> str | None:
        ratio = step.bytes / fp32_bytes
        step.settings["size_vs_fp32"] = round(ratio, 3)
        return None if ratio <= SIZE_GOAL else f"{ratio:.3f} of fp32's size > {SIZE_GOAL:g}"

    return check


def _config(kind: str, nbits: int, granularity: str = "per_tensor", group: int | None = None):
    import coremltools.optimize.coreml as cto

    if kind == "linear":
        return cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", weight_threshold=WEIGHT_THRESHOLD)
    options = {"mode": "kmeans", "nbits": nbits, "granularity": granularity, "weight_threshold": WEIGHT_THRESHOLD}
    if group:
        options["group_size"] = group
    return cto.OpPalettizerConfig(**options)


def compressed(mlmodel: Any, kind: str, nbits: int, granularity: str = "per_tensor", kept_8bit: tuple = ()) -> Any:
    """`mlmodel` with its weights compressed; `kept_8bit` ops get 8-bit palettes instead."""
    import coremltools.optimize.coreml as cto

    names = {name: _config("palette", 8) for name in kept_8bit}
    if granularity == "per_grouped_channel":
        names.update(_grouped_configs(mlmodel, nbits, kept_8bit))
        config = cto.OptimizationConfig(global_config=_config(kind, nbits, granularity, GROUP_SIZE), op_name_configs=names)
    else:
        config = cto.OptimizationConfig(global_config=_config(kind, nbits), op_name_configs=names or None)
    with np.errstate(invalid="ignore", divide="ignore"):  # all-zero channels quantise to scale 0 (exact)
        if kind == "linear":
            return cto.linear_quantize_weights(mlmodel, config)
        return cto.palettize_weights(mlmodel, config)


def _grouped_configs(mlmodel: Any, nbits: int, skip: tuple) -> dict:
    """Per-op group sizes that divide each weight's output channels (coremltools leaves a tensor whose
    channels the group does not divide uncompressed)."""
    configs = {}
    for name, channels in weight_channels(mlmodel).items():
        if name in skip or channels % GROUP_SIZE == 0:
            continue
        group = math.gcd(channels, GROUP_SIZE)
        configs[name] = _config("palette", nbits, "per_grouped_channel", group) if group > 1 else _config("palette", nbits)
    return configs


def weight_channels(mlmodel: Any) -> dict[str, int]:
    """Output channels of each op that consumes a weight constant, by op name."""
    program = mlmodel._mil_program
    found = {}
    for op in program.functions["main"].operations:
        if op.op_type in WEIGHT_OPS and "weight" in op.inputs and op.inputs["weight"].op is not None:
            weight = op.inputs["weight"].val
            if weight is not None:
                found[op.name] = int(weight.shape[0])
    return found


def op_errors(fp16_path: Path, compressed_path: Path, images: np.ndarray) -> list[dict]:
    """Each weight op's own error in the compressed package: relative error of its output minus that
    of its input (upstream error removed), both programs run by pocketml's reference executor."""
    from pocketml.export.coreml_reference import load_reference

    reference, candidate = load_reference(fp16_path), load_reference(compressed_path)
    weight_ops = [op for op in candidate.executor.body if op.op_type in WEIGHT_OPS]
    totals: dict[str, float] = {}
    for image in images[:SENSITIVITY_IMAGES]:
        ref_values = reference.executor.run({reference.image_name: reference.image_feed(image)})
        new_values = candidate.executor.run({candidate.image_name: candidate.image_feed(image)})
        for op in weight_ops:
            source = op.inputs.get("x")
            out_error = _relative(ref_values.get(op.outputs[0]), new_values.get(op.outputs[0]))
            in_error = _relative(ref_values.get(source), new_values.get(source)) if isinstance(source, str) else 0.0
            totals[op.name] = totals.get(op.name, 0.0) + max(out_error - in_error, 0.0)
    count = max(min(len(images), SENSITIVITY_IMAGES), 1)
    rows = [{"op": name, "own_relative_error": total / count} for name, total in totals.items()]
    return sorted(rows, key=lambda r: -r["own_relative_error"])


def _relative(reference: Any, value: Any) -> float:
    if reference is None or value is None:
        return 0.0
    a, b = np.asarray(reference, np.float64), np.asarray(value, np.float64)
    return float(np.linalg.norm(b - a) / (np.linalg.norm(a) + 1e-12))


def candidates(fp16: Any, fp16_path: Path, calibration: np.ndarray | None, save, facts: dict,
               grouped: bool = True, program: Callable[[Any], Any] | None = None,
               keras_model: Any = None) -> Iterator[Candidate]:
    """The Core ML compression ladder, built lazily. `fp16` is the fp16 ML program (saved at
    `fp16_path`) of `keras_model`; `program(keras_model)` converts a Keras model to such a program;
    `save(mlmodel, path)` writes a package with pocketml's metadata; `calibration` (None: the
    bias-corrected and mixed rungs are left out) estimates the bias correction and ranks the ops for
    the rungs that keep some at 8 bits; `grouped` is False below iOS18, whose Core ML cannot read
    per-grouped-channel palettes."""
    state: dict = {}

    def write(mlmodel: Any, path: Path, kept: tuple = ()) -> Built:
        save(mlmodel, path)
        # Weight compression only: Core ML computes in fp16 whatever the weights are stored as.
        return Built(integer_only=None, float_ops=[f"{name} (8-bit palette)" for name in kept])

    def rung(kind: str, nbits: int, granularity: str = "per_tensor", mixed: bool = False):
        def build(path: Path) -> Built:
            kept = tuple(row["op"] for row in ranking()[:KEPT_8BIT]) if mixed else ()
            built = write(compressed(fp16, kind, nbits, granularity, kept), path, kept)
            if kind == "palette" and nbits == 6 and granularity == "per_tensor":
                state.setdefault("probe", path)  # the sensitivity is measured on the first 6-bit package
            return built

        return build

    def corrected_rung(nbits: int):
        def build(path: Path) -> Built:
            from pocketml.export.quantization.equalize import bias_corrected

            corrected, correction = bias_corrected(keras_model, calibration, palette_bits=nbits,
                                                   min_elements=WEIGHT_THRESHOLD)
            facts["bias_correction"] = correction.to_dict()
            return write(compressed(program(corrected), "palette", nbits), path)

        return build

    def ranking() -> list[dict]:
        if "ranking" not in state:
            probe = state.get("probe")
            if probe is None:
                probe = fp16_path.parent / "sensitivity-probe.mlpackage"
                save(compressed(fp16, "palette", 6), probe)
            state["ranking"] = op_errors(fp16_path, probe, calibration)
            facts["sensitivity"] = [{"op": r["op"], "own_relative_error": round(r["own_relative_error"], 5)}
                                    for r in state["ranking"][:SENSITIVITY_ROWS]]
        return state["ranking"]

    facts["rank"] = ranking
    yield Candidate("int8-weights", {"weights": "int8 linear symmetric, per-channel"}, rung("linear", 8))
    yield Candidate("palettized 8-bit", {"weights": "8-bit k-means palette, per tensor"}, rung("palette", 8))
    yield Candidate("palettized 6-bit", {"weights": "6-bit k-means palette, per tensor"}, rung("palette", 6))
    correctable = calibration is not None and keras_model is not None and program is not None
    if correctable:
        yield Candidate("palettized 6-bit, bias-corrected", {"weights": "6-bit k-means palette, per tensor",
                        "bias_correction": "the palettes' mean shift absorbed into biases / BatchNorm means"},
                        corrected_rung(6))
    if grouped:
        yield Candidate("palettized 6-bit grouped", {"weights": f"6-bit palettes per {GROUP_SIZE} output channels"},
                        rung("palette", 6, "per_grouped_channel"))
    else:
        facts["not_tried"] = "per-grouped-channel palettes: they need minimum_deployment_target iOS18 or later"
    if calibration is None:
        return  # the mixed rungs rank ops on calibration images, never on the evaluation images
    yield Candidate(f"palettized 6-bit, {KEPT_8BIT} ops 8-bit", {"weights": "6-bit per tensor",
                    "kept_8bit": f"the {KEPT_8BIT} ops with the largest own error"}, rung("palette", 6, mixed=True))
    if not grouped:
        return
    yield Candidate(f"palettized 4-bit grouped, {KEPT_8BIT} ops 8-bit",
                    {"weights": f"4-bit palettes per {GROUP_SIZE} output channels",
                     "kept_8bit": f"the {KEPT_8BIT} ops with the largest own error"},
                    rung("palette", 4, "per_grouped_channel", mixed=True))
