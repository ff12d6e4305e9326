"""Keras-level weight-rounding bias correction, applied before conversion (Nagel et al. 2019, sec. 4.2).

Rounding a kernel onto an int8 grid shifts each output channel's mean by (W_q - W) . E[x]: small
kernels (depthwise 3x3, 9 weights a channel) shift it most, and the shift adds up through the
network. Measured on a fitted-head MobileNetV2 a0.35 (96 px, 50 held-out hot-dog photos), rounding
the weights alone (per-channel, activations float) flipped 3 of 50 decisions and moved a
probability by 0.48; with the shift absorbed into the next BatchNorm's moving mean, 0 flips and
0.066. The correction is exact for a format whose converter rounds onto the same grid: TFLite int8 and
ONNX Runtime's symmetric int8 weights (per output channel, +-127; +-64 for ONNX's reduce_range).
BatchNorm folding scales each channel by a positive constant, which commutes with per-channel
rounding, so simulating it on the unfolded Keras kernel gives the converter's rounding.

Cross-layer equalisation (the same paper, sec. 4.1) is not applied: it rescales channels between
two layers, which is exact only through ReLU, and these backbones use ReLU6; with per-channel weight
grids (every format here) its gain is mostly gone anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

CORRECTION_IMAGES = 64  # calibration images whose layer inputs estimate E[x]: means settle well before this
BATCH = 16  # images per forward pass while collecting layer inputs: bounds memory on 2-core laptops


@dataclass
class Correction:
    """What bias correction changed: the layers corrected and those it could not correct."""

    qmax: int  # grid half-width the rounding was simulated on (127 = 8-bit symmetric, 64 = ONNX reduce_range)
    corrected: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # kernel layers with neither a BatchNorm after them nor a bias
    largest_shift: float = 0.0  # the largest |mean shift| absorbed, in the layer's output units

    def to_dict(self) -> dict:
        return {"qmax": self.qmax, "corrected_layers": len(self.corrected), "skipped_layers": self.skipped,
                "largest_shift": round(self.largest_shift, 6)}


def rounded(kernel: np.ndarray, axis: int, qmax: int) -> np.ndarray:
    """`kernel` rounded onto a symmetric per-channel grid of +-qmax steps along `axis` (scale max|w|/qmax)."""
    others = tuple(i for i in range(kernel.ndim) if i != axis % kernel.ndim)
    scale = np.abs(kernel).max(axis=others, keepdims=True) / qmax
    scale = np.where(scale == 0, 1.0, scale)  # an all-zero channel stays zero
    return (np.round(kernel / scale) * scale).astype(kernel.dtype)


def bias_corrected(model: Any, calibration: np.ndarray, qmax: int = 127) -> tuple[Any, Correction]:
    """A copy of `model` whose biases (or the following BatchNorm's moving means) absorb the mean
    shift that rounding each Conv2D / DepthwiseConv2D / Dense kernel onto the int8 grid causes;
    `model` itself is left as it was. `calibration`: uint8|float32 [N,H,W,3] RGB 0..255.
    """
    import keras

    copy = keras.Model.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    correction = Correction(qmax)
    images = np.asarray(calibration[:CORRECTION_IMAGES], dtype=np.float32)
    _correct_graph(copy, [images], correction)
    return copy, correction


def _kernel_layers(graph: Any) -> list[Any]:
    import keras

    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    return [layer for layer in graph.layers if isinstance(layer, kinds)]


def _nested(graph: Any) -> list[Any]:
    import keras

    return [layer for layer in graph.layers if isinstance(layer, keras.Model)]


def _correct_graph(graph: Any, inputs: list[np.ndarray], correction: Correction) -> None:
    """Correct the kernel layers of one functional graph, then of the graphs nested inside it."""
    import keras

    layers, nested = _kernel_layers(graph), _nested(graph)
    if not layers and not nested:
        return
    # A nested model's own `input` is its inner Input; the tensor feeding it here is its call's input.
    fed = [sub._inbound_nodes[0].input_tensors[0] for sub in nested]
    probe = keras.Model(graph.inputs, [layer.input for layer in layers] + fed)
    values = probe.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0, batch_size=BATCH)
    values = values if isinstance(values, list) else [values]
    for layer, value in zip(layers, values, strict=False):
        _correct_layer(layer, np.asarray(value), correction)
    for sub, value in zip(nested, values[len(layers):], strict=True):
        _correct_graph(sub, [np.asarray(value)], correction)


def _mean_shift(layer: Any, x: np.ndarray, qmax: int) -> np.ndarray:
    """Per-output-channel mean of (W_q - W) applied to the layer's real inputs `x`."""
    import keras
    import tensorflow as tf

    kernel = np.asarray(layer.get_weights()[0])
    if isinstance(layer, keras.layers.Dense):
        delta = rounded(kernel, 1, qmax) - kernel
        return x.reshape(-1, x.shape[-1]).mean(0) @ delta
    depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
    if depthwise:  # (h, w, in, multiplier): one grid per output channel in*multiplier
        h, w, channels, mult = kernel.shape
        flat = kernel.reshape(h, w, channels * mult)
        delta = (rounded(flat, 2, qmax) - flat).reshape(kernel.shape)
        out = tf.nn.depthwise_conv2d(x, delta, [1, *layer.strides, 1], layer.padding.upper(), dilations=layer.dilation_rate)
    else:
        delta = rounded(kernel, 3, qmax) - kernel
        out = tf.nn.conv2d(x, delta, [1, *layer.strides, 1], layer.padding.upper(), dilations=layer.dilation_rate)
    return np.asarray(tf.reduce_mean(out, axis=[0, 1, 2]))


def _correct_layer(layer: Any, x: np.ndarray, correction: Correction) -> None:
    import keras

    if getattr(layer, "groups", 1) != 1:
        correction.skipped.append(layer.name)
        return
    shift = _mean_shift(layer, x, correction.qmax)
    follower = _only_consumer(layer)
    if isinstance(follower, keras.layers.BatchNormalization) and follower.center and follower.axis in (-1, 3):
        # BatchNorm subtracts its moving mean: raising it by the shift cancels the shift exactly.
        weights = follower.get_weights()
        index = len(weights) - 2  # [gamma?, beta?, moving_mean, moving_variance]
        weights[index] = weights[index] + shift
        follower.set_weights(weights)
    elif getattr(layer, "use_bias", False):
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel, bias - shift])
    else:
        correction.skipped.append(layer.name)
        return
    correction.corrected.append(layer.name)
    correction.largest_shift = max(correction.largest_shift, float(np.abs(shift).max()))


def _only_consumer(layer: Any) -> Any:
    """The one layer reading `layer`'s output, or None when several do (then a BatchNorm cannot be
    told apart from a residual branch)."""
    nodes = getattr(layer, "_outbound_nodes", [])
    return nodes[0].operation if len(nodes) == 1 else None
