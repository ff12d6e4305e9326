"""The Keras original as a Predictor: the reference every exported artifact is compared with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from export.predictor import check_images
from export.source import load_model_checked

BATCH = 32  # images per forward pass: bounded memory on a laptop, few Python round trips


class KerasPredictor:
    name = "keras"

    def __init__(self, model: Any, input_size: tuple[int, int]) -> None:
        self.model = model
        self.input_size = input_size

    def invoker(self, image: np.ndarray):
        """One forward pass on `image` (batch 1), eagerly, as TensorFlow runs it with its own thread pool."""
        x = check_images(image, self.input_size).astype(np.float32)
        model = self.model
        return lambda: model(x, training=False)

    def predict(self, images: np.ndarray) -> np.ndarray:
        images = check_images(images, self.input_size).astype(np.float32)
        if len(images) == 0:
            return np.zeros((0, int(self.model.outputs[0].shape[-1])), dtype=np.float32)
        batches = [self.model(images[i : i + BATCH], training=False) for i in range(0, len(images), BATCH)]
        return np.concatenate([np.asarray(b, dtype=np.float32) for b in batches])


def load_keras_predictor(path: str | Path, image_size: tuple[int, int] | None = None) -> KerasPredictor:
    """The model at `path` (.keras or a directory with model.keras), shaped exactly as export shapes it
    (fixed input, softmax added to logits), so parity compares like with like.
    """
    model, _, _ = load_model_checked(path, tuple(image_size) if image_size else None)
    return KerasPredictor(model, tuple(int(x) for x in model.inputs[0].shape[1:3]))
