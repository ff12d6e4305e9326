"""Core AI conversion in a child interpreter on Keras' torch backend: `python -m
pocketml.export.coreai_convert REQUEST.json`, started by export/coreai.py with KERAS_BACKEND=torch.

Keras picks its backend once per process and the export runs on TensorFlow, so the classifier is
saved as a .keras file (stock layers only: export/graph.py) and loaded here, where a Keras model is a
`torch.nn.Module`. Apple's path then applies: `torch.export` -> the converter's decompositions ->
`coreai_torch.TorchConverter` -> an `.aimodel` asset. One child writes every file of a request (the
fp16 variant and each rung of the compressed ladder share one load and one export).

Variants: "fp32" as exported; "fp16": coreai-opt's FP32->FP16 cast pass on the exported program
(its input and output become float16 too); "palettized-<bits>[g<N>]":
coreai-opt's k-means palettiser (per tensor, or per group of N output channels) on the fp16 program.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
ERROR_EXIT = 2  # a refusal the parent reports as the variant's reason


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


def palettized_program(model, size: tuple[int, int], bits: int, group: int | None):
    """The model with k-means palettised weights (fp16 elsewhere), exported."""
    import torch
    from coreai_opt.palettization import KMeansPalettizer, KMeansPalettizerConfig

    presets = KMeansPalettizerConfig.presets
    config = {4: presets.w4, 6: presets.w6}[bits](group_size=group) if group else presets.w8()
    if not group and bits != 8:
        raise ValueError(f"per-tensor palettes are offered at 8 bits only, not {bits}")
    example = torch.zeros((1, *size, 3), dtype=torch.float32)
    palettizer = KMeansPalettizer(model, config)
    prepared = palettizer.prepare((example,))
    final = palettizer.finalize(prepared)
    final.eval()
    with torch.no_grad():
        return fp16_program(torch.export.export(final, (example,)))


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
    bits, _, group = variant.removeprefix("palettized-").partition("g")
    return palettized_program(model, size, int(bits), int(group) if group else None)


def main(argv: list[str]) -> int:
    import keras

    request = json.loads(Path(argv[0]).read_text())
    if keras.backend.backend() != "torch":
        raise RuntimeError(f"Core AI conversion needs KERAS_BACKEND=torch, not {keras.backend.backend()}")
    model = keras.saving.load_model(request["model"], compile=False)
    size = tuple(request["size"])
    base = exported_program(model, size)
    for variant, out in request["outputs"]:
        metadata = {**request["metadata"], "pocketml.precision": variant}
        save_asset(variant_program(model, size, variant, base), Path(out), metadata)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
