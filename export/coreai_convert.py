"""Core AI conversion in a child interpreter on Keras' torch backend: `python -m
pocketml.export.coreai_convert REQUEST.json`, started by export/coreai.py with KERAS_BACKEND=torch.

Keras picks its backend once per process and the export runs on TensorFlow, so the classifier is
saved as a .keras file (stock layers only: export/graph.py) and loaded here, where a Keras model is a
`torch.nn.Module`. Apple's path then applies: `torch.export` -> the converter's decompositions ->
`coreai_torch.TorchConverter` -> an `.aimodel` asset. One child writes every file of a request (the
fp16 variant and each rung of the compressed ladder share one load and one export).

Variants: "fp32" as exported; "fp16": coreai-opt's FP32->FP16 cast pass on the exported program
(its input and output become float16 too); "palettized-<bits>":
each kernel of more than PALETTE_MIN_WEIGHTS weights as a <bits>-bit k-means palette (per tensor) read
through the converter's `coreai::lut_to_dense` op, the rest fp16.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import numpy as np
from pocketml.export.coreai import INPUT_NAME, OUTPUT_NAME, PALETTE_MIN_WEIGHTS


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


def palettize_kernels(model, bits: int) -> int:
    """Every kernel of more than PALETTE_MIN_WEIGHTS weights read through a `bits`-bit look-up table
    (the converter's coreai::lut_to_dense op, stored as indices + palette); returns how many.

    Keras' torch layers hand the kernel to the op through `Variable.value` (transposed first, so
    coreai-opt's palettiser, which looks for the nn.Parameter an op receives, finds none): the
    variable's class is swapped for one whose value is the look-up."""
    import torch

    count = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if any(True for _ in layer._flatten_layers(include_self=False, recursive=False)):
            continue  # a nested model: its layers come by themselves (its `weights` are all of theirs)
        for variable in layer.weights:
            name = variable.path.rsplit("/", 1)[-1]
            if name not in ("kernel", "depthwise_kernel") or int(np.prod(variable.shape)) <= PALETTE_MIN_WEIGHTS:
                continue
            indices, palette = kmeans_palette(np.asarray(variable.value.detach().cpu()), bits)
            # Buffers of the exported module itself, named *_indices / *_lut: the converter finds the
            # look-up's operands by those names in the program's state_dict (a nested Keras layer's
            # buffers would be lifted as anonymous constants).
            key = f"pocketml_{count}"
            model.register_buffer(f"{key}_indices", torch.from_numpy(indices))
            model.register_buffer(f"{key}_lut", torch.from_numpy(palette).reshape(*([1] * indices.ndim), 2**bits, 1))
            variable.__class__ = _palettized_class(type(variable))
            variable._pocketml_lookup = (model, key)
            count += 1
    return count


@functools.cache
def _palettized_class(base: type) -> type:
    import torch

    class PalettizedVariable(base):
        @property
        def value(self):
            owner, key = self._pocketml_lookup
            indices, lut = getattr(owner, f"{key}_indices"), getattr(owner, f"{key}_lut")
            return torch.ops.coreai.lut_to_dense(indices, lut, 0)

    return PalettizedVariable


def palettized_program(model, size: tuple[int, int], bits: int):
    """The model with its kernels palettised to `bits` bits (fp16 elsewhere), exported."""
    import coreai_torch._compression.custom_layers  # noqa: F401  (registers coreai::lut_to_dense)

    palettize_kernels(model, bits)
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
    return palettized_program(model, size, int(variant.removeprefix("palettized-")))


def main(argv: list[str]) -> int:
    import keras

    request = json.loads(Path(argv[0]).read_text())
    if keras.backend.backend() != "torch":
        raise RuntimeError(f"Core AI conversion needs KERAS_BACKEND=torch, not {keras.backend.backend()}")
    model = keras.saving.load_model(request["model"], compile=False)
    size = tuple(request["size"])
    base = exported_program(model, size)
    for variant, out in request["outputs"]:
        metadata = {**request["metadata"], "pocketml.precision": "compressed" if variant.startswith("palettized") else variant,
                    "pocketml.recipe": variant}
        fresh = keras.saving.load_model(request["model"], compile=False) if variant.startswith("palettized") else model
        save_asset(variant_program(fresh, size, variant, base), Path(out), metadata)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
