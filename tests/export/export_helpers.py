"""Helpers shared by the export tests: a tiny Keras classifier, and one real-weights TFLite export
(every precision, calibrated on the training photos, judged on the held-out ones) made once per
test session because each conversion takes seconds.
"""

from __future__ import annotations

import functools
from pathlib import Path

from pocketml.spec import ModelSpec, Normalization

TFLITE_PRECISIONS = ["fp32", "fp16", "int8-dynamic", "int8", "int8-uint8io"]


def tiny_classifier(size: int = 32, classes: int = 2, activation: str | None = "softmax", channels: int = 3):
    """A few-layer conv classifier in the shape pocketml trains (rescaling inside, pooled, dense head)."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, channels), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation=activation)(x)
    return keras.Model(inputs, outputs)


def save_model_dir(directory: Path, model, labels=("cat", "coffee"), with_spec: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / "model.keras")
    if with_spec:
        size = tuple(int(x) for x in model.inputs[0].shape[1:3])
        ModelSpec(labels=tuple(labels), image_size=size, normalization=Normalization.for_mobilenet()).save(directory)
    return directory


def tiny_model_dir(directory: Path, **kwargs) -> Path:
    return save_model_dir(directory, tiny_classifier(**kwargs))


@functools.cache
def real_tflite_export(model_dir: Path, photos_dir: Path, base: Path) -> Path:
    """`model_dir` exported to TFLite in every precision, calibrated on the training photos and judged
    on the test photos (tests/photos.py). Cached: the session's tests share one export.
    """
    from pocketml.export.exporter import export_model

    from pocketml.configs.export import ExportConfig

    out = base / "real_tflite_export"
    config = ExportConfig(formats=["tflite"], precisions=TFLITE_PRECISIONS, calibration=photos_dir)
    export_model(model_dir, out, config)
    return out
