"""ONNX export: fp32 through tf2onnx, fp16 with float32 I/O, dynamic and static (QDQ) int8 through
onnxruntime.quantization, and a Predictor over onnxruntime's CPU provider.

Every file takes `image`: float32 [N, H, W, 3] RGB 0..255 (NHWC, the model's preprocessing inside) and
returns `probabilities`: float32 [N, classes]. Labels, the spec and the normalisation travel in the
model's `metadata_props`, so a file on its own says what it expects and what its outputs mean.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pocketml.export.registry import Converted
from pocketml.export.runtime import META_SPEC, check_images, spec_from_metadata

from pocketml.artifact import ModelRecord
from pocketml.configs.export import ONNX_OPSET, ONNX_OPSETS
from pocketml.errors import PocketMLError, one_line
from pocketml.spec import ModelSpec

FORMAT = "onnx"
SUFFIX = ".onnx"
PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8")
NEEDS_CALIBRATION = frozenset({"int8"})
PLATFORMS = ("onnx",)
RUNS_ON = "ONNX Runtime (desktop, server; ORT Mobile on Android and iOS)"
MIN_OS = 0
TITLE = "ONNX Runtime"
LABELS_BESIDE = True  # metadata_props hold them too, but few ONNX Runtime users read those
RUNTIME = "ONNX Runtime CPUExecutionProvider, intra_op_num_threads=N, inter_op_num_threads=1"
THREADED = True  # its runtime takes a CPU thread count (bench times each count)
RUNTIME_MODULE = "onnxruntime"
SNIPPETS = {"onnx": """```python
import numpy as np
import onnxruntime as ort
from PIL import Image

session = ort.InferenceSession("{file}", providers=["CPUExecutionProvider"])
labels = open("labels.txt", encoding="utf-8").read().splitlines()
image = Image.open("photo.jpg").convert("RGB").resize(({width}, {height}))
pixels = np.asarray(image, dtype=np.float32)[None]  # [1, H, W, 3] RGB 0..255; normalised inside the model
probabilities = session.run(None, {{session.get_inputs()[0].name: pixels}})[0][0]
print(labels[int(probabilities.argmax())], float(probabilities.max()))
```""" + """

On Android, ONNX Runtime Mobile with NNAPI (the file from `mobile/`, its batch fixed at 1):

```kotlin
// build.gradle: implementation("com.microsoft.onnxruntime:onnxruntime-android:1.24.2")
import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import java.nio.FloatBuffer

val env = OrtEnvironment.getEnvironment()
val options = OrtSession.SessionOptions().apply {{ addNnapi() }}
val session = env.createSession(context.assets.open("mobile/{stem}.ort").readBytes(), options)
// pixels: FloatArray of {height}x{width}x3 RGB values 0..255 (row-major, channels last)
val input = OnnxTensor.createTensor(env, FloatBuffer.wrap(pixels), longArrayOf(1, {height}, {width}, 3))
val probabilities = (session.run(mapOf("image" to input))[0].value as Array<FloatArray>)[0]
```

On iOS, ONNX Runtime Mobile with the CoreML execution provider (CocoaPods `onnxruntime-objc`):

```swift
import onnxruntime_objc

let env = try ORTEnv(loggingLevel: .warning)
let options = try ORTSessionOptions()
try options.appendCoreMLExecutionProvider(with: ORTCoreMLExecutionProviderOptions())
let path = Bundle.main.path(forResource: "{stem}", ofType: "ort")!  // from mobile/
let session = try ORTSession(env: env, modelPath: path, sessionOptions: options)
// pixelData: Data of {height}x{width}x3 Float32 RGB values 0..255, channels last
let input = try ORTValue(tensorData: NSMutableData(data: pixelData), elementType: .float, shape: [1, {height}, {width}, 3])
let outputs = try session.run(withInputs: ["image": input], outputNames: ["probabilities"], runOptions: nil)
```"""}  # usage code per platform for the bundle README; {stem}: the file's name without its suffix  # usage code per platform for the bundle README

OPSET = ONNX_OPSET  # the default opset (the accepted range is declared with the [export] config)
OPSETS = ONNX_OPSETS
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
CALIBRATION_BATCH = 16  # images per calibration batch: bounds memory while collecting ranges
PREDICT_BATCH = 64  # images per session.run call: bounds memory for large evaluation sets
# Ops that quantise activations at run time with one scale over the whole input tensor: in a batch, every
# image's outputs depend on the others (measured: the demo's int8-dynamic file moved by up to 0.045 between
# batches of 8 and of 16), so such a file is judged, like an app runs it, one image per run.
RUNTIME_QUANTISED_OPS = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"})

META_LABELS = "labels"  # JSON list, in output order
META_NORMALIZATION = "normalization"  # JSON of the in-model preprocessing (already applied inside)
META_INPUT = "input"  # JSON: name, layout, dtype, range, colour order
META_PRECISION = "pocketml.precision"

DYNAMIC_INT8_NOTE = (
    "onnx int8-dynamic: ONNX Runtime quantises activations at run time and its ConvInteger kernels "
    "are slow: it ran ~8x slower than fp32 on an AVX2 CPU without VNNI (~15x on an AVX-512 VNNI one); "
    "prefer fp32, fp16 or static int8 for convolutional models"
)


def convert(
    model,
    spec: ModelSpec,
    precision: str,
    out_path: Path,
    calibration: np.ndarray | None,
    opset: int = OPSET,
    judge=None,
) -> list[str] | Converted:
    """Write `model` as an ONNX file of `precision` to `out_path`; returns notes for the user.

    int8 with a `judge` (export.judge.Judge) runs the recovery ladder (export/quantization/onnx.py)
    and keeps its first rung within budget; without one it writes the ladder's first rung.
    """
    if precision not in PRECISIONS:
        raise PocketMLError(f"unknown ONNX precision {precision!r}; accepted: {', '.join(PRECISIONS)}")
    if opset not in OPSETS:
        raise PocketMLError(
            f"ONNX opset {opset} is not accepted; use {OPSETS.start}..{OPSETS.stop - 1} (default {OPSET})"
        )
    if precision in NEEDS_CALIBRATION:
        calibration = calibration_images(calibration, spec)  # before the slow conversion, not after
        return _static_int8(model, spec, precision, Path(out_path), calibration, opset, judge)
    fp32 = float32_model(model, spec, opset)
    notes: list[str] = []
    if precision == "fp32":
        proto = folded(fp32)
    elif precision == "fp16":
        proto = float16_model(folded(fp32))
    else:
        proto = dynamic_int8_model(fp32)
        notes.append(DYNAMIC_INT8_NOTE)
    Path(out_path).write_bytes(finished(proto, spec, precision))
    return notes


def finished(proto, spec: ModelSpec, precision: str) -> bytes:
    """The file's bytes: only the opsets used, pocketml's metadata, checked by onnx.checker."""
    import onnx

    drop_unused_opsets(proto)
    add_metadata(proto, spec, precision)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _static_int8(model, spec: ModelSpec, precision: str, out_path: Path, calibration: np.ndarray, opset: int, judge):
    import tempfile

    from pocketml.export.quantization import onnx as ladder
    from pocketml.export.quantization.search import move_into_place, run_ladder, worst_note

    finish = lambda proto: finished(proto, spec, precision)  # noqa: E731
    facts: dict = {}
    rungs = ladder.candidates(model, spec, opset, calibration, finish, facts)
    cpu = "reduce_range (7-bit weights)" if ladder.cpu_settings()["reduce_range"] else "8-bit weights"
    base = f"onnx int8: static QDQ U8S8 per-channel, {cpu} for this CPU, calibrated on {len(calibration)} images"
    if judge is None:
        rung = next(rungs)
        built = rung.build(out_path)
        facts.pop("rank")
        notes = [base + "; input normalisation folded where the graph allows, weights bias-corrected"]
        return Converted(notes, {"integer_only": built.integer_only, "float_ops": built.float_ops,
                                 "recipe": rung.settings, **facts})
    with tempfile.TemporaryDirectory(prefix="pocketml-onnx-ladder-") as work:
        outcome = run_ladder(sys.modules[__name__], precision, rungs, judge, Path(work))
        if outcome.path is None:
            raise PocketMLError("every rung of the onnx int8 ladder failed: "
                                + "; ".join(f"{s.step}: {s.reason}" for s in outcome.steps))
        facts.pop("rank")()  # the export names the costliest tensors even when the first rung passes
        move_into_place(outcome.path, out_path)
    chosen = outcome.chosen
    kind = "integer-only (softmax float)" if outcome.built.integer_only else f"{len(outcome.built.float_ops)} ops float"
    verdict = outcome.verdict_words()
    notes = [base, *outcome.built.notes,
             f"onnx int8: ladder took {len(outcome.steps)} step(s) in {outcome.seconds:.0f} s, {verdict}: {chosen.step} ({kind})"]
    details = outcome.details(precision, facts.pop("sensitivity", []), **facts)
    notes.append(worst_note("onnx int8", details["sensitivity"]))
    return Converted([n for n in notes if n], details)


def float32_model(model, spec: ModelSpec, opset: int = OPSET):
    """The classifier as export/graph.py traces it, as an fp32 ONNX ModelProto with input `image`
    [N,H,W,3] and output `probabilities` (from_keras fails on Sequential models). The graph is frozen
    first, as TFLite's is: tf2onnx's from_function left the constants a layer computes when it is built
    (keras.applications EfficientNet's Normalization mean and variance) as extra graph inputs."""
    import tf2onnx
    from pocketml.export.graph import frozen_function

    frozen = frozen_function(model, spec.image_size, batch=None)
    proto, _ = tf2onnx.convert.from_graph_def(inlinable(frozen.graph.as_graph_def()), opset=opset,
                                              input_names=[t.name for t in frozen.inputs],
                                              output_names=[t.name for t in frozen.outputs],
                                              custom_op_handlers={"Erfc": (erfc_as_one_minus_erf, [])})
    rename_value(proto, proto.graph.input[0].name, INPUT_NAME)
    rename_value(proto, proto.graph.output[0].name, OUTPUT_NAME)
    return proto


NO_INLINE_ATTRS = ("_XlaMustCompile", "_XlaCompile", "_noinline")


def inlinable(graph_def):
    """`graph_def` without the marks that keep a function call from being inlined. Keras' TensorFlow backend
    runs a grouped convolution (ConvNeXt's depthwise Conv2D(groups=channels)) in a jit_compile
    function, which tf2onnx left as a StatefulPartitionedCall no ONNX runtime has; inlined, it is a Conv."""
    calls = [node for node in graph_def.node if node.op in ("StatefulPartitionedCall", "PartitionedCall")]
    for holder in [*calls, *graph_def.library.function]:
        for attr in NO_INLINE_ATTRS:
            if attr in holder.attr:
                del holder.attr[attr]
    return graph_def


def erfc_as_one_minus_erf(ctx, node, name, args):
    """tf2onnx handler: TensorFlow's exact GELU (ConvNeXt) computes erfc, which ONNX lacks; 1 - erf(x)."""
    from tf2onnx import utils

    node.type = "Erf"
    one = ctx.make_const(utils.make_name("one"), np.array(1, np.float32)).output[0]
    minus = ctx.insert_new_node_on_output("Sub", node.output[0], name=utils.make_name(f"{node.name}_erfc"))
    ctx.replace_inputs(minus, [one, node.output[0]])
    return node


def folded(proto):
    """The graph after onnxruntime's basic (provider-independent) optimisations.

    tf2onnx leaves Keras 3's inference BatchNorm as separate Mul and Add nodes after each Conv;
    folding them into the Conv weights gives a smaller graph and, in fp16, fewer roundings:
    max|dp| vs Keras on 100 photos fell from 0.038 to 0.016 for MobileNetV2 fp16. The rewrites use
    standard ONNX ops only, so the file stays portable to every runtime.
    """
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="pocketml-onnx-") as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(Path(tmp) / "folded.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath)


def drop_unused_opsets(proto) -> None:
    """Keep only the operator-set imports the graph's nodes use.

    onnxruntime writes its optimised models declaring every domain it knows (com.microsoft,
    org.pytorch.aten, ...); a runtime that does not know a declared domain may refuse the file.
    """
    used = {node.domain or "" for node in proto.graph.node} | {""}
    kept = [opset for opset in proto.opset_import if (opset.domain or "") in used]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)


def rename_value(proto, old: str, new: str) -> None:
    """Rename a graph value everywhere it appears, so every file has the same I/O names whatever
    the Keras layers were called."""
    if old == new:
        return
    graph = proto.graph
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.name == old:
            value.name = new
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]


def float16_model(fp32):
    """Weights and compute in float16, inputs and outputs kept float32 so callers feed the same arrays."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    fp16 = convert_float_to_float16(fp32, keep_io_types=True)
    # The converter appends the float32<->float16 Casts at the end of the node list; onnx.checker
    # (and some runtimes) require topological order.
    OnnxModel.graph_topological_sort(fp16.graph, is_deterministic=True)
    return fp16


def dynamic_int8_model(fp32):
    """int8 weights, activations quantised per batch at run time (no calibration needed).

    Takes the unfolded graph: ConvInteger quantises each weight tensor with one scale, and BatchNorm
    scales folded into the weights spread channels over orders of magnitude (agreement with Keras
    fell from 0.91 to 0.43 on 100 photos); unfolded, the BatchNorm stays a float Mul after it.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="pocketml-onnx-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(fp32, str(src))
        # ORT's CPU ConvInteger kernel only takes uint8 weights; int8 weights fail at session load.
        quantize_dynamic(src, dst, weight_type=QuantType.QUInt8)
        return onnx.load(str(dst))


def static_int8_model(fp32, images: np.ndarray, reduce_range: bool = False, activation_bits: int = 8):
    """A QDQ model whose activation ranges come from `images` (uint8 or float32, RGB 0..255): uint8
    activations (uint16 with activation_bits=16, as com.microsoft QDQ ops), int8 per-channel weights.

    reduce_range (7-bit weights) is for x86 CPUs without VNNI, where 8-bit u8 x s8 pair sums saturate;
    export/quantization/onnx.py chooses it per CPU and measures what each costs.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="pocketml-onnx-") as tmp:
        src, prepared, dst = (Path(tmp) / name for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        onnx.save(fp32, str(src))
        # Shape inference + graph optimisation first, as onnxruntime recommends: folded BatchNorms and
        # known shapes give the quantiser one scale per real tensor instead of per intermediate.
        quant_pre_process(str(src), str(prepared))
        prepared_proto = onnx.load(str(prepared))
        quantize_static(
            prepared,
            dst,
            calibration_data_reader=ImageCalibrationReader(prepared_proto.graph.input[0].name, images),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt16 if activation_bits == 16 else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=reduce_range,
            # The final softmax stays float: quantised probabilities would be rounded to 1/255 steps.
            nodes_to_exclude=[node.name for node in prepared_proto.graph.node if node.op_type == "Softmax"],
            extra_options={"UseQDQContribOps": activation_bits == 16},
        )
        return onnx.load(str(dst))


def images_per_run(proto) -> int:
    """Images per session.run whose outputs are the ones an app gets running one image at a time."""
    return 1 if any(node.op_type in RUNTIME_QUANTISED_OPS for node in proto.graph.node) else PREDICT_BATCH


def session_outputs(proto, images: np.ndarray) -> np.ndarray:
    """`proto`'s first output on `images`, run in memory by onnxruntime's CPU provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x, batch = images.astype(np.float32), images_per_run(proto)
    return np.concatenate([session.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def calibration_images(calibration: np.ndarray | None, spec: ModelSpec) -> np.ndarray:
    """The calibration set checked against the model's input size, else a one-line error."""
    if calibration is None or len(calibration) == 0:
        raise PocketMLError(
            "onnx int8 needs calibration images; pass --calibration DIR (ImageFolder or flat)"
        )
    return check_images(calibration, spec.image_size)


class ImageCalibrationReader:
    """onnxruntime CalibrationDataReader over an image array, in batches of CALIBRATION_BATCH."""

    def __init__(self, input_name: str, images: np.ndarray) -> None:
        self.input_name = input_name
        self.images = images
        self._batches = self._iter_batches()

    def _iter_batches(self) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self.images), CALIBRATION_BATCH):
            yield {self.input_name: self.images[start : start + CALIBRATION_BATCH].astype(np.float32)}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:
        self._batches = self._iter_batches()


def add_metadata(proto, spec: ModelSpec, precision: str) -> None:
    """Labels, spec, normalisation and input description as metadata_props (replacing older values)."""
    height, width = spec.image_size
    values = {
        META_LABELS: json.dumps(list(spec.labels)),
        META_SPEC: json.dumps(spec.to_dict()),
        META_NORMALIZATION: json.dumps(spec.to_dict()["normalization"]),
        META_INPUT: json.dumps(
            {
                "name": INPUT_NAME,
                "layout": "NHWC",
                "shape": [-1, height, width, 3],
                "dtype": "float32",
                "range": list(spec.input_range),
                "color_order": spec.color_order,
                "preprocessing": f"inside the model ({spec.normalization.describe()})",
            }
        ),
        META_PRECISION: precision,
    }
    kept = [prop for prop in proto.metadata_props if prop.key not in values]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in values.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    proto.doc_string = f"pocketml {precision} classifier: {', '.join(spec.labels)}"


def read_metadata(path: Path) -> dict[str, str]:
    """The model's metadata_props as a dict (weights are not loaded)."""
    return {prop.key: prop.value for prop in read_graph(path).metadata_props}


def read_graph(path: Path):
    """The ModelProto of `path` without its external weights; a one-line error for what is not ONNX."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except OSError as exc:
        raise PocketMLError(f"cannot read ONNX model {path}: {exc.strerror or exc}") from exc
    except DecodeError as exc:
        raise PocketMLError(f"{path} is not an ONNX model (protobuf decode failed)") from exc
    return proto


def read_spec(path: Path) -> ModelSpec:
    """The ModelSpec stored in a pocketml ONNX file."""
    return spec_from_metadata(read_metadata(path), path)


class OnnxPredictor:
    """An ONNX file run by onnxruntime on the CPU; see export/runtime.py for the contract."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        graph = read_graph(path)
        metadata = {prop.key: prop.value for prop in graph.metadata_props}
        self.batch = images_per_run(graph)
        self.session = _session(path, threads)
        self.spec = ModelSpec.from_dict(json.loads(metadata[META_SPEC])) if META_SPEC in metadata else None
        self.name = f"onnx-{metadata.get(META_PRECISION, Path(path).stem)}"
        self.input_size = self.spec.image_size if self.spec else _static_input_size(self.session, path)
        self._input = self.session.get_inputs()[0].name

    def invoker(self, image: np.ndarray):
        """One session.run on `image` (batch 1), the feed built once."""
        feed = {self._input: check_images(image, self.input_size).astype(np.float32)}
        session = self.session
        return lambda: session.run(None, feed)

    def predict(self, images: np.ndarray) -> np.ndarray:
        images = check_images(images, self.input_size).astype(np.float32, copy=False)
        batches = [
            self.session.run(None, {self._input: images[start : start + self.batch]})[0]
            for start in range(0, len(images), self.batch)
        ]
        return np.concatenate(batches).astype(np.float32, copy=False)


def load(path: Path, threads: int | None = None) -> OnnxPredictor:
    """A Predictor for an ONNX file; `threads` caps onnxruntime's intra-op threads (None: its default)."""
    return OnnxPredictor(Path(path), threads)


def bundle_extras(folder: Path, files: list[Path], model: ModelRecord) -> list[str]:
    """The ORT Mobile files beside the shipped ones (export/onnx_mobile.py) and the README's lines about them."""
    from pocketml.export.onnx_mobile import mobile_files

    return mobile_files(folder, files, model.image_size)


def unavailable() -> str | None:
    return None  # its converter and runtime are pocketml's own dependencies


def latency_unavailable() -> str | None:
    return None  # ONNX Runtime's CPU provider runs wherever pocketml runs


def _session(path: Path, threads: int | None):
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    options = ort.SessionOptions()
    if threads is not None:
        if threads < 1:
            raise PocketMLError(f"threads must be >= 1; got {threads}")
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: the QDQ models log benign fusion warnings
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except (ort_state.Fail, ort_state.InvalidGraph, ort_state.InvalidProtobuf, ort_state.NoSuchFile) as exc:
        first_line = one_line(str(exc), type(exc).__name__)
        raise PocketMLError(f"onnxruntime cannot load {path}: {first_line}") from exc


def _static_input_size(session, path: Path) -> tuple[int, int]:
    """(height, width) from a foreign file's NHWC input shape, for files without pocketml metadata."""
    shape = session.get_inputs()[0].shape
    if len(shape) != 4 or not all(isinstance(dim, int) for dim in shape[1:3]) or shape[3] != 3:
        raise PocketMLError(f"{path}: input shape {shape} is not [N,H,W,3] with fixed H and W")
    return int(shape[1]), int(shape[2])


def read_labels(path: Path) -> tuple[str, ...] | None:
    """The labels in the file's metadata (output order), or None for a file from elsewhere."""
    labels = read_metadata(Path(path)).get(META_LABELS)
    return tuple(json.loads(labels)) if labels else None


def read_precision(path: Path) -> str | None:
    """The precision pocketml recorded in the file's metadata, or None for a file from elsewhere."""
    return read_metadata(Path(path)).get(META_PRECISION)
