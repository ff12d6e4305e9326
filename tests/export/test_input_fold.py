"""Folding the input normalisation into the first conv (export/quantization/fold.py): the same function,
exact integer pixels at the first conv of an integer file, and models it does not fit left alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pocketml.export.quantization.fold import fold_summary, input_folded, integer_ready

from pocketml.dataset import choose_images, load_images

SIZE = (96, 96)


@pytest.fixture(scope="module")
def photos(photos_dir: Path) -> np.ndarray:
    calibration_set, _ = choose_images(photos_dir, photos_dir)
    return load_images(calibration_set.paths, SIZE)


def _rescaling_config(model) -> dict:
    return next(layer.get_config() for layer in model.layers if type(layer).__name__ == "Rescaling")


def test_folded_lite0_gives_the_same_probabilities_from_integer_pixels(keras_model, photos) -> None:
    before = _rescaling_config(keras_model)
    folded, fold = input_folded(keras_model)
    record = fold.to_dict()
    assert record["folded"] is True and record["into"] == "stem_conv"
    # EfficientNet-Lite's (x - 127) / 128 maps pixel 127 to 0 exactly: nothing is left for the border.
    assert record["zero_pixel"] == [127.0] * 3 and record["border_offset"] == 0.0
    config = _rescaling_config(folded)
    assert config["scale"] == 1.0 and config["offset"] == -127.0
    x = photos[:16].astype(np.float32)
    np.testing.assert_allclose(folded.predict(x, verbose=0), keras_model.predict(x, verbose=0), atol=1e-4)
    assert _rescaling_config(keras_model) == before  # the model given is left as it was


def _half_step_model(seed: int = 0):
    """MobileNet's (x - 127.5) / 127.5 in front of a nested Conv2D('same', stride 2) + BatchNorm."""
    import keras

    rng = np.random.default_rng(seed)
    inner_in = keras.Input((16, 16, 3))
    conv = keras.layers.Conv2D(4, 3, strides=2, padding="same", use_bias=False, name="stem")
    norm = keras.layers.BatchNormalization(name="stem_bn")
    backbone = keras.Model(inner_in, norm(conv(inner_in)), name="backbone")
    image = keras.Input((16, 16, 3), name="image")
    model = keras.Model(image, backbone(keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")(image)))
    conv.set_weights([rng.normal(0, 0.3, (3, 3, 3, 4)).astype(np.float32)])
    norm.set_weights([rng.uniform(0.5, 2, 4), rng.normal(0, 1, 4), rng.normal(0, 1, 4), rng.uniform(0.5, 2, 4)])
    return model


def test_a_half_step_normalisation_folds_exactly_except_on_the_padded_border() -> None:
    model = _half_step_model()
    folded, fold = input_folded(model)
    assert fold.zero_pixel == [128.0] * 3 and fold.border_offset == pytest.approx(0.5 / 127.5)
    pixels = np.random.default_rng(1).integers(0, 256, (8, 16, 16, 3)).astype(np.float32)
    want, got = model.predict(pixels, verbose=0), folded.predict(pixels, verbose=0)
    # 'same' with stride 2 on 16 px pads one row and one column, at the bottom and the right.
    np.testing.assert_allclose(got[:, :-1, :-1], want[:, :-1, :-1], atol=1e-4)
    border = np.abs(got - want)
    assert border[:, -1].max() > 1e-4 or border[:, :, -1].max() > 1e-4  # the half step shows there
    # ...and is bounded by the offset times the kernel's weight on the padded taps, through the BatchNorm.
    conv, norm = model.get_layer("backbone").get_layer("stem"), model.get_layer("backbone").get_layer("stem_bn")
    gamma, _, _, variance = norm.get_weights()
    bound = fold.border_offset * np.abs(conv.get_weights()[0]).sum((0, 1, 2)) * gamma / np.sqrt(variance + norm.epsilon)
    assert (border.max((0, 1, 2)) <= bound + 1e-5).all()


def test_models_the_fold_does_not_fit_are_left_as_they_are() -> None:
    import keras

    def model(*layers):
        image = keras.Input((8, 8, 3))
        x = image
        for layer in layers:
            x = layer(x)
        return keras.Model(image, x)

    cases = {
        "does not start with a Rescaling": model(keras.layers.Conv2D(3, 1), keras.layers.Conv2D(4, 3)),
        "not read by one plain Conv2D": model(keras.layers.Rescaling(1 / 255), keras.layers.DepthwiseConv2D(3)),
        "neither a bias nor a BatchNorm": model(keras.layers.Rescaling(1 / 255), keras.layers.Conv2D(4, 3, use_bias=False),
                                                keras.layers.ReLU()),
        "only positive scales fold": model(keras.layers.Rescaling(-1.0), keras.layers.Conv2D(4, 3)),
        "maps no pixel 0..255 to 0": model(keras.layers.Rescaling(1 / 255, offset=0.5), keras.layers.Conv2D(4, 3)),
    }
    for reason, given in cases.items():
        folded, fold = input_folded(given)
        assert folded is given and reason in fold.reason and fold.to_dict() == {"folded": False, "reason": fold.reason}
        assert reason in fold_summary(given)


def _scales_before_first_conv(content: bytes) -> dict[str, float]:
    """op name -> the scale of its int8 output, for the ops of a .tflite before its first CONV_2D."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    scales = {}
    for op in interpreter._get_ops_details():
        if op["op_name"] == "CONV_2D":
            return scales
        scales[op["op_name"]] = tensors[op["outputs"][0]]["quantization"][0]
    raise AssertionError("no CONV_2D in the file")


def test_the_first_conv_of_an_integer_tflite_reads_exact_pixels_once_folded(keras_model, spec, photos) -> None:
    from pocketml.export.quantization.equalize import bias_corrected
    from pocketml.export.tflite import int8_converter

    ready, done = integer_ready(keras_model, photos, qmax=127)
    assert done["input_fold"]["folded"] and done["bias_correction"]["corrected_layers"] > 40
    folded = _scales_before_first_conv(int8_converter(ready, spec, photos).convert())
    assert "MUL" not in folded and all(s == pytest.approx(1.0) for s in folded.values())  # one step per pixel value
    # Unfolded, the converter computes (x - 127) / 128 as x * (1/128) - 127/128 and rounds the product
    # onto a grid coarser than one pixel (1.5 pixel values a step on these photos).
    corrected, _ = bias_corrected(keras_model, photos, qmax=127)
    unfolded = _scales_before_first_conv(int8_converter(corrected, spec, photos).convert())
    assert unfolded["MUL"] > 1.2 / 128


def test_a_normalisation_inside_the_users_own_model_is_found_and_folded() -> None:
    """Keras' MobileNetV3 and EfficientNetV2 (and many users' models) carry their Rescaling inside
    the model pocketml wraps; the fold must reach into it, and leave the wrapped model untouched."""
    import keras

    rng = np.random.default_rng(2)
    inner_in = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255.0, name="their_rescaling")(inner_in)
    conv = keras.layers.Conv2D(4, 3, padding="same", name="their_conv")
    users = keras.Model(inner_in, keras.layers.GlobalAveragePooling2D()(conv(x)), name="users_model")
    conv.set_weights([rng.normal(0, 0.3, (3, 3, 3, 4)).astype(np.float32), rng.normal(0, 1, 4).astype(np.float32)])
    image = keras.Input((16, 16, 3), name="image")
    wrapped = keras.Model(image, users(image))

    folded, fold = input_folded(wrapped)

    assert fold.to_dict()["folded"] and (fold.rescaling, fold.conv) == ("their_rescaling", "their_conv")
    assert fold.zero_pixel == [0.0] * 3 and "their_rescaling folded into their_conv" in fold_summary(wrapped)
    inner = folded.get_layer("users_model").get_layer("their_rescaling").get_config()
    assert (inner["scale"], inner["offset"]) == (1.0, 0.0)
    assert users.get_layer("their_rescaling").get_config()["scale"] == pytest.approx(1 / 255)  # left as it was
    pixels = rng.integers(0, 256, (4, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(folded.predict(pixels, verbose=0), wrapped.predict(pixels, verbose=0), atol=1e-4)
