"""Preprocessing a model expects but lacks: named presets or --mean/--std/--bgr, put in front of
the model in every exported file, recorded in spec.json and every file's metadata; and the common
in-model cases (Rescaling / Normalization layers at the input) detected and said."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pocketml.export import graph
from pocketml.export.exporter import export_model
from pocketml.export.model_source import leading_normalization, load_source
from pocketml.export.registry import format_module

from pocketml.artifact import ExportManifest
from pocketml.configs.export import ExportConfig
from pocketml.errors import PocketMLError
from pocketml.spec import PRESETS, ModelSpec, Normalization, requested_normalization
from tests.export.export_helpers import save_model_dir

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def colour_images(count: int = 12, size: int = 32) -> np.ndarray:
    """Images of different overall colours (a colour-sensitive model tells them apart)."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 255, (count, 1, 1, 3))
    return np.clip(base + rng.normal(0, 20, (count, size, size, 3)), 0, 255).astype(np.uint8)


def colour_model(size: int = 32, head=None):
    """GAP -> Dense(2): its decision is a weighted difference of the channel means it receives, so
    a wrong mean, std or channel order changes its probabilities by far more than any tolerance."""
    import keras

    inputs = keras.Input((size, size, 3))
    x = head(inputs) if head is not None else inputs
    dense = keras.layers.Dense(2, activation="softmax")
    outputs = dense(keras.layers.GlobalAveragePooling2D()(x))
    dense.set_weights([np.array([[2.0, -2.0], [0.5, 0.0], [-2.0, 2.0]], np.float32), np.zeros(2, np.float32)])
    return keras.Model(inputs, outputs)


def by_hand(model, images, mean, std, bgr=False) -> np.ndarray:
    x = (images.astype(np.float32) - np.float32(mean)) / np.float32(std)
    return np.asarray(model(x[..., ::-1] if bgr else x), np.float64)


@pytest.mark.parametrize("name", ["mobilenet", "imagenet", "caffe-bgr", "unit"])
def test_each_preset_is_the_family_preprocessing(name):
    images = colour_images()
    model = colour_model()
    norm = Normalization.preset(name)
    classifier = graph.classifier(*graph.network_output(model, (32, 32), norm), add_softmax=False)
    expected = {
        "mobilenet": (127.5, 127.5, False),
        "imagenet": (IMAGENET_MEAN, IMAGENET_STD, False),
        "caffe-bgr": ((123.68, 116.779, 103.939), 1.0, True),
        "unit": (0.0, 255.0, False),
    }[name]
    np.testing.assert_allclose(np.asarray(classifier(images.astype(np.float32))), by_hand(model, images, *expected), atol=1e-6)


def test_requested_preprocessing_parses_one_or_three_numbers_and_refuses_mixtures():
    assert requested_normalization() is None
    assert requested_normalization("unit") == PRESETS["unit"]
    custom = requested_normalization(mean="127.5", std="127.5")
    assert custom.name == "mobilenet" and custom.mean == (127.5,) * 3  # equal to a preset: named after it
    bgr = requested_normalization(mean="103.9,116.8,123.7", std=[1, 2, 3], bgr=True)
    assert bgr.mean == (103.9, 116.8, 123.7) and bgr.std == (1.0, 2.0, 3.0) and bgr.channel_order == "BGR"
    assert requested_normalization(std=255).describe() == "unit: (x - 0) / 255"
    with pytest.raises(PocketMLError, match="not both"):
        requested_normalization("imagenet", mean="1")
    with pytest.raises(PocketMLError, match="give one number or three"):
        requested_normalization(mean="1,2")
    with pytest.raises(PocketMLError, match="accepted: none, mobilenet, imagenet, caffe-bgr, unit"):
        ExportConfig(preprocess="inception")
    with pytest.raises(PocketMLError, match="zero std"):
        requested_normalization(std="0")


def test_spec_json_records_channel_order_and_where_the_preprocessing_lives(tmp_path):
    norm = Normalization.preset("caffe-bgr")
    spec = ModelSpec(labels=("a", "b"), image_size=(32, 32), normalization=Normalization(**{**norm.__dict__, "added_at_export": True}))
    spec.save(tmp_path)
    saved = json.loads((tmp_path / "spec.json").read_text())["normalization"]
    assert saved == {"name": "caffe-bgr", "mean": [123.68, 116.779, 103.939], "std": [1.0, 1.0, 1.0],
                     "channel_order": "BGR", "added_at_export": True}  # fmt: skip
    assert ModelSpec.load(tmp_path) == spec
    # spec.json files written before these fields existed still load (RGB, inside the model).
    old = {"labels": ["a", "b"], "image_size": [32, 32], "normalization": {"name": "mobilenet", "mean": [127.5] * 3, "std": [127.5] * 3}}
    (tmp_path / "spec.json").write_text(json.dumps(old))
    assert ModelSpec.load(tmp_path).normalization == Normalization.for_mobilenet()


def rescaled(*layers):
    def head(x):
        for layer in layers:
            x = layer(x)
        return x

    return head


def test_in_model_preprocessing_is_detected_and_named():
    import keras

    assert leading_normalization(colour_model()) is None
    mobilenet = colour_model(head=rescaled(keras.layers.Rescaling(1 / 127.5, offset=-1.0)))
    assert leading_normalization(mobilenet) == Normalization.for_mobilenet()
    # EfficientNetV2-style: Rescaling(1/255) then a Normalization layer with ImageNet statistics.
    stats = keras.layers.Normalization(mean=[0.485, 0.456, 0.406], variance=[0.229**2, 0.224**2, 0.225**2])
    imagenet = leading_normalization(colour_model(head=rescaled(keras.layers.Rescaling(1 / 255), stats)))
    assert imagenet.name == "imagenet"
    np.testing.assert_allclose(imagenet.mean, IMAGENET_MEAN, rtol=1e-5)
    np.testing.assert_allclose(imagenet.std, IMAGENET_STD, rtol=1e-5)
    # keras.applications backbones (MobileNetV3, EfficientNetV2) carry their Rescaling inside.
    inner_input = keras.Input((32, 32, 3))
    inner = keras.Model(inner_input, keras.layers.Conv2D(3, 1)(keras.layers.Rescaling(1 / 255)(inner_input)))
    assert leading_normalization(colour_model(head=inner)).name == "unit"
    per_channel = keras.layers.Rescaling([1 / 58.4, 1 / 57.1, 1 / 57.4], offset=[-2.1, -2.0, -1.8])
    assert leading_normalization(colour_model(head=rescaled(per_channel))).mean == pytest.approx((122.64, 114.2, 103.32))


def test_what_was_assumed_is_said(tmp_path):
    import keras

    labels = tmp_path / "labels.txt"
    labels.write_text("warm\ncold\n")
    plain = save_model_dir(tmp_path / "plain", colour_model(), with_spec=False)
    assert any("assuming it takes raw RGB pixels 0..255; if it expects normalised pixels pass --preprocess" in n
               for n in load_source(plain, labels=labels).notes)  # fmt: skip
    assert load_source(plain, labels=labels, preprocess=PRESETS["none"]).notes == []
    inside = save_model_dir(tmp_path / "inside", colour_model(head=rescaled(keras.layers.Rescaling(1 / 255))), with_spec=False)
    notes = load_source(inside, labels=labels, preprocess=PRESETS["mobilenet"]).notes
    assert notes == [
        "preprocessing added in front of the model: mobilenet: (x - 127.5) / 127.5",
        "the model already normalises its input (unit: (x - 0) / 255); both are applied",
    ]


def test_preprocessing_is_baked_into_every_file_and_recorded_in_its_metadata(tmp_path):
    """A colour-sensitive model that expects Caffe-style BGR minus the ImageNet mean: every exported
    file takes plain RGB 0..255, matches the model fed by hand, and says what it applies."""
    model_dir = save_model_dir(tmp_path / "m", colour_model(), with_spec=False)
    (tmp_path / "labels.txt").write_text("warm\ncold\n")
    images = colour_images()
    (tmp_path / "photos").mkdir()
    from PIL import Image

    for i, image in enumerate(images):  # a flat folder: unlabelled, judged on agreement
        Image.fromarray(image).save(tmp_path / "photos" / f"{i}.png")
    config = ExportConfig(precisions=["fp32"], labels=tmp_path / "labels.txt", preprocess="caffe-bgr",
                          validation_images=tmp_path / "photos")  # fmt: skip
    export_model(model_dir, tmp_path / "out", config)
    recorded = ExportManifest.load(tmp_path / "out").model.normalization
    assert recorded.name == "caffe-bgr" and recorded.channel_order == "BGR" and recorded.added_at_export
    reference = by_hand(colour_model(), images, (123.68, 116.779, 103.939), 1.0, bgr=True)
    assert reference.argmax(1).min() != reference.argmax(1).max(), "the images must not all get one label"
    for artifact in ExportManifest.load(tmp_path / "out").artifacts:
        assert artifact.parity.status == "passed" and artifact.parity.max_abs_diff <= 1e-4, artifact.name
        path = tmp_path / "out" / artifact.path
        probs = format_module(artifact.format).load(path).predict(images)
        np.testing.assert_allclose(probs, reference, atol=1e-4, err_msg=artifact.name)
    onnx_spec = format_module("onnx").read_spec(tmp_path / "out" / "onnx" / "model-fp32.onnx")
    coreml_spec = format_module("coreml").read_spec(tmp_path / "out" / "coreml" / "model-fp32.mlpackage")
    assert onnx_spec.normalization == coreml_spec.normalization == recorded
    from pocketml.export.tflite_metadata import read_metadata

    description = read_metadata((tmp_path / "out" / "tflite" / "model-fp32.tflite").read_bytes()).description
    assert "caffe-bgr: (x - (123.68, 116.779, 103.939)) / 1, then RGB->BGR" in description.decode()


def test_predict_applies_preprocessing_for_a_file_from_elsewhere_that_expects_it(tmp_path):
    """An ONNX file converted without the preprocessing its network expects (as files from other
    tools are): `pocketml predict --preprocess caffe-bgr` feeds it what it was trained on."""
    from pocketml.export import predict

    model = colour_model()
    source = load_source(model, labels=_labels(tmp_path), preprocess=PRESETS["none"])
    format_module("onnx").convert(source.model, source.spec, "fp32", tmp_path / "foreign.onnx", None)
    images = colour_images()
    loaded = predict.load(tmp_path / "foreign.onnx", preprocess=PRESETS["caffe-bgr"])
    assert loaded.notes == ["applying caffe-bgr: (x - (123.68, 116.779, 103.939)) / 1, then RGB->BGR before "
                            "foreign.onnx (it must expect normalised input)"]  # fmt: skip
    expected = by_hand(model, images, (123.68, 116.779, 103.939), 1.0, bgr=True)
    np.testing.assert_allclose(loaded.predict(images), expected, atol=1e-5)
    assert not np.allclose(predict.load(tmp_path / "foreign.onnx").predict(images), expected, atol=1e-2)


def _labels(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("warm\ncold\n")
    return path
