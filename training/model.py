"""The classifier every export sees: RGB 0..255 in, class probabilities out.

    image (uint8-valued float, RGB 0..255)
      -> preprocess (Rescaling: the backbone's normalisation)
      -> backbone (always called in inference mode, so BatchNorm keeps its ImageNet statistics)
      -> pool (global average) -> dropout -> probabilities (Dense + softmax, also for two classes)

Only stock Keras layers, so `model.keras` loads with safe_mode=True without importing pocketml.
"""

from __future__ import annotations

from pocketml.spec import Normalization

INPUT_NAME = "image"
PREPROCESS_NAME = "preprocess"
POOL_NAME = "pool"
DROPOUT_NAME = "dropout"
OUTPUT_NAME = "probabilities"


def preprocessing_layer(norm: Normalization):
    """x' = (x - mean) / std per channel, as one Rescaling layer (scale 1/std, offset -mean/std)."""
    import keras

    scale = [1.0 / s for s in norm.std]
    offset = [-m / s for m, s in zip(norm.mean, norm.std, strict=True)]
    if len(set(scale)) == 1 and len(set(offset)) == 1:
        # Scalars keep the graph simplest for converters when all channels agree (most backbones).
        return keras.layers.Rescaling(scale[0], offset=offset[0], name=PREPROCESS_NAME)
    return keras.layers.Rescaling(scale, offset=offset, name=PREPROCESS_NAME)


def build_classifier(backbone, norm: Normalization, num_classes: int, dropout: float):
    """The full model around an already-built `backbone` (a keras.Model without top)."""
    import keras

    height, width = backbone.input_shape[1:3]
    inputs = keras.Input((height, width, 3), name=INPUT_NAME)
    x = preprocessing_layer(norm)(inputs)
    # training=False pins BatchNorm to inference mode even when top blocks are unfrozen: with small
    # batches, batch statistics would overwrite the ImageNet ones and wreck the features.
    x = backbone(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name=POOL_NAME)(x)
    x = keras.layers.Dropout(dropout, name=DROPOUT_NAME)(x)
    # float32 output even under mixed precision: softmax in float16 saturates.
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name=OUTPUT_NAME)(x)
    return keras.Model(inputs, outputs, name="classifier")


def feature_extractor(classifier):
    """RGB 0..255 -> pooled backbone features, sharing the classifier's layers."""
    import keras

    return keras.Model(classifier.input, classifier.get_layer(POOL_NAME).output, name="features")


def build_head(feature_dim: int, num_classes: int, dropout: float):
    """Dropout + Dense on cached features; its Dense weights are copied into the classifier after fitting.

    The Dense starts at zero: fitting a softmax on fixed features is convex, so from zero the result
    does not hang on a backend's random-number generator (TensorFlow and JAX draw different initial
    weights from one seed) and a run on a GPU with JAX lands where a CPU run with TensorFlow does.
    """
    import keras

    inputs = keras.Input((feature_dim,), name="features")
    x = keras.layers.Dropout(dropout, name=DROPOUT_NAME)(inputs)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", kernel_initializer="zeros",
                                 name=OUTPUT_NAME)(x)
    return keras.Model(inputs, outputs, name="head")


def copy_head(head, classifier) -> None:
    classifier.get_layer(OUTPUT_NAME).set_weights(head.get_layer(OUTPUT_NAME).get_weights())
