"""TFLite (LiteRT) export: fp32, fp16, dynamic-range int8, full-integer int8 (float I/O) and int8
with uint8 input/output, each carrying standard classifier metadata and its labels file.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
from pocketml.export.registry import Converted
from pocketml.export.runtime import check_images
from pocketml.export.tflite_metadata import ClassifierInfo, populate

from pocketml.artifact import ModelRecord
from pocketml.errors import PocketMLError
from pocketml.fsutil import atomic_write_bytes
from pocketml.spec import ModelSpec

FORMAT = "tflite"
SUFFIX = ".tflite"
PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8", "int8-uint8io")
NEEDS_CALIBRATION = frozenset({"int8", "int8-uint8io"})
PLATFORMS = ("android",)
RUNS_ON = "Android (LiteRT, MediaPipe Tasks)"
MIN_OS = 0
TITLE = "TFLite / LiteRT"
LABELS_BESIDE = True  # the metadata carries them too, but plain Interpreter users read labels.txt
RUNTIME = "LiteRT Interpreter(num_threads=N) with its default XNNPACK delegate (Android's CPU path)"
THREADED = True  # its runtime takes a CPU thread count (bench times each count)
RUNTIME_MODULE = "ai_edge_litert.interpreter"
SNIPPETS = {"android": """```kotlin
// build.gradle: implementation("com.google.mediapipe:tasks-vision:0.10.21")  (MediaPipe Tasks; the
// TFLite Task Library is deprecated). Copy {file} into app/src/main/assets/.
import com.google.mediapipe.framework.image.BitmapImageBuilder
import com.google.mediapipe.tasks.core.BaseOptions
import com.google.mediapipe.tasks.vision.imageclassifier.ImageClassifier

val options = ImageClassifier.ImageClassifierOptions.builder()
    .setBaseOptions(BaseOptions.builder().setModelAssetPath("{file}").build())
    .setMaxResults(1)
    .build()
val classifier = ImageClassifier.createFromOptions(context, options)  // labels come from the file's metadata
val result = classifier.classify(BitmapImageBuilder(bitmap).build())
val best = result.classificationResult().classifications()[0].categories()[0]
Log.i("pocketml", "${{best.categoryName()}} ${{best.score()}}")
```"""}  # usage code per platform for the bundle README  # usage code per platform for the bundle README

NOTES = {
    "fp16": "fp16 weights; runs in fp32 on CPU and fp16 on the GPU delegate",
    "int8-dynamic": "int8 weights, activations quantised at run time; float input/output",
    "int8": "full integer (calibrated); float32 input 0..255 and float32 probabilities",
    "int8-uint8io": "full integer (calibrated); uint8 input (camera bytes 0..255) and uint8 output (probability x 255)",
}


def _frozen_function(model: Any, spec: ModelSpec):
    """The classifier as export/graph.py traces it for every converter, batch fixed at 1 (what
    mobile interpreters and the Task library's ImageClassifier expect)."""
    from pocketml.export.graph import frozen_function

    return frozen_function(model, spec.image_size, batch=1)


def _representative(calibration: np.ndarray):
    def dataset():
        for image in calibration:
            yield [image[None].astype(np.float32)]

    return dataset


def _converter(model: Any, spec: ModelSpec, precision: str, calibration: np.ndarray | None):
    import tensorflow as tf

    if precision in NEEDS_CALIBRATION:
        return int8_converter(model, spec, calibration, uint8_io=precision == "int8-uint8io")
    converter = tf.lite.TFLiteConverter.from_concrete_functions([_frozen_function(model, spec)])
    if precision == "fp32":
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif precision != "int8-dynamic":
        raise PocketMLError(f"tflite has no precision {precision!r}; accepted: {', '.join(PRECISIONS)}")
    return converter


def int8_converter(
    model: Any,
    spec: ModelSpec,
    calibration: np.ndarray | None,
    uint8_io: bool = False,
    fallback: bool = False,
    int16_activations: bool = False,
):
    """A full-integer converter calibrated (MinMax) on `calibration`: int8 per-channel weights, int8
    activations (int16 with `int16_activations`), float or uint8 I/O. `fallback` lets layers that a
    debugger denylists stay float; without it every op must be integer or conversion fails."""
    import tensorflow as tf

    if calibration is None or len(calibration) == 0:
        raise PocketMLError("tflite int8 needs calibration images; pass --calibration DIR")
    converter = tf.lite.TFLiteConverter.from_concrete_functions([_frozen_function(model, spec)])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(calibration)
    ops = tf.lite.OpsSet
    if int16_activations:
        converter.target_spec.supported_ops = [ops.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    else:
        converter.target_spec.supported_ops = [ops.TFLITE_BUILTINS_INT8] + ([ops.TFLITE_BUILTINS] if fallback else [])
    if uint8_io:
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    return converter


def _info(spec: ModelSpec, precision: str) -> ClassifierInfo:
    norm = spec.normalization
    description = (
        f"Image classifier ({', '.join(spec.labels)}), {spec.image_size[0]}x{spec.image_size[1]} RGB, {precision}. "
        f"Preprocessing is inside the model ({norm.describe()}); "
        "feed pixels 0..255."
    )
    version = (spec.source_sha256 or "unknown")[:12]
    return ClassifierInfo("pocketml classifier", description, version, spec.labels, precision == "int8-uint8io")


def convert(
    model: Any,
    spec: ModelSpec,
    precision: str,
    out_path: Path,
    calibration: np.ndarray | None,
    judge: Any = None,
) -> list[str] | Converted:
    """Write `model` as a .tflite of `precision` to `out_path`; returns notes for the user.

    int8 with a `judge` (export.judge.Judge) runs the recovery ladder (export/quantization/tflite.py)
    and keeps its first rung within budget. Without one, and for int8-uint8io (the strict integer-only
    file accelerators need), the file is the ladder's first rung: full integer, bias-corrected weights.
    """
    if precision in NEEDS_CALIBRATION:
        return _integer(model, spec, precision, Path(out_path), calibration, judge)
    tflite = _converter(model, spec, precision, calibration).convert()
    atomic_write_bytes(out_path, populate(tflite, _info(spec, precision)))
    return [NOTES[precision]] if precision in NOTES else []


def _integer(model, spec, precision, out_path: Path, calibration, judge) -> Converted:
    import tempfile

    from pocketml.export.quantization import tflite as ladder
    from pocketml.export.quantization.search import move_into_place, run_ladder, worst_note

    if calibration is None or len(calibration) == 0:
        raise PocketMLError(f"tflite {precision} needs calibration images; pass --calibration DIR")
    finish = lambda content: populate(content, _info(spec, precision))  # noqa: E731
    facts: dict = {}
    if precision == "int8" and judge is not None:
        with tempfile.TemporaryDirectory(prefix="pocketml-tflite-ladder-") as work:
            outcome = run_ladder(sys.modules[__name__], precision, ladder.candidates(model, spec, calibration, finish, facts),
                                 judge, Path(work))
            if outcome.path is None:
                raise PocketMLError("every rung of the tflite int8 ladder failed to convert: "
                                    + "; ".join(f"{s.step}: {s.reason}" for s in outcome.steps))
            move_into_place(outcome.path, out_path)
        facts.pop("rank")()
        details = outcome.details(precision, facts.pop("sensitivity", []), **facts)
        notes = [NOTES[precision], *outcome.built.notes, _ladder_note(outcome),
                 worst_note("tflite int8", details["sensitivity"])]
        return Converted([n for n in notes if n], details)
    rung = next(ladder.candidates(model, spec, calibration, finish, facts))
    facts.pop("rank")  # no search, no ranking: the debugger's table comes with the ladder
    built = rung.build(out_path) if precision == "int8" else _strict(model, spec, calibration, out_path, finish, facts)
    details = {"integer_only": built.integer_only, "float_ops": built.float_ops,
               "activation_bits": built.activation_bits, "recipe": rung.settings, **facts}
    notes = [NOTES[precision], f"calibrated on {len(calibration)} images; input normalisation folded where the graph allows, "
             "weights bias-corrected for int8 rounding"]
    if precision == "int8-uint8io":
        notes.append("strict integer-only (NPU / DSP / Edge TPU); if its verdict fails, prefer int8 on CPU")
    return Converted(notes, details)


def _strict(model, spec, calibration, out_path: Path, finish, facts: dict):
    from pocketml.export.quantization.fold import integer_ready
    from pocketml.export.quantization.search import Built

    ready, done = integer_ready(model, calibration, qmax=127)
    facts.update(done)
    atomic_write_bytes(out_path, finish(int8_converter(ready, spec, calibration, uint8_io=True).convert()))
    return Built(integer_only=True)


def _ladder_note(outcome) -> str:
    chosen = outcome.chosen
    kind = "integer-only" if outcome.built.integer_only else f"{len(outcome.built.float_ops)} ops kept float"
    verdict = outcome.verdict_words()
    return (f"tflite int8: ladder took {len(outcome.steps)} step(s) in {outcome.seconds:.0f} s, "
            f"{verdict}: {chosen.step} ({kind})")


class TFLitePredictor:
    """LiteRT interpreter behind the Predictor contract; quantised I/O is converted to and from float."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.name = f"tflite:{path.stem}"
        # None keeps LiteRT's default; a count is what an app passes to Interpreter.Options.setNumThreads.
        self.interpreter = Interpreter(model_path=str(path), num_threads=_threads(threads))
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.input_size = (int(self.input["shape"][1]), int(self.input["shape"][2]))

    def _quantised_input(self, image: np.ndarray) -> np.ndarray:
        dtype = self.input["dtype"]
        if dtype == np.float32:
            return image[None].astype(np.float32)
        scale, zero_point = self.input["quantization"]
        info = np.iinfo(dtype)
        values = np.round(image.astype(np.float32) / scale + zero_point)
        return np.clip(values, info.min, info.max).astype(dtype)[None]

    def _float_output(self, raw: np.ndarray) -> np.ndarray:
        if self.output["dtype"] == np.float32:
            return raw.astype(np.float32)
        scale, zero_point = self.output["quantization"]
        return ((raw.astype(np.float32) - zero_point) * scale).astype(np.float32)

    def invoker(self, image: np.ndarray):
        """One interpreter call on `image` (batch 1), its input already quantised."""
        x = self._quantised_input(check_images(image, self.input_size)[0])
        interpreter, index, out_index = self.interpreter, self.input["index"], self.output["index"]

        def run():
            interpreter.set_tensor(index, x)
            interpreter.invoke()
            return interpreter.get_tensor(out_index)

        return run

    def predict(self, images: np.ndarray) -> np.ndarray:
        images = check_images(images, self.input_size)
        rows = [self._float_output(self.invoker(image[None])())[0] for image in images]
        classes = int(self.output["shape"][-1])
        return np.stack(rows) if rows else np.zeros((0, classes), dtype=np.float32)


def _threads(threads: int | None) -> int | None:
    if threads is not None and threads < 1:
        raise PocketMLError(f"threads must be >= 1; got {threads}")
    return threads


def load(path: str | Path, threads: int | None = None) -> TFLitePredictor:
    """A Predictor for a .tflite file; `threads` sets the interpreter's CPU threads (None: LiteRT's default)."""
    path = Path(path)
    if not path.is_file():
        raise PocketMLError(f"{path} does not exist; give a .tflite file written by `pocketml export`")
    return TFLitePredictor(path, threads)


def bundle_extras(folder: Path, files: list[Path], model: ModelRecord) -> list[str]:
    return []  # the shipped files are all its bundle needs


def unavailable() -> str | None:
    return None  # its converter and runtime are pocketml's own dependencies


def latency_unavailable() -> str | None:
    return None  # LiteRT runs wherever pocketml runs


def read_labels(path: str | Path) -> tuple[str, ...] | None:
    """The labels file the model carries (TENSOR_AXIS_LABELS, zipped onto its end), or None."""
    from pocketml.export.tflite_metadata import LABELS_NAME, read_associated_files

    text = read_associated_files(Path(path).read_bytes()).get(LABELS_NAME)
    labels = tuple(line.strip() for line in (text or b"").decode("utf-8").splitlines() if line.strip())
    return labels or None


def read_precision(path: str | Path) -> str | None:
    """None: the TFLite metadata schema has no field for it (pocketml's files say it in their name)."""
    return None
