"""The Keras original as a Predictor: the reference every exported artifact is compared with.

It runs the same classifier export converts (export/graph.py): the user's model behind the fixed
`image` input, with the preprocessing export added in front of it and a softmax after logits, so
parity compares like with like.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pocketml.export.model_source import load_classifier, load_source
from pocketml.export.runtime import check_images

from pocketml.spec import ModelSpec, Normalization

BATCH = 32  # images per forward pass: bounded memory on a laptop, few Python round trips


class KerasPredictor:
    name = "keras"

    def __init__(
        self, model: Any, input_size: tuple[int, int], spec: ModelSpec | None = None, notes: list[str] | None = None
    ) -> None:
        self.model = model
        self.input_size = input_size
        self.spec = spec  # labels and preprocessing, when known
        self.notes = notes or []  # what loading the model assumed or changed

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


def load_keras_predictor(
    path: str | Path | Any, image_size: tuple[int, int] | None = None, normalization: Normalization | None = None
) -> KerasPredictor:
    """The model at `path` (any source export accepts, or a keras.Model) shaped exactly as export
    shaped it. `normalization` is the one export recorded: applied in front when export added it."""
    preprocess = normalization if normalization is not None and normalization.added_at_export else None
    loaded = load_classifier(path, tuple(image_size) if image_size else None, preprocess)
    return KerasPredictor(loaded.model, loaded.size)


def load(
    path: str | Path,
    labels: str | Path | None = None,
    image_size: str | tuple[int, int] | None = None,
    preprocess: Normalization | None = None,
) -> KerasPredictor:
    """A Predictor with its spec (labels from spec.json or `labels`) for `pocketml predict`."""
    source = load_source(path, labels=labels, image_size=image_size, preprocess=preprocess)
    return KerasPredictor(source.model, source.spec.image_size, source.spec, source.notes)
