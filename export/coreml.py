"""Core ML export: an `.mlpackage` ML program an iOS app hands camera frames to through Vision.

The input is an RGB image (scale 1, bias 0: the model's own preprocessing stays inside the model)
and the output is a classifier (class label + probability per label), so Vision returns
VNClassificationObservation. Precisions: fp32 and fp16 compute, int8 linear weight quantisation and
6-bit k-means palettisation. Labels, the spec and the input description travel in the package's
user-defined metadata, where `read_spec` finds them again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from pocketml.export.registry import Converted
from pocketml.export.runtime import META_SPEC, check_images, spec_from_metadata

from pocketml.artifact import ModelRecord
from pocketml.configs.export import COREML_TARGET, COREML_TARGETS
from pocketml.errors import PocketMLError, RuntimeUnavailable
from pocketml.spec import ModelSpec

FORMAT = "coreml"
SUFFIX = ".mlpackage"
PRECISIONS = ("fp32", "fp16", "int8-weights", "palettized-6bit", "compressed")
NEEDS_CALIBRATION: frozenset[str] = frozenset()
PLATFORMS = ("ios",)
RUNS_ON = "iOS 16+, macOS 13+ (Core ML)"
MIN_OS = 16  # DEFAULT_TARGET; `--min-ios` may raise it
TITLE = "Core ML"
LABELS_BESIDE = False  # the classifier output carries the labels inside the package
RUNTIME = "Core ML through coremltools on macOS; elsewhere accuracy only, via pocketml's reference executor"
THREADED = False  # its runtime takes a CPU thread count (bench times each count)
RUNTIME_MODULE = "coremltools"
SNIPPETS = {"ios": """```swift
import CoreML
import Vision

// Drag {file} into Xcode; it generates a class with the package's name.
let model = try VNCoreMLModel(for: MLModel(contentsOf: {class_name}.urlOfModelInThisBundle))
let request = VNCoreMLRequest(model: model) {{ request, _ in
    guard let best = (request.results as? [VNClassificationObservation])?.first else {{ return }}
    print(best.identifier, best.confidence)
}}
request.imageCropAndScaleOption = .centerCrop  // the model was trained on centre crops
try VNImageRequestHandler(cvPixelBuffer: pixelBuffer).perform([request])
```"""}  # usage code per platform for the bundle README

DEFAULT_TARGET = COREML_TARGET  # the first iOS whose Core ML runs compressed (constexpr) weights
TARGETS = COREML_TARGETS  # accepted minimum deployment targets (declared with the [export] config)
# An app for iOS 27+ still ships Core ML beside Core AI: its package is built for coremltools' newest target.
TARGET_BUILT_AS = {"iOS27": "iOS26"}
INPUT_NAME = "image"
PALETTE_BITS = 6  # 64-entry look-up table per weight tensor

# coremltools' default weight_threshold leaves tensors of <= 2048 weights (depthwise kernels) alone:
# compressing them saves little and costs accuracy.
UNCOMPRESSED_NOTE = "; smaller tensors (<= 2048 weights) and all compute stay fp16"

META_LABELS = "pocketml.labels"  # JSON list in output order
META_INPUT = "pocketml.input"  # JSON: name, shape, colour layout, scale, bias
META_PRECISION = "pocketml.precision"


def convert(
    model,
    spec: ModelSpec,
    precision: str,
    out_path: Path,
    calibration: np.ndarray | None,
    minimum_deployment_target: str = DEFAULT_TARGET,
    judge=None,
) -> list[str] | Converted:
    """Write `model` as an .mlpackage of `precision` to `out_path`; returns notes for the user.

    Weight compression needs no activation statistics; `calibration` only ranks the ops whose
    compression costs most, for `compressed`: the first rung of export/quantization/coreml.py's ladder
    within budget (`judge`) and at most 30 % of the fp32 package's size.
    """
    if precision not in PRECISIONS:
        raise PocketMLError(f"unknown Core ML precision {precision!r}; accepted: {', '.join(PRECISIONS)}")
    target = deployment_target(minimum_deployment_target)
    if precision == "compressed":
        return _compressed(model, spec, Path(out_path), calibration, target, minimum_deployment_target, judge)
    mlmodel = ml_program(model, spec, compute_precision(precision), target)
    notes: list[str] = []
    if precision == "int8-weights":
        mlmodel = int8_weights(mlmodel)
        notes.append(
            f"coreml int8-weights: {compressed_tensors(mlmodel)} weight tensors int8 (linear symmetric)"
            f"{UNCOMPRESSED_NOTE}"
        )
    elif precision == "palettized-6bit":
        mlmodel = palettized(mlmodel)
        notes.append(
            f"coreml palettized-6bit: {compressed_tensors(mlmodel)} weight tensors as 64-entry k-means"
            f" look-up tables{UNCOMPRESSED_NOTE}"
        )
    set_metadata(mlmodel, spec, precision, minimum_deployment_target)
    mlmodel.save(str(out_path))
    return notes


def _compressed(model, spec: ModelSpec, out_path: Path, calibration, target, target_name: str, judge) -> Converted:
    import tempfile

    from pocketml.export.quantization import coreml as ladder
    from pocketml.export.quantization.search import move_into_place, run_ladder, worst_note

    from pocketml.fsutil import tree_bytes

    def save(mlmodel, path: Path) -> None:
        set_metadata(mlmodel, spec, "compressed", target_name)
        mlmodel.save(str(path))

    with tempfile.TemporaryDirectory(prefix="pocketml-coreml-ladder-") as work:
        work = Path(work)
        fp32_path, fp16_path = work / "fp32.mlpackage", work / "fp16.mlpackage"
        ml_program(model, spec, compute_precision("fp32"), target).save(str(fp32_path))
        fp16 = ml_program(model, spec, compute_precision("fp16"), target)
        save(fp16, fp16_path)
        facts: dict = {}
        images = calibration if calibration is not None and len(calibration) else None
        rungs = ladder.candidates(fp16, fp16_path, images, save, facts,
                                  grouped=TARGETS.index(target_name) >= TARGETS.index("iOS18"),
                                  program=lambda keras_model: ml_program(keras_model, spec, compute_precision("fp16"), target),
                                  keras_model=model)
        fp32_bytes = tree_bytes(fp32_path)
        if judge is None:
            return _smallest_unjudged(rungs, ladder.size_precheck(fp32_bytes), out_path, work, fp32_bytes, facts)
        outcome = run_ladder(sys.modules[__name__], "compressed", rungs, judge, work,
                             precheck=ladder.size_precheck(fp32_bytes))
        if outcome.path is None:
            raise PocketMLError("no rung of the coreml compressed ladder was within 30 % of fp32's size: "
                                + "; ".join(f"{s.step}: {s.reason}" for s in outcome.steps))
        rank = facts.pop("rank")
        if images is not None:
            rank()  # the export names the ops whose compression costs most even when an early rung passes
        move_into_place(outcome.path, out_path)
    chosen = outcome.chosen
    verdict = outcome.verdict_words()
    notes = [f"coreml compressed: ladder took {len(outcome.steps)} step(s) in {outcome.seconds:.0f} s, {verdict}: "
             f"{chosen.step}, {chosen.bytes / fp32_bytes:.3f} of fp32's {fp32_bytes / 1e6:.2f} MB"]
    details = outcome.details("compressed", facts.pop("sensitivity", []), fp32_bytes=fp32_bytes, size_goal=ladder.SIZE_GOAL, **facts)
    notes.append(worst_note("coreml compressed", details["sensitivity"]))
    return Converted([n for n in notes if n], details)


def _smallest_unjudged(rungs, precheck, out_path: Path, work: Path, fp32_bytes: int, facts: dict) -> Converted:
    """Without evaluation images nothing can be judged: the first rung within the size goal is kept."""
    from pocketml.export.quantization.search import Step, move_into_place

    from pocketml.fsutil import tree_bytes

    facts.pop("rank", None)
    tried = []
    for index, rung in enumerate(rungs):
        path = work / f"unjudged{index}{SUFFIX}"
        built = rung.build(path)
        step = Step(rung.step, dict(rung.settings), "not judged", bytes=tree_bytes(path))
        why = precheck(step)
        tried.append(f"{rung.step}: {why or 'within the size goal'}")
        if why is None:
            move_into_place(path, out_path)
            note = (f"coreml compressed: {rung.step}, {step.bytes / fp32_bytes:.3f} of fp32's size; not judged "
                    "(no evaluation images), so no rung's accuracy was checked")
            return Converted([note], {"integer_only": built.integer_only, "float_ops": built.float_ops,
                                      "recipe": step.settings, "tried": tried, "fp32_bytes": fp32_bytes, **facts})
    raise PocketMLError("no coreml compressed rung is within 30 % of fp32's size: " + "; ".join(tried))


def deployment_target(name: str):
    """The coremltools target for a name such as "iOS16", else a one-line error."""
    import coremltools as ct

    if name not in TARGETS:
        raise PocketMLError(f"unknown minimum deployment target {name!r}; accepted: {', '.join(TARGETS)}")
    return getattr(ct.target, TARGET_BUILT_AS.get(name, name))


def compute_precision(precision: str):
    """fp32 computes in float32; every other variant is an fp16 program, as it runs on device
    (the Neural Engine computes in fp16) and as Apple's compression workflow starts from."""
    import coremltools as ct

    return ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16


def ml_program(model, spec: ModelSpec, precision, target):
    """The classifier as export/graph.py traces it (a frozen concrete function whose input is
    `image`), converted by coremltools' TF2 frontend: handing it the Keras object instead fails on
    Sequential models and on inputs not named `image`."""
    import coremltools as ct
    from pocketml.export.graph import frozen_function

    height, width = spec.image_size
    layout = ct.colorlayout.RGB if spec.color_order == "RGB" else ct.colorlayout.BGR
    image = ct.ImageType(
        name=INPUT_NAME, shape=(1, height, width, 3), color_layout=layout, scale=1.0, bias=[0, 0, 0]
    )
    return ct.convert(
        [frozen_function(model, spec.image_size, batch=1)],
        source="tensorflow",
        inputs=[image],
        classifier_config=ct.ClassifierConfig(list(spec.labels)),
        convert_to="mlprogram",
        compute_precision=precision,
        minimum_deployment_target=target,
    )


def int8_weights(mlmodel):
    import coremltools.optimize.coreml as cto

    op_config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8")
    # A channel whose folded weights are all zero (a BatchNorm gamma of 0) gets scale 0, so numpy
    # warns about 0/0 while quantising it; it dequantises to 0 * q = 0 exactly, so the warning is noise.
    with np.errstate(invalid="ignore", divide="ignore"):
        return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=op_config))


def palettized(mlmodel):
    import coremltools.optimize.coreml as cto

    op_config = cto.OpPalettizerConfig(mode="kmeans", nbits=PALETTE_BITS)  # k-means runs on scikit-learn
    return cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=op_config))


def compressed_tensors(mlmodel) -> int:
    """How many weight tensors the program stores compressed (one constexpr op each)."""
    function = mlmodel.get_spec().mlProgram.functions["main"]
    operations = function.block_specializations[function.opset].operations
    return sum(op.type.startswith("constexpr_") for op in operations)


def input_description(spec: ModelSpec) -> dict:
    height, width = spec.image_size
    return {
        "name": INPUT_NAME,
        "shape": [1, height, width, 3],
        "color_layout": spec.color_order,
        "scale": 1.0,
        "bias": [0.0, 0.0, 0.0],
        "range": list(spec.input_range),
        "preprocessing": f"inside the model ({spec.normalization.describe()})",
    }


def set_metadata(mlmodel, spec: ModelSpec, precision: str, target: str) -> None:
    import pocketml

    height, width = spec.image_size
    what = f"{spec.backbone or 'image'} classifier ({', '.join(spec.labels)})"
    mlmodel.short_description = f"{what}, {precision}, minimum target {target}; pocketml export"
    mlmodel.author = "pocketml"
    mlmodel.version = f"{pocketml.__version__}+{(spec.source_sha256 or 'unhashed')[:12]}"
    mlmodel.input_description[INPUT_NAME] = (
        f"RGB image {width}x{height}, pixels 0..255 (preprocessing is inside)"
    )
    metadata = mlmodel.user_defined_metadata
    metadata[META_LABELS] = json.dumps(list(spec.labels))
    metadata[META_SPEC] = json.dumps(spec.to_dict())
    metadata[META_INPUT] = json.dumps(input_description(spec))
    metadata[META_PRECISION] = precision


def read_model_spec(path: Path):
    """The package's Model protobuf (no weights loaded, no Core ML runtime needed)."""
    import coremltools as ct

    path = Path(path)
    if not (path / "Manifest.json").is_file():
        raise PocketMLError(
            f"{path} is not an .mlpackage (no Manifest.json); give a Core ML package directory"
        )
    return ct.utils.load_spec(str(path))


def read_metadata(path: Path) -> dict[str, str]:
    """The package's user-defined metadata."""
    return dict(read_model_spec(path).description.metadata.userDefined)


def read_spec(path: Path) -> ModelSpec:
    """The ModelSpec pocketml stored in an .mlpackage's metadata (labels in output order)."""
    return spec_from_metadata(read_metadata(path), path)


class CoreMLPredictor:
    """An .mlpackage run by the Core ML runtime (macOS only); see export/runtime.py."""

    def __init__(self, path: Path) -> None:
        import coremltools as ct

        model_spec = read_model_spec(path)
        self.spec = read_spec(path)
        self.name = f"coreml-{model_spec.description.metadata.userDefined.get(META_PRECISION, 'unknown')}"
        self.input_size = self.spec.image_size
        self._probabilities = model_spec.description.predictedProbabilitiesName
        self.model = ct.models.MLModel(str(path))

    def invoker(self, image: np.ndarray):
        """One Core ML prediction on `image` (batch 1), the pixel buffer built once."""
        from PIL import Image

        # A Core ML image input is 8-bit per channel: float pixels are rounded as a camera frame would be.
        pixels = np.clip(np.rint(check_images(image, self.input_size)[0]), 0, 255).astype(np.uint8)
        feed = {INPUT_NAME: Image.fromarray(pixels, "RGB")}
        model = self.model
        return lambda: model.predict(feed)

    def predict(self, images: np.ndarray) -> np.ndarray:
        images = check_images(images, self.input_size)
        rows = []
        for image in images:
            by_label = self.invoker(image[None])()[self._probabilities]
            rows.append([by_label[label] for label in self.spec.labels])
        return np.asarray(rows, dtype=np.float32)


def bundle_extras(folder: Path, files: list[Path], model: ModelRecord) -> list[str]:
    return []  # the shipped files are all its bundle needs


def unavailable() -> str | None:
    return None  # its converter and runtime are pocketml's own dependencies


def latency_unavailable() -> str | None:
    """Off macOS only the reference executor runs a package: its speed says nothing about a phone's."""
    return None if sys.platform == "darwin" else f"n/a: no Core ML runtime on {sys.platform}"


def load(path: Path, threads: int | None = None):
    """A Predictor for an .mlpackage: Core ML itself on macOS, the numpy reference executor elsewhere.

    `threads` is accepted for the common contract and ignored: Core ML schedules its own compute units.
    """
    path = Path(path)
    if sys.platform == "darwin":
        return CoreMLPredictor(path)
    try:
        from pocketml.export import coreml_reference
    except ModuleNotFoundError as exc:
        if exc.name != "pocketml.export.coreml_reference":
            raise
        raise RuntimeUnavailable(
            f"no Core ML runtime on {sys.platform}: Core ML runs only on macOS and the reference executor "
            "(export.coreml_reference) is not installed"
        ) from exc
    return coreml_reference.load_reference(path)


def read_labels(path: Path) -> tuple[str, ...] | None:
    """The labels in the package's metadata (output order), or None for a package from elsewhere."""
    labels = read_metadata(Path(path)).get(META_LABELS)
    return tuple(json.loads(labels)) if labels else None


def read_precision(path: Path) -> str | None:
    """The precision pocketml recorded in the package's metadata, or None for a package from elsewhere."""
    return read_metadata(Path(path)).get(META_PRECISION)
