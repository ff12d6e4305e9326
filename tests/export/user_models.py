"""Image classifiers shaped the ways users write them, all with real ImageNet weights (the packaged
EfficientNet-Lite0) and one head fitted on real photos, so every shape computes the same decisions:
functional with an unnamed input, Sequential, subclassed, a logits head, uint8 input, a dynamic
input size, no preprocessing inside (it expects (x - 127) / 128, given at export), and BGR input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tests.models import PHOTO_LABELS

SIZE = 64  # px: small enough for quick conversions, large enough for Lite0's five stride-2 steps
MEAN, STD = 127.0, 128.0  # EfficientNet-Lite0's preprocessing: (x - 127) / 128


@dataclass
class Parts:
    """One backbone and one fitted head that every user-shaped model is assembled from."""

    backbone: Any  # EfficientNet-Lite0 (keras.Model, no top) at SIZE
    kernel: np.ndarray  # [features, 2] softmax-head weights fitted on the training photos
    bias: np.ndarray  # [2]


def fitted_parts(train_dir: Path) -> Parts:
    import keras
    from sklearn.linear_model import LogisticRegression

    from pocketml.dataset import load_images, read_records
    from training.backbones import build_backbone, get_backbone, resolve_weights

    lite = get_backbone("efficientnet_lite0")
    backbone = build_backbone(lite, SIZE, 1.0, resolve_weights(lite, "imagenet"))
    records = [r for r in read_records(train_dir) if r.label in PHOTO_LABELS]
    images = load_images([r.path for r in records], (SIZE, SIZE)).astype(np.float32)
    features = np.asarray(keras.layers.GlobalAveragePooling2D()(backbone.predict((images - MEAN) / STD, verbose=0)))
    labels = np.array([PHOTO_LABELS.index(r.label) for r in records])
    head = LogisticRegression(C=0.5, max_iter=2000).fit(features, labels)
    # Softmax over logits (0, w.x + b) is the logistic model's probability for class 1.
    kernel = np.zeros((features.shape[1], 2), np.float32)
    kernel[:, 1] = head.coef_[0]
    return Parts(backbone, kernel, np.array([0.0, head.intercept_[0]], np.float32))


def _head(parts: Parts, activation: str | None = "softmax"):
    import keras

    dense = keras.layers.Dense(2, activation=activation)
    dense.build((None, parts.kernel.shape[0]))
    dense.set_weights([parts.kernel, parts.bias])
    return dense


def _rescaling():
    import keras

    return keras.layers.Rescaling(1 / STD, offset=-MEAN / STD)


def _pool():
    import keras

    return keras.layers.GlobalAveragePooling2D()


def functional_unnamed(parts: Parts):
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))  # no name: Keras calls it input_layer_N
    return keras.Model(inputs, _head(parts)(_pool()(parts.backbone(_rescaling()(inputs)))))


def sequential(parts: Parts):
    import keras

    return keras.Sequential([keras.Input((SIZE, SIZE, 3)), _rescaling(), parts.backbone, _pool(), _head(parts)])


def subclassed(parts: Parts):
    import keras

    class PhotoClassifier(keras.Model):
        def __init__(self):
            super().__init__()
            self.scale, self.backbone, self.pool, self.head = _rescaling(), parts.backbone, _pool(), _head(parts)

        def call(self, images, training=False):
            return self.head(self.pool(self.backbone(self.scale(images), training=training)))

    model = PhotoClassifier()
    model(np.zeros((1, SIZE, SIZE, 3), np.float32))
    return model


def logits_head(parts: Parts):
    import keras

    inputs = keras.Input((SIZE, SIZE, 3), name="pixels")
    return keras.Model(inputs, _head(parts, activation=None)(_pool()(parts.backbone(_rescaling()(inputs)))))


def uint8_input(parts: Parts):
    import keras

    inputs = keras.Input((SIZE, SIZE, 3), dtype="uint8", name="camera_bytes")
    return keras.Model(inputs, _head(parts)(_pool()(parts.backbone(_rescaling()(inputs)))))


def dynamic_size(parts: Parts):
    """The same network on a [N, None, None, 3] input (the backbone rebuilt from its config)."""
    import keras

    config = parts.backbone.get_config()
    config["layers"][0]["config"]["batch_shape"] = [None, None, None, 3]
    backbone = keras.Model.from_config(config)
    backbone.set_weights(parts.backbone.get_weights())
    inputs = keras.Input((None, None, 3))
    return keras.Model(inputs, _head(parts)(_pool()(backbone(_rescaling()(inputs)))))


def without_preprocessing(parts: Parts):
    """Expects (x - 127) / 128 but does not contain it: exported with --mean 127 --std 128."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    return keras.Model(inputs, _head(parts)(_pool()(parts.backbone(inputs))))


def bgr_input(parts: Parts):
    """Expects normalised BGR (its stem convolution's input channels reversed), nothing inside:
    exported with --mean 127 --std 128 --bgr, it must decide exactly as the RGB models do."""
    import keras

    config = parts.backbone.get_config()
    backbone = keras.Model.from_config(config)
    backbone.set_weights(parts.backbone.get_weights())
    stem = next(layer for layer in backbone.layers if type(layer).__name__ == "Conv2D")
    kernel, *rest = stem.get_weights()
    stem.set_weights([kernel[:, :, ::-1, :].copy(), *rest])
    inputs = keras.Input((SIZE, SIZE, 3))
    return keras.Model(inputs, _head(parts)(_pool()(backbone(inputs))))


def reference_probabilities(model, images: np.ndarray, mean=0.0, std=1.0, bgr=False, logits=False) -> np.ndarray:
    """What the user's own model says about `images` (uint8 RGB) with the preprocessing it expects,
    computed by hand, independently of pocketml's graph."""
    x = (images.astype(np.float32) - np.float32(mean)) / np.float32(std)
    if bgr:
        x = x[..., ::-1]
    if getattr(model, "inputs", None) and str(model.inputs[0].dtype) == "uint8":
        x = images  # camera bytes, as the model was written to take them
    out = np.asarray(model(x, training=False), np.float64)
    if logits:
        out = np.exp(out - out.max(axis=1, keepdims=True))
        out /= out.sum(axis=1, keepdims=True)
    return out
