"""Augmentation as stock Keras layers, run on the device inside the compiled step, never saved.

`AugmentedTrainer` wraps the classifier for phase 2: it casts the uint8 batch to float, augments
it (training only) and calls the classifier, whose layers it shares; what is saved afterwards is
the classifier alone, so no Random* layer ever reaches an exported file. `AugmentedFeatures` does
the same in front of phase 1's feature extractor (augmenting also at predict time, which is how
the augmented feature copies are made). Batches travel as uint8 (a quarter of float32's bytes to
the device) and are augmented where the model runs: in the XLA program on a GPU.

Imports keras at module level: import this module only once the backend is decided.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import ops


@dataclass(frozen=True)
class Augment:
    flip: bool = True
    rotation: float = 0.05  # fraction of a full turn
    zoom: float = 0.1  # fraction of the side
    brightness: float = 0.1  # fraction of the 0..255 range
    contrast: float = 0.1  # contrast factor deviation

    @classmethod
    def from_config(cls, config) -> Augment | None:
        if not config.augment:
            return None
        return cls(config.augment_flip, config.augment_rotation, config.augment_zoom,
                   config.augment_brightness, config.augment_contrast)

    def layers(self, seed: int) -> list:
        """Keras preprocessing layers, each with its own seed."""
        # float32 even under a mixed policy: interpolated pixels keep their fractions.
        f32 = {"dtype": "float32"}
        out = []
        if self.flip:
            out.append(keras.layers.RandomFlip("horizontal", seed=seed, **f32))
        if self.rotation > 0:
            out.append(keras.layers.RandomRotation(self.rotation, fill_mode="reflect", seed=seed + 1, **f32))
        if self.zoom > 0:
            out.append(keras.layers.RandomZoom(self.zoom, fill_mode="reflect", seed=seed + 2, **f32))
        if self.brightness > 0:
            out.append(keras.layers.RandomBrightness(self.brightness, value_range=(0, 255), seed=seed + 3, **f32))
        if self.contrast > 0:
            out.append(keras.layers.RandomContrast(self.contrast, value_range=(0, 255), seed=seed + 4, **f32))
        if keras.backend.backend() == "jax":
            for layer in out:
                # Keras marks rotation/zoom as not jit-compatible because TensorFlow's image
                # transform op has no XLA kernel; on JAX they are plain jnp code and compile, and
                # leaving the flag would make Keras run the whole train step un-jitted.
                layer.supports_jit = True
        return out


def augmented(x, layers: list):
    """`x` (float 0..255) through the augmentation layers in training mode, clipped to 0..255."""
    for layer in layers:
        x = layer(x, training=True)
    return ops.clip(x, 0.0, 255.0)


# Both wrappers are built when constructed. Keras' JAX trainer builds an unbuilt model on the first
# batch of predict/fit and then rewinds the data, but a PyDataset with worker threads does not
# rewind: every prediction would come out one batch late, paired with the wrong labels.


class _Augmenting(keras.Model):
    """A wrapper with augmentation layers; a subclass sets its wrapped model, then calls build
    (Keras refuses sub-layers added after build)."""

    def __init__(self, name: str, augment: Augment | None, seed: int, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.augmentation = augment.layers(seed) if augment else []

    def build(self, input_shape) -> None:
        for layer in self.augmentation:
            layer.build(input_shape)


class AugmentedTrainer(_Augmenting):
    """uint8 images -> (augmented when training) -> the wrapped classifier's probabilities."""

    def __init__(self, classifier, augment: Augment | None, seed: int = 0, **kwargs) -> None:
        super().__init__("augmented_trainer", augment, seed, **kwargs)
        self.classifier = classifier
        self.build(tuple(classifier.input_shape))

    def call(self, images, training=False):
        x = ops.cast(images, "float32")
        if training and self.augmentation:
            x = augmented(x, self.augmentation)
        return self.classifier(x, training=training)


class AugmentedFeatures(_Augmenting):
    """uint8 images -> (augmented, also under predict) -> pooled backbone features."""

    def __init__(self, extractor, augment: Augment | None, seed: int = 0, **kwargs) -> None:
        super().__init__("augmented_features", augment, seed, **kwargs)
        self.extractor = extractor
        self.build(tuple(extractor.input_shape))

    def call(self, images, training=False):
        x = ops.cast(images, "float32")
        if self.augmentation:
            x = augmented(x, self.augmentation)
        # The backbone is frozen here: BatchNorm and dropout in inference mode whatever the caller says.
        return ops.cast(self.extractor(x, training=False), "float32")
