"""The one graph every converter sees, whatever shape the user's model came in.

    image  float32 [N, H, W, 3], RGB 0..255           (fixed name, fixed H and W)
      -> preprocessing the model lacks (--preprocess; a Rescaling, or one 1x1 Conv2D when it
         also reverses RGB to BGR)
      -> the user's network (Functional, Sequential, subclassed, or a SavedModel signature; an
         integer-input network is re-entered with a float input, sharing its layers)
      -> Softmax when the network ends in logits
      -> probabilities  float32 [N, classes]

`classifier()` builds that as a Keras model (the reference validate runs, and what `ModelSource.model`
holds); `traced()` / `frozen_function()` turn any Keras model into the tf.function with the fixed
input signature `image` that TFLite, Core ML and ONNX convert. So the converters never meet a
user's input names, model class or dtype. Everything here is stock Keras layers except the wrapper
around a SavedModel signature, which is never serialised.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from pocketml.spec import Normalization

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
PREPROCESS_NAME = "pocketml_preprocess"


def input_signature(size: tuple[int, int], batch: int | None = 1):
    """The TensorSpec of every converted graph's input: float32 [batch, H, W, 3] named `image`."""
    import tensorflow as tf

    return tf.TensorSpec([batch, *size, 3], tf.float32, name=INPUT_NAME)


def traced(model: Any):
    """`model` as a tf.function returning {"probabilities": ...}, in inference mode."""
    import tensorflow as tf

    return tf.function(lambda image: {OUTPUT_NAME: model(image, training=False)})


def frozen_function(model: Any, size: tuple[int, int], batch: int | None = 1):
    """The traced model with its weights as constants (no trackable object left to convert).

    Batch 1 is what mobile interpreters and Core ML take. Freezing here takes ~3 s per conversion;
    TFLite's from_keras_model writes and re-reads a SavedModel every time (~30 s for MobileNetV2
    α0.35 on a busy 2-core machine).
    """
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    return convert_variables_to_constants_v2(traced(model).get_concrete_function(input_signature(size, batch)))


def preprocessing_layer(norm: Normalization):
    """x' = (x - mean) / std per channel (then RGB->BGR for channel_order BGR) as one stock layer.

    BGR becomes a 1x1 convolution whose kernel is the channel permutation scaled by 1/std: every
    output channel is one input channel times one weight plus a bias, so it is as exact as the
    Rescaling it replaces and every converter and runtime has the op.
    """
    import keras

    scale = np.array([1.0 / s for s in norm.std], np.float32)
    offset = np.array([-m / s for m, s in zip(norm.mean, norm.std, strict=True)], np.float32)
    if norm.channel_order == "RGB":
        return keras.layers.Rescaling(scale.tolist(), offset=offset.tolist(), name=PREPROCESS_NAME)
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    for out, source in enumerate((2, 1, 0)):  # BGR output channel `out` reads RGB channel `source`
        kernel[0, 0, source, out] = scale[source]
    layer = keras.layers.Conv2D(3, 1, name=PREPROCESS_NAME, trainable=False)
    layer.build((None, None, None, 3))
    layer.set_weights([kernel, offset[[2, 1, 0]]])
    return layer


def float_input(network: Any, size: tuple[int, int]) -> Any:
    """A Functional/Sequential network whose input dtype is an integer (uint8 camera bytes), rebuilt on
    a float32 input that shares its layers and weights.

    Keras would cast the float pixels to uint8 at the input, and Core ML's TensorFlow frontend has
    no cast to uint8; the network's first layer casts back to float anyway, so for the integer
    pixel values apps feed (0..255) the outputs are identical.
    """
    import keras

    return keras.models.clone_model(
        network, input_tensors=keras.Input((*size, 3), dtype="float32"), clone_function=lambda layer: layer
    )


@functools.cache
def _signature_layer_class():
    import keras

    class SavedModelSignature(keras.layers.Layer):
        """A SavedModel serving signature as a layer (keyword input, one named output)."""

        def __init__(self, loaded, signature, input_name: str, output_name: str, **kwargs):
            super().__init__(trainable=False, **kwargs)
            self._loaded = loaded  # keeps the restored variables alive for the signature
            self._signature = signature
            self._input_name = input_name
            self._output_name = output_name
            self._input_dtype = signature.structured_input_signature[1][input_name].dtype

        def call(self, inputs):
            import tensorflow as tf

            return self._signature(**{self._input_name: tf.cast(inputs, self._input_dtype)})[self._output_name]

        def compute_output_shape(self, input_shape):
            return tuple(self._signature.structured_outputs[self._output_name].shape)

    return SavedModelSignature


def signature_layer(loaded: Any, signature: Any, input_name: str, output_name: str):
    """A Keras layer calling `signature` of a SavedModel loaded with tf.saved_model.load."""
    return _signature_layer_class()(loaded, signature, input_name, output_name, name="saved_model")


def network_output(network: Any, size: tuple[int, int], preprocess: Normalization | None):
    """(image input, the network's output tensor(s)) for `network` behind the fixed input and `preprocess`."""
    import keras

    image = keras.Input((*size, 3), name=INPUT_NAME, dtype="float32")
    x = preprocessing_layer(preprocess)(image) if preprocess is not None and not preprocess.is_identity else image
    return image, network(x)


def classifier(image: Any, output: Any, add_softmax: bool, name: str = "classifier"):
    """The Keras classifier from `network_output`'s tensors, ending in probabilities."""
    import keras

    if add_softmax:
        output = keras.layers.Softmax(name=OUTPUT_NAME)(output)
    return keras.Model(image, output, name=name)
