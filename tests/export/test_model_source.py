"""Loading the model to export: spec building and the one-line errors for bad input (the shapes a
user brings are in test_intake.py, the refusals in test_refusals.py)."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from pocketml.export.model_source import load_source, parse_image_size

from pocketml.errors import PocketMLError
from pocketml.fsutil import sha256_file
from tests.export.export_helpers import save_model_dir, tiny_classifier, tiny_model_dir


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_real_model_dir_gives_spec_with_source_hash(real_model_dir):
    source = load_source(real_model_dir)
    assert source.spec.labels == ("cat", "coffee")
    assert source.spec.image_size == (96, 96)
    assert source.spec.normalization.name == "efficientnet_lite" and not source.spec.normalization.added_at_export
    assert source.kind == "train-dir" and source.model.inputs[0].name == "image"
    assert source.spec.source_sha256 == sha256_file(real_model_dir / "model.keras")
    assert source.notes == []


def test_labels_file_replaces_spec_labels(tmp_path):
    model_dir = tiny_model_dir(tmp_path / "m")
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    source = load_source(model_dir / "model.keras", labels=labels)
    assert source.spec.labels == ("cat", "dog")


def test_without_spec_labels_file_and_rescaling_layer_make_the_spec(tmp_path):
    model_dir = save_model_dir(tmp_path / "m", tiny_classifier(), with_spec=False)
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    spec = load_source(model_dir, labels=labels).spec
    assert spec.labels == ("a", "b")
    assert spec.normalization.mean == pytest.approx((127.5,) * 3)
    assert spec.normalization.std == pytest.approx((127.5,) * 3)


def test_missing_model_is_a_one_line_error(tmp_path):
    with pytest.raises(PocketMLError) as exc:
        load_source(tmp_path / "nope.keras")
    assert "does not exist" in one_line_error(exc)


@pytest.mark.parametrize("name", ["model.h5", "weights.txt"])
def test_non_keras_file_is_rejected(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"not a model")
    with pytest.raises(PocketMLError) as exc:
        load_source(path)
    assert ".keras" in one_line_error(exc)


def test_keras_zip_without_a_model_is_rejected(tmp_path):
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "no config here")
    with pytest.raises(PocketMLError) as exc:
        load_source(path)
    assert "is not a readable Keras model" in one_line_error(exc)


def test_input_that_is_not_an_rgb_image_is_rejected(tmp_path):
    model_dir = save_model_dir(tmp_path / "m", tiny_classifier(channels=1))
    with pytest.raises(PocketMLError) as exc:
        load_source(model_dir)
    assert "[N,H,W,3]" in one_line_error(exc)


def test_single_sigmoid_output_is_not_a_probability_vector(tmp_path):
    model_dir = save_model_dir(tmp_path / "m", tiny_classifier(classes=1, activation="sigmoid"), labels=("hot_dog",))
    with pytest.raises(PocketMLError) as exc:
        load_source(model_dir)
    assert "probability vector" in one_line_error(exc)


def test_logits_get_an_explicit_softmax_and_a_note(tmp_path):
    model_dir = save_model_dir(tmp_path / "m", tiny_classifier(activation=None))
    source = load_source(model_dir)
    assert any("Softmax layer was added" in note for note in source.notes)
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    probs = np.asarray(source.model(images))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_label_count_must_match_outputs(tmp_path):
    model_dir = tiny_model_dir(tmp_path / "m", classes=3)
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    with pytest.raises(PocketMLError) as exc:
        load_source(model_dir, labels=labels)
    assert "2 labels but the model outputs 3 classes" in one_line_error(exc)


def test_dynamic_input_needs_image_size(tmp_path):
    import keras

    inputs = keras.Input((None, None, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    model_dir = save_model_dir(tmp_path / "m", model, with_spec=False)
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    with pytest.raises(PocketMLError) as exc:
        load_source(model_dir, labels=labels)
    assert "--image-size" in one_line_error(exc)
    source = load_source(model_dir, labels=labels, image_size="48x40")
    assert source.spec.image_size == (48, 40)
    assert tuple(source.model.inputs[0].shape[1:3]) == (48, 40)


@pytest.mark.parametrize("text", ["0", "abc", "32x", "4x4"])
def test_bad_image_size_text(text):
    with pytest.raises(PocketMLError):
        parse_image_size(text)
