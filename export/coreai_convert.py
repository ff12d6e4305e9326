"""Core AI conversion in a child interpreter on Keras' torch backend: `python -m
pocketml.export.coreai_convert REQUEST.json`, started by export/coreai.py with KERAS_BACKEND=torch.

Keras picks its backend once per process and the export runs on TensorFlow, so the classifier is
saved as a .keras file (stock layers only: export/graph.py) and loaded here, where a Keras model is a
`torch.nn.Module`. Apple's path then applies: `torch.export` -> the converter's decompositions ->
`coreai_torch.TorchConverter` -> an `.aimodel` asset. One child writes every file of a request (the
fp16 variant and each rung of the compressed ladder share one load and one export).

Variants: "fp32" as exported; "fp16": coreai-opt's FP32->FP16 cast pass on the exported program
(its input and output become float16 too); the compressed rungs store each kernel of more than
COMPRESS_MIN_WEIGHTS weights compressed, the rest fp16: "linear-8" as int8 with a scale per output
channel (the converter's `coreai::constexpr_blockwise_shift_scale` op), "palettized-<bits>" as a
<bits>-bit k-means palette per tensor (its `coreai::lut_to_dense` op).
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import numpy as np
from pocketml.export.coreai import COMPRESS_MIN_WEIGHTS, INPUT_NAME, OUTPUT_NAME


def exported_program(model, size: tuple[int, int]):
    """The classifier as a torch ExportedProgram with a fixed [1,H,W,3] float32 input."""
    import torch

    model.eval()
    example = torch.zeros((1, *size, 3), dtype=torch.float32)
    with torch.no_grad():
        return torch.export.export(model, (example,))


def fp16_program(program):
    """Weights, compute, input and output in float16 (coreai-opt's cast pass keeps no float32 I/O;
    pixel values 0..255 are exact in float16)."""
    from coreai_opt.casting import cast_fp32_to_fp16

    return cast_fp32_to_fp16(program)


def kmeans_palette(weights: np.ndarray, bits: int, iterations: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """(indices uint8 shaped like `weights`, palette float32 [2**bits]): 1-D k-means (Lloyd's
    iterations from quantile centres; assignment by the midpoints between sorted centres)."""
    flat = weights.astype(np.float64).ravel()
    centres = np.quantile(flat, (np.arange(2**bits) + 0.5) / 2**bits)
    for _ in range(iterations):
        centres = np.unique(centres)
        index = np.searchsorted((centres[1:] + centres[:-1]) / 2, flat)
        sums = np.bincount(index, weights=flat, minlength=len(centres))
        counts = np.bincount(index, minlength=len(centres))
        centres = np.where(counts > 0, sums / np.maximum(counts, 1), centres)
    centres = np.sort(centres)
    index = np.searchsorted((centres[1:] + centres[:-1]) / 2, flat)
    palette = np.zeros(2**bits, np.float32)
    palette[: len(centres)] = centres
    return index.astype(np.uint8).reshape(weights.shape), palette


def channel_axis(shape: tuple[int, ...]) -> int:
    """The output-channel axis of a Keras kernel: the last, or the input channels' for a depthwise one
    (kh, kw, channels, 1)."""
    return len(shape) - 1 if shape[-1] > 1 or len(shape) < 3 else len(shape) - 2


def int8_per_channel(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 values shaped like `weights`, float32 scale of the same rank, one per output channel):
    symmetric, the channel's largest |w| at 127."""
    axis = channel_axis(weights.shape)
    others = tuple(i for i in range(weights.ndim) if i != axis)
    scale = np.abs(weights).max(axis=others, keepdims=True).astype(np.float32) / 127
    scale[scale == 0] = 1.0  # an all-zero channel stays zero
    return np.clip(np.round(weights / scale), -127, 127).astype(np.int8), scale


def compress_kernels(model, recipe: str) -> int:
    """Every kernel of more than COMPRESS_MIN_WEIGHTS weights read through the converter's op for
    `recipe` ("linear-8" or "palettized-<bits>"), its data buffers of the model; returns how many.

    Keras' torch layers hand the kernel to the op through `Variable.value` (transposed first, so
    coreai-opt's compressors, which look for the nn.Parameter an op receives, find none): the
    variable's class is swapped for one whose value is the decompression."""
    import torch

    count = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if any(True for _ in layer._flatten_layers(include_self=False, recursive=False)):
            continue  # a nested model: its layers come by themselves (its `weights` are all of theirs)
        for variable in layer.weights:
            name = variable.path.rsplit("/", 1)[-1]
            if name not in ("kernel", "depthwise_kernel") or int(np.prod(variable.shape)) <= COMPRESS_MIN_WEIGHTS:
                continue
            weights = np.asarray(variable.value.detach().cpu())
            # Buffers of the exported module itself: a nested Keras layer's buffers would be lifted
            # as anonymous constants, and the converter reads the op's operands from the state_dict.
            key = f"pocketml_{count}"
            if recipe == "linear-8":
                values, scale = int8_per_channel(weights)
                model.register_buffer(f"{key}_quantized", torch.from_numpy(values))
                model.register_buffer(f"{key}_scale", torch.from_numpy(scale))
            else:
                bits = int(recipe.removeprefix("palettized-"))
                indices, palette = kmeans_palette(weights, bits)
                model.register_buffer(f"{key}_indices", torch.from_numpy(indices))
                model.register_buffer(f"{key}_lut", torch.from_numpy(palette).reshape(*([1] * indices.ndim), 2**bits, 1))
            variable.__class__ = _compressed_class(type(variable))
            variable._pocketml_lookup = (model, key, recipe)
            count += 1
    return count


@functools.cache
def _compressed_class(base: type) -> type:
    import torch

    class CompressedVariable(base):
        @property
        def value(self):
            owner, key, recipe = self._pocketml_lookup
            if recipe == "linear-8":
                return torch.ops.coreai.constexpr_blockwise_shift_scale(
                    getattr(owner, f"{key}_quantized"), getattr(owner, f"{key}_scale"))
            return torch.ops.coreai.lut_to_dense(getattr(owner, f"{key}_indices"), getattr(owner, f"{key}_lut"), 0)

    return CompressedVariable


def compressed_program(model, size: tuple[int, int], recipe: str):
    """The model with its kernels compressed by `recipe` (fp16 elsewhere), exported."""
    import coreai_torch._compression.custom_layers  # noqa: F401  (registers the coreai:: ops)

    compress_kernels(model, recipe)
    return fp16_program(exported_program(model, size))


def save_asset(program, path: Path, metadata: dict) -> None:
    import coreai_torch
    from coreai.runtime import AIModelAssetMetadata
    from coreai_torch import TorchConverter

    program = program.run_decompositions(coreai_torch.get_decomp_table())
    converter = TorchConverter(mode=TorchConverter.Mode.RELEASE)
    converter.add_exported_program(program, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
    meta = AIModelAssetMetadata()
    meta.model_description = metadata.pop("description", "")
    for key, value in metadata.items():
        meta.set_custom(key, value)
    converter.to_coreai().save_asset(Path(path), metadata=meta)


def variant_program(model, size: tuple[int, int], variant: str, base):
    if variant == "fp32":
        return base
    if variant == "fp16":
        return fp16_program(base)
    return compressed_program(model, size, variant)


def main(argv: list[str]) -> int:
    import keras

    request = json.loads(Path(argv[0]).read_text())
    if keras.backend.backend() != "torch":
        raise RuntimeError(f"Core AI conversion needs KERAS_BACKEND=torch, not {keras.backend.backend()}")
    model = keras.saving.load_model(request["model"], compile=False)
    size = tuple(request["size"])
    base = exported_program(model, size)
    for variant, out in request["outputs"]:
        compressed = variant not in ("fp32", "fp16")
        metadata = {**request["metadata"], "pocketml.precision": "compressed" if compressed else variant,
                    "pocketml.recipe": variant}
        fresh = keras.saving.load_model(request["model"], compile=False) if compressed else model
        save_asset(variant_program(fresh, size, variant, base), Path(out), metadata)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
