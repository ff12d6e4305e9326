"""ONNX Runtime Mobile files for the ONNX bundle, derived from the judged files.

The export's ONNX files take a dynamic batch ([N,H,W,3]: servers batch images). ORT Mobile's NNAPI
and CoreML execution providers take only nodes whose inputs have fixed shapes, so with a dynamic batch
ONNX Runtime's own checker finds NNAPI covers 102 of 306 nodes of an int8 EfficientNet-Lite0 and the
CoreML EP none; with the input fixed at [1,H,W,3] NNAPI takes all of them in one partition (fp32 and
int8). So the bundle adds `mobile/`: each shipped file with its batch fixed at 1 (`.onnx`) and in the
ORT format (`.ort`) that ORT Mobile's reduced builds load. Fixing the batch changes no weight or op:
the fixed file must give the judged file's outputs. The `.ort` file keeps ONNX Runtime's basic
(portable) optimisations only, so desktop ONNX Runtime runs an int8 one's QuantizeLinear /
DequantizeLinear pairs in float where it fuses the judged file into integer kernels: its largest
difference from the judged file is measured and printed, and its top-1 class must agree. The README
gets the checker's NNAPI / CoreML (ML Program) coverage of each mobile file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from pocketml.errors import PocketMLError

MOBILE_DIR = "mobile"
INPUT_NAME = "image"
SAME_OUTPUTS = 1e-6  # a derived file's largest difference from the judged one (the same graph: ~0)
CHECK_SEED = 0


def fixed_batch(src: Path, dst: Path, size: tuple[int, int]) -> None:
    """`src` with its input fixed at [1,H,W,3] and the output shapes inferred again."""
    import onnx
    from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_input_shape_fixed

    proto = onnx.load(str(src))
    make_input_shape_fixed(proto.graph, INPUT_NAME, [1, *size, 3])
    fix_output_shapes(proto)
    onnx.save(proto, str(dst))


def ort_format(src: Path, dst: Path) -> None:
    """`src` saved in the ORT format with ONNX Runtime's basic (platform-independent) optimisations,
    as `python -m onnxruntime.tools.convert_onnx_models_to_ort --optimization_style Fixed` does."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(dst)
    options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])


def _outputs(path: Path, image: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: image})[0]


def difference(judged: Path, derived: Path, size: tuple[int, int], limit: float | None = SAME_OUTPUTS) -> float:
    """max |difference| of `derived`'s outputs from `judged`'s on one image; a one-line error when it
    exceeds `limit` or (limit None) when the top-1 class differs."""
    image = np.random.default_rng(CHECK_SEED).uniform(0, 255, (1, *size, 3)).astype(np.float32)
    expected, got = _outputs(judged, image), _outputs(derived, image)
    diff = float(np.abs(expected - got).max())
    if (limit is not None and diff > limit) or int(expected.argmax()) != int(got.argmax()):
        raise PocketMLError(f"{derived.name} differs from {judged.name} by {diff:.3g}; not shipping it")
    return diff


def coverage(path: Path) -> dict[str, dict[str, int]]:
    """ONNX Runtime's mobile usability checker on `path` (after the basic optimisations ORT Mobile
    applies): nodes, nodes the NNAPI / CoreML ML Program EP takes, and the partitions they form."""
    import onnx
    from onnxruntime.tools.mobile_helpers.usability_checker import (
        check_coreml_partitions,
        check_nnapi_partitions,
    )
    from onnxruntime.tools.onnx_model_utils import optimize_model

    with tempfile.TemporaryDirectory(prefix="pocketml-ort-check-") as tmp:
        optimized = Path(tmp) / path.name
        optimize_model(path, optimized, use_external_initializers=False)
        model = onnx.shape_inference.infer_shapes(onnx.load(str(optimized)), strict_mode=True)
    found = {"NNAPI": check_nnapi_partitions(model, require_fixed_input_sizes=True),
             "CoreML": check_coreml_partitions(model, True, "coreml_supported_mlprogram_ops.md")}
    return {ep: {"nodes": info.num_nodes, "supported": info.num_supported_nodes, "partitions": info.num_partitions}
            for ep, info in found.items()}


def _cell(figures: dict[str, int]) -> str:
    share = figures["supported"] / figures["nodes"] if figures["nodes"] else 0.0
    return f"{figures['supported']}/{figures['nodes']} nodes ({share:.0%}) in {figures['partitions']} partition(s)"


def mobile_files(folder: Path, files: list[Path], size: tuple[int, int]) -> list[str]:
    """Write `mobile/` beside the shipped ONNX `files` in `folder`; returns the README's lines about it."""
    if not files:
        return []
    mobile = folder / MOBILE_DIR
    mobile.mkdir()
    rows = []
    for judged in files:
        fixed, ort_file = mobile / judged.name, mobile / f"{judged.stem}.ort"
        fixed_batch(judged, fixed, size)
        difference(judged, fixed, size)
        ort_format(fixed, ort_file)
        ort_diff = difference(judged, ort_file, size, limit=None)
        figures = coverage(fixed)
        rows.append(f"| `{MOBILE_DIR}/{fixed.name}`, `{MOBILE_DIR}/{ort_file.name}` | {_cell(figures['NNAPI'])} "
                    f"| {_cell(figures['CoreML'])} | {ort_diff:.2g} |")
    return ["", "## ONNX Runtime Mobile", "",
            f"`{MOBILE_DIR}/` holds each file with its input fixed at [1,{size[0]},{size[1]},3] (the NNAPI and "
            "CoreML execution providers take only fixed shapes) and in the ORT format that ORT Mobile's reduced "
            "builds load (basic, portable optimisations). The fixed `.onnx` gives the judged file's outputs; "
            "on desktop ONNX Runtime an int8 `.ort` runs its quantise/dequantise pairs in float (the judged file "
            "is fused into integer kernels), so its difference from the judged file on a check image is listed. "
            "Coverage by ONNX Runtime's mobile usability checker "
            "(`python -m onnxruntime.tools.check_onnx_model_mobile_usability`):", "",
            "| mobile files | NNAPI (Android) | CoreML EP, ML Program (iOS) | `.ort` vs judged, max\\|Δp\\| |",
            "|---|---|---|---|", *rows]
