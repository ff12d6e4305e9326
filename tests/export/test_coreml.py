"""Core ML export on a real-weights MobileNetV2 α0.35 (96 px): each precision converts once per
module into an mlprogram .mlpackage with an RGB image input and a classifier output an iOS app can
hand to Vision; compressed variants really are compressed. Predictions are compared with Keras by
Core ML itself on macOS and by the reference executor elsewhere."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from pocketml.export.registry import Converted

from pocketml.dataset import load_images, read_records
from pocketml.errors import PocketMLError, RuntimeUnavailable
from pocketml.fsutil import atomic_output, tree_bytes
from pocketml.spec import ModelSpec

ct = pytest.importorskip("coremltools")
xc = pytest.importorskip("pocketml.export.coreml")

EVAL_IMAGES = 16  # the reference executor runs image by image; 16 photos keep the module fast




@pytest.fixture(scope="module")
def packages(tmp_path_factory, keras_model, spec: ModelSpec) -> dict[str, tuple[Path, list[str]]]:
    """precision -> (.mlpackage path, notes), written the way the exporter writes them (atomic_output)."""
    out_dir = tmp_path_factory.mktemp("coreml")
    result = {}
    for precision in xc.PRECISIONS:
        path = out_dir / f"model-{precision}.mlpackage"
        with atomic_output(path) as tmp:
            converted = xc.convert(keras_model, spec, precision, tmp, None)
        result[precision] = (path, converted.notes if isinstance(converted, Converted) else converted)
    return result


@pytest.fixture(scope="module")
def eval_images(photos_dir: Path, spec: ModelSpec) -> np.ndarray:
    records = [r for r in read_records(photos_dir) if r.split in ("val", "test")]
    step = max(1, len(records) // EVAL_IMAGES)
    return load_images([r.path for r in records[::step][:EVAL_IMAGES]], spec.image_size)


def main_ops(path: Path) -> list:
    """The operations of the package's `main` function, as stored in its protobuf."""
    program = xc.read_model_spec(path).mlProgram
    function = program.functions["main"]
    return list(function.block_specializations[function.opset].operations)


def argument_names(op, name: str) -> list[str]:
    return [argument.name for argument in op.inputs[name].arguments]


def consumer_of(ops: list, name: str):
    """The one operation that reads `name`."""
    (op,) = [op for op in ops if any(name in argument_names(op, k) for k in op.inputs)]
    return op


def const_value(ops: list, name: str) -> np.ndarray:
    const = next(op for op in ops if op.type == "const" and op.outputs[0].name == name)
    tensor = const.attributes["val"].immediateValue.tensor
    if tensor.floats.values:
        return np.asarray(tensor.floats.values)
    return np.frombuffer(tensor.bytes.values, dtype=np.float16)  # fp16 scalars are stored as raw bytes


def test_every_precision_is_an_mlprogram_with_a_classifier_ending(packages: dict) -> None:
    for precision, (path, _) in packages.items():
        model_spec = xc.read_model_spec(path)
        assert model_spec.WhichOneof("Type") == "mlProgram", precision
        assert model_spec.specificationVersion == 7, precision  # iOS16, the default target
        description = model_spec.description
        outputs = {o.name: o.type.WhichOneof("Type") for o in description.output}
        assert outputs[description.predictedFeatureName] == "stringType", precision
        assert outputs[description.predictedProbabilitiesName] == "dictionaryType", precision
        classify = next(op for op in main_ops(path) if op.type == "classify")
        classes = classify.inputs["classes"].arguments[0].value.immediateValue.list.values
        assert [c.immediateValue.tensor.strings.values[0] for c in classes] == ["cat", "coffee"]


def test_input_is_an_rgb_image_with_scale_1_bias_0(packages: dict) -> None:
    for precision, (path, _) in packages.items():
        (image,) = xc.read_model_spec(path).description.input
        assert image.name == "image"
        image_type = image.type.imageType
        assert (image_type.width, image_type.height) == (96, 96)
        assert ct.proto.FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image_type.colorSpace) == "RGB"
        ops = main_ops(path)
        # scale 1 / bias 0 add no ops: the pixels go straight into the model's own Rescaling (x / 128).
        first, pixels = consumer_of(ops, "image"), "image"
        if first.type == "cast":  # fp16 programs cast the 8-bit pixels to fp16 first
            first, pixels = consumer_of(ops, first.outputs[0].name), first.outputs[0].name
        assert first.type == "mul", precision
        (scale_name,) = [
            argument_names(first, k)[0] for k in ("x", "y") if argument_names(first, k) != [pixels]
        ]
        np.testing.assert_allclose(const_value(ops, scale_name), 1 / 128, rtol=1e-3)
        described = json.loads(xc.read_metadata(path)["pocketml.input"])
        assert described["scale"] == 1.0 and described["bias"] == [0.0, 0.0, 0.0]
        assert described["color_layout"] == "RGB" and described["shape"] == [1, 96, 96, 3]


def test_metadata_reads_back(packages: dict, spec: ModelSpec) -> None:
    for precision, (path, _) in packages.items():
        assert xc.read_spec(path) == spec
        metadata = xc.read_model_spec(path).description.metadata
        assert metadata.author == "pocketml"
        assert metadata.versionString.startswith("0.1.0+")
        assert "cat, coffee" in metadata.shortDescription and precision in metadata.shortDescription
        assert json.loads(metadata.userDefined["pocketml.labels"]) == ["cat", "coffee"]
        assert metadata.userDefined["pocketml.precision"] == precision


def test_fp16_program_computes_in_float16(packages: dict, keras_model) -> None:
    import keras

    backbone = next(layer for layer in keras_model.layers if isinstance(layer, keras.Model))
    keras_convs = sum(isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)) for layer in backbone.layers)
    fp32_convs = [op for op in main_ops(packages["fp32"][0]) if op.type == "conv"]
    fp16_convs = [op for op in main_ops(packages["fp16"][0]) if op.type == "conv"]
    assert len(fp16_convs) == len(fp32_convs) == keras_convs > 30  # one conv op per Keras convolution
    assert all(op.outputs[0].type.tensorType.dataType == ct.proto.MIL_pb2.FLOAT16 for op in fp16_convs)
    assert all(op.outputs[0].type.tensorType.dataType == ct.proto.MIL_pb2.FLOAT32 for op in fp32_convs)
    assert tree_bytes(packages["fp16"][0]) < 0.6 * tree_bytes(packages["fp32"][0])


def test_palettized_weights_are_6bit_lookup_tables_and_smaller_than_fp16(packages: dict) -> None:
    path, notes = packages["palettized-6bit"]
    luts = [op for op in main_ops(path) if op.type == "constexpr_lut_to_dense"]
    assert len(luts) >= 20, "the large convolution weights must be palettised"
    for op in luts:
        (lut_size,) = [d.constant.size for d in op.attributes["lut"].type.tensorType.dimensions]
        assert lut_size == 2**6
        shape = np.frombuffer(op.attributes["shape"].immediateValue.tensor.bytes.values, dtype=np.uint32)
        (index_bytes,) = [d.constant.size for d in op.attributes["indices"].type.tensorType.dimensions]
        assert index_bytes == math.ceil(int(np.prod(shape)) * 6 / 8)  # 6 bits per weight, packed
    assert tree_bytes(path) < tree_bytes(packages["fp16"][0])
    assert any("palettized-6bit" in note for note in notes)


def test_int8_weights_are_affine_int8_and_smaller_than_fp16(packages: dict) -> None:
    path, _ = packages["int8-weights"]
    dequantize = [op for op in main_ops(path) if op.type == "constexpr_affine_dequantize"]
    assert len(dequantize) >= 20
    assert all(
        op.attributes["quantized_data"].type.tensorType.dataType == ct.proto.MIL_pb2.INT8 for op in dequantize
    )
    assert tree_bytes(path) < tree_bytes(packages["fp16"][0])


def test_ios18_target_uses_blockwise_quantisation(tmp_path: Path, keras_model, spec: ModelSpec) -> None:
    path = tmp_path / "model.mlpackage"
    with atomic_output(path) as tmp:
        xc.convert(keras_model, spec, "int8-weights", tmp, None, minimum_deployment_target="iOS18")
    assert xc.read_model_spec(path).specificationVersion == 9
    ops = {op.type for op in main_ops(path)}
    assert "constexpr_blockwise_shift_scale" in ops
    assert xc.read_spec(path) == spec


def test_bad_options_are_user_errors(tmp_path: Path, keras_model, spec: ModelSpec) -> None:
    with pytest.raises(PocketMLError, match="accepted: iOS16, iOS17, iOS18"):
        xc.convert(
            keras_model, spec, "fp32", tmp_path / "m.mlpackage", None, minimum_deployment_target="iOS12"
        )
    with pytest.raises(PocketMLError, match="accepted: fp32, fp16, int8-weights, palettized-6bit, compressed"):
        xc.convert(keras_model, spec, "int4", tmp_path / "m.mlpackage", None)
    with pytest.raises(PocketMLError, match="not an .mlpackage"):
        xc.read_spec(tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(sys.platform == "darwin", reason="off macOS the reference executor stands in for Core ML")
def test_load_off_macos_runs_the_reference_executor(packages: dict, keras_model, eval_images) -> None:
    pytest.importorskip("pocketml.export.coreml_reference", reason="the Core ML reference executor is not installed")
    predictor = xc.load(packages["fp32"][0])
    assert predictor.input_size == (96, 96)
    expected = keras_model.predict(eval_images.astype(np.float32), verbose=0)
    got = predictor.predict(eval_images)
    assert np.abs(got - expected).max() <= 1e-4
    assert np.array_equal(got.argmax(1), expected.argmax(1))


@pytest.mark.macos
@pytest.mark.skipif(sys.platform != "darwin", reason="the Core ML runtime exists only on macOS")
def test_coreml_runtime_predicts_like_keras(packages: dict, keras_model, eval_images) -> None:
    expected = keras_model.predict(eval_images.astype(np.float32), verbose=0)
    tolerances = {"fp32": 1e-3, "fp16": 5e-2}  # fp32 may still run some ops in fp16 on the GPU/ANE
    for precision, tolerance in tolerances.items():
        predictor = xc.load(packages[precision][0])
        assert predictor.name == f"coreml-{precision}"
        got = predictor.predict(eval_images)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= tolerance, precision
    for precision in ("int8-weights", "palettized-6bit"):
        got = xc.load(packages[precision][0]).predict(eval_images)
        np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-2)
        assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.75, precision


def test_load_without_any_core_ml_runtime_reports_unavailable(monkeypatch, packages: dict) -> None:
    from pocketml import export

    # Simulate a Linux install where the reference executor is absent (not the module under test).
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delattr(export, "coreml_reference", raising=False)
    monkeypatch.setitem(sys.modules, "pocketml.export.coreml_reference", None)
    with pytest.raises(RuntimeUnavailable, match="no Core ML runtime on linux"):
        xc.load(packages["fp32"][0])
