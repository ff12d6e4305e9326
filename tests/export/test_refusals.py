"""What cannot be exported is refused before anything is written: one line naming what was found
and what is accepted (exit 2 from the CLI), and nothing from a model file is ever executed."""

from __future__ import annotations

import json
import shutil

import h5py
import pytest
from pocketml.export.model_source import load_source

from pocketml.app import cli
from pocketml.errors import PocketMLError
from tests.export.export_helpers import save_model_dir, tiny_classifier


def refusal(model, tmp_path, labels=("a", "b"), save=True, **kwargs) -> str:
    """The one-line message load_source gives for `model` (a path, or a keras.Model saved as .keras
    unless `save` is False)."""
    import keras

    if isinstance(model, keras.Model) and save:
        model = save_model_dir(tmp_path / "m", model, with_spec=False) / "model.keras"
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("".join(f"{x}\n" for x in labels))
    with pytest.raises(PocketMLError) as excinfo:
        load_source(model, labels=labels_file, **kwargs)
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def dense_head(x, units=2, activation="softmax"):
    import keras

    return keras.layers.Dense(units, activation=activation)(keras.layers.GlobalAveragePooling2D()(x))


def channels_first():
    import keras

    inputs = keras.Input((3, 32, 32))
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs)))


def two_inputs():
    import keras

    a, b = keras.Input((32, 32, 3), name="left"), keras.Input((32, 32, 3), name="right")
    return keras.Model([a, b], dense_head(keras.layers.Concatenate()([a, b])))


def two_outputs():
    import keras

    inputs = keras.Input((32, 32, 3))
    return keras.Model(inputs, [dense_head(inputs), dense_head(inputs, 3)])


def not_an_image():
    import keras

    inputs = keras.Input((784,))
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))


def feature_map():
    import keras

    inputs = keras.Input((32, 32, 3))
    return keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))


REFUSED = [
    (channels_first, "model input (None, 3, 32, 32) is channels-first [N,C,H,W]; accepted: one RGB image input [N,H,W,3]"),
    (two_inputs, "model has 2 inputs (left, right); accepted: one RGB image input [N,H,W,3]"),
    (two_outputs, "model has 2 outputs; accepted: one [N, classes] output"),
    (not_an_image, "model input shape (None, 784) is not an image batch; accepted: one RGB image input"),
    (lambda: tiny_classifier(channels=1), "model input (None, 32, 32, 1) has 1 channels, not RGB; accepted"),
    (feature_map, "model output shape (None, 30, 30, 2) is not [N, classes]; accepted: one [N, classes] output"),
    (lambda: tiny_classifier(classes=1, activation="sigmoid"), "model output (None, 1) is not a probability vector"),
    (lambda: tiny_classifier(activation="sigmoid"), "model output ends in 'sigmoid'; accepted: one [N, classes] output"),
    (lambda: tiny_classifier(classes=3), "2 labels but the model outputs 3 classes; give exactly 3 labels"),
]  # fmt: skip


@pytest.mark.parametrize(("build", "message"), REFUSED, ids=lambda x: getattr(x, "__name__", "")[:20])
def test_what_is_not_an_image_classifier_is_refused_in_one_line(build, message, tmp_path):
    assert message in refusal(build(), tmp_path)


@pytest.mark.parametrize(("build", "message"), [REFUSED[0], REFUSED[2], REFUSED[-1]], ids=["channels-first", "outputs", "labels"])
def test_the_cli_exits_2_with_the_line_and_writes_nothing(build, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("pocketml.export.cli",))
    model_dir = save_model_dir(tmp_path / "m", build(), with_spec=False)
    (tmp_path / "labels.txt").write_text("a\nb\n")
    out = tmp_path / "out"
    argv = ["export", str(model_dir), "--labels", str(tmp_path / "labels.txt"), "--out", str(out), "--formats", "tflite"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err
    assert not out.exists()


def test_sigmoid_scores_from_a_savedmodel_are_refused(tmp_path):
    tiny_classifier(activation="sigmoid").export(str(tmp_path / "sm"), verbose=False)
    assert "scores in 0..1 that do not sum to 1 (independent sigmoids?)" in refusal(tmp_path / "sm", tmp_path)


def test_a_dynamic_or_undeclared_input_size_asks_for_image_size(tmp_path):
    import keras

    inputs = keras.Input((None, None, 3))
    assert "has a dynamic size; pass --image-size N or HxW" in refusal(keras.Model(inputs, dense_head(inputs)), tmp_path)

    class Unbuilt(keras.Model):
        def __init__(self):
            super().__init__()
            self.head = keras.layers.Dense(2, activation="softmax")

        def call(self, x):
            return self.head(keras.ops.mean(x, axis=(1, 2)))

    assert "does not declare its input size (a subclassed model?); pass --image-size" in refusal(Unbuilt(), tmp_path, save=False)
    labels = tmp_path / "labels.txt"
    assert load_source(Unbuilt(), labels=labels, image_size="40x48").spec.image_size == (40, 48)


# -- nothing runs code stored in a model file -------------------------------------------------------


def lambda_model():
    import keras

    inputs = keras.Input((32, 32, 3))
    return keras.Model(inputs, dense_head(keras.layers.Lambda(lambda t: t * 2.0, name="times_two")(inputs)))


def marshalled_code_h5(path) -> None:
    """A tf.keras 2 style .h5 whose Lambda stores marshalled bytecode that writes a marker file."""
    import codecs
    import marshal

    def evil(t):
        with open(str(path) + ".ran", "w") as marker:  # builtins only: it must work when unmarshalled
            marker.write("code from the model file ran")
        return t

    lambda_model().save(path)
    code = codecs.encode(marshal.dumps(evil.__code__), "base64").decode("ascii")
    with h5py.File(path, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        layer = next(x for x in config["config"]["layers"] if x["class_name"] == "Lambda")
        layer["config"].update(function=[code, None, None], function_type="lambda", module="__main__")
        handle.attrs["model_config"] = json.dumps(config)


@pytest.mark.parametrize("suffix", [".keras", ".h5", "legacy.h5"])
def test_a_lambda_layer_is_refused_without_running_it(suffix, tmp_path):
    path = tmp_path / f"model{suffix}"
    if suffix == "legacy.h5":
        marshalled_code_h5(path)
    else:
        lambda_model().save(path)
    message = refusal(path, tmp_path)
    assert "has a Lambda layer 'times_two' whose Python code is stored in the file" in message
    assert "pocketml does not run code from model files" in message
    assert not (tmp_path / f"model{suffix}.ran").exists()


def test_a_custom_layer_needs_custom_objects(tmp_path):
    import keras

    @keras.saving.register_keras_serializable(package="user")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    inputs = keras.Input((32, 32, 3))
    path = tmp_path / "custom.keras"
    keras.Model(inputs, dense_head(Doubler(name="doubler")(inputs))).save(path)
    assert "'Doubler' ('doubler') is a custom class, not a stock Keras one" in refusal(path, tmp_path)
    source = load_source(path, labels=tmp_path / "labels.txt", custom_objects={"user>Doubler": Doubler})
    assert source.spec.num_classes == 2


def test_the_layers_keras_defines_for_its_own_applications_load_and_nothing_else_passes_as_them():
    from pocketml.export.safe_load import is_stock

    def entry(module, name):
        return {"module": module, "class_name": name, "registered_name": name, "config": {}}

    assert is_stock(entry("keras.src.applications.convnext", "LayerScale"))  # ConvNeXt
    assert is_stock(entry("keras.src.applications.inception_resnet_v2", "CustomScaleLayer"))
    assert not is_stock(entry("keras.src.applications.convnext", "ConvNeXtTiny"))  # a function, not a layer class
    assert not is_stock(entry("keras.src.applications.no_such_model", "LayerScale"))
    assert not is_stock(entry("keras.src.saving.saving_lib", "LayerScale"))  # only the applications' modules
    assert not is_stock(entry("keras.src.applications.convnext.os", "LayerScale"))  # no path out of them
    assert not is_stock(entry("user_code", "LayerScale"))


def test_tf_keras_2_raw_ops_and_weights_only_files_are_named(tmp_path):
    path = tmp_path / "tfop.h5"
    tiny_classifier().save(path)
    with h5py.File(path, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        config["config"]["layers"][1]["class_name"] = "TFOpLambda"
        handle.attrs["model_config"] = json.dumps(config)
    assert "is a raw TensorFlow op from tf.keras 2 (TFOpLambda)" in refusal(path, tmp_path)
    weights = tmp_path / "model.weights.h5"
    tiny_classifier().save_weights(weights)
    assert "holds weights but no model" in refusal(weights, tmp_path)


def writing_savedmodel(directory, marker) -> None:
    """A SavedModel whose serving function writes a file before classifying."""
    import tensorflow as tf

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
        def serve(self, image):
            with tf.control_dependencies([tf.io.write_file(str(marker), "graph ran")]):
                return {"p": tf.nn.softmax(tf.reduce_mean(image, axis=[1, 2])[:, :2])}

    module = Writer()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})


def test_a_savedmodel_that_touches_files_is_refused_before_it_is_loaded(tmp_path):
    marker = tmp_path / "written-by-the-model"
    writing_savedmodel(tmp_path / "sm", marker)
    message = refusal(tmp_path / "sm", tmp_path)
    assert "runs ops that touch files, Python or other state (WriteFile)" in message
    assert not marker.exists()


def test_a_savedmodel_taking_encoded_images_or_two_inputs_is_refused(tmp_path):
    import tensorflow as tf

    class Bytes(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, jpeg):
            image = tf.map_fn(lambda b: tf.cast(tf.io.decode_jpeg(b, 3), tf.float32), jpeg, fn_output_signature=tf.float32)
            return {"p": tf.nn.softmax(tf.reduce_mean(image, axis=[1, 2])[:, :2])}

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3]), tf.TensorSpec([None, 8, 8, 3])])
        def pair(self, a, b):
            return {"p": tf.nn.softmax(tf.reduce_mean(a + b, axis=[1, 2])[:, :2])}

    module = Bytes()
    tf.saved_model.save(module, str(tmp_path / "bytes"), signatures={"serving_default": module.serve})
    assert "model input is string, not pixels; accepted: one RGB image input" in refusal(tmp_path / "bytes", tmp_path)
    tf.saved_model.save(module, str(tmp_path / "pair"), signatures={"serving_default": module.pair})
    assert "has inputs ['a', 'b']; accepted: one RGB image input" in refusal(tmp_path / "pair", tmp_path)


def test_paths_that_are_not_models_name_what_is_accepted(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not a model")
    for path in (tmp_path / "missing.keras", tmp_path / "empty", tmp_path / "notes.txt"):
        assert "give a .keras or .h5 Keras model, a TensorFlow SavedModel directory" in refusal(path, tmp_path)
    shutil.copy(tmp_path / "notes.txt", tmp_path / "fake.h5")
    assert "is not a Keras .keras/.h5 model or a SavedModel" in refusal(tmp_path / "fake.h5", tmp_path)
