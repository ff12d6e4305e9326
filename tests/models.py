"""Small classifiers for tests, built the way pocketml's training builds them (preprocessing
inside the model, global pooling, Dense + softmax), without depending on the training package.
"""

from __future__ import annotations

from pathlib import Path

from pocketml.spec import ModelSpec, Normalization

LABELS = ("hot_dog", "not_hot_dog")


def build_classifier(weights: str | Path | None, size: int = 96, classes: int = 2, alpha: float = 0.35, seed: int = 0):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")(inputs)
    backbone = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), alpha=alpha, include_top=False, weights=str(weights) if weights else None
    )
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="classifier")


def save_real_classifier(directory: Path, weights: Path, size: int = 96) -> Path:
    model = build_classifier(weights, size=size)
    model.save(directory / "model.keras")
    ModelSpec(
        labels=LABELS,
        image_size=(size, size),
        normalization=Normalization.for_mobilenet(),
        backbone="mobilenet_v2",
        weights=str(weights.name),
    ).save(directory)
    return directory
