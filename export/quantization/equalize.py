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

The same correction serves Core ML's k-means palettes (`palette_bits`): there the grid is one
look-up table per tensor, found by k-means on the converter's weights, which are the kernel with the
following BatchNorm folded in and cast to fp16. That is simulated exactly (coremltools' own k-means on
the folded fp16 kernel in Core ML's [out, in, h, w] layout), and the rounding error is unfolded back
onto the Keras kernel before its mean shift is taken. Measured on quantization_bench's hot-dog model
(MobileNetV2 a0.35 96 px, 50 held-out photos): 6-bit palettes flipped 2 of 50 decisions, with the
correction 0 of 50 (max |dp| 0.10 instead of 0.22).

Cross-layer equalisation (the same paper, sec. 4.1) is not applied: it rescales channels between
two layers, which is exact only through ReLU, and these backbones use ReLU6; with per-channel weight
grids (every format here) its gain is mostly gone anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pocketml.errors import reason_of

CORRECTION_IMAGES = 64  # calibration images whose layer inputs estimate E[x]: means settle well before this
BATCH = 16  # images per forward pass while collecting layer inputs: bounds memory on 2-core laptops


@dataclass
class Correction:
    """What bias correction changed: the layers corrected and those it could not correct."""

    qmax: int | None  # grid half-width the rounding was simulated on (127 = 8-bit symmetric, 64 = ONNX reduce_range)
    palette_bits: int | None = None  # or: bits of the per-tensor k-means palette (Core ML), qmax None
    min_elements: int = 0  # kernels with fewer weights are left uncompressed by the converter: not corrected
    corrected: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # kernel layers with neither a BatchNorm after them nor a bias
    largest_shift: float = 0.0  # the largest |mean shift| absorbed, in the layer's output units
    not_applied: str | None = None  # why the model could not be corrected at all (it cannot be rebuilt)

    def to_dict(self) -> dict:
        grid = {"palette_bits": self.palette_bits} if self.palette_bits else {"qmax": self.qmax}
        done = {"not_applied": self.not_applied} if self.not_applied else {}
        return {**grid, "corrected_layers": len(self.corrected), "skipped_layers": self.skipped,
                "largest_shift": round(self.largest_shift, 6), **done}


def rebuild_blocker(model: Any) -> str | None:
    """Why `model` cannot be copied from its config (None: it can). A SavedModel's signature layer holds
    a TensorFlow function, not a config: such a model is quantised as it is, uncorrected and unfolded."""
    try:
        model.get_config()
    except NotImplementedError as exc:
        return f"the model cannot be rebuilt from its config ({reason_of(exc)[:120]})"
    return None


def rounded(kernel: np.ndarray, axis: int, qmax: int) -> np.ndarray:
    """`kernel` rounded onto a symmetric per-channel grid of +-qmax steps along `axis` (scale max|w|/qmax)."""
    others = tuple(i for i in range(kernel.ndim) if i != axis % kernel.ndim)
    scale = np.abs(kernel).max(axis=others, keepdims=True) / qmax
    scale = np.where(scale == 0, 1.0, scale)  # an all-zero channel stays zero
    return (np.round(kernel / scale) * scale).astype(kernel.dtype)


def palettized(folded: np.ndarray, nbits: int) -> np.ndarray:
    """`folded` (a weight in Core ML's layout) as coremltools' per-tensor k-means palette of 2**nbits
    entries rebuilds it: the same clustering call, on the same fp16 values in the same order, so the
    simulated rounding is the converter's."""
    # coremltools' palettiser calls this very function per tensor; reusing it (private, so pinned by
    # the coremltools range in pyproject.toml) is what makes the simulation exact, k-means++ seed included.
    from coremltools.models.neural_network.quantization_utils import _get_kmeans_lookup_table_and_weight

    values = folded.astype(np.float16)
    lut, indices = _get_kmeans_lookup_table_and_weight(nbits, values)
    return np.asarray(lut, np.float64).reshape(-1)[np.asarray(indices).reshape(-1)].reshape(folded.shape)


def bias_corrected(model: Any, calibration: np.ndarray, qmax: int = 127, palette_bits: int | None = None,
                   min_elements: int = 0) -> tuple[Any, Correction]:
    """A copy of `model` whose biases (or the following BatchNorm's moving means) absorb the mean
    shift that rounding each Conv2D / DepthwiseConv2D / Dense kernel onto the quantisation grid
    causes: int8 per channel (+-qmax), or with `palette_bits` Core ML's per-tensor k-means palette.
    Kernels of fewer than `min_elements` weights, which the converter leaves as they are, keep their bias.
    `model` itself is left as it was. `calibration`: uint8|float32 [N,H,W,3] RGB 0..255.
    """

    correction = Correction(None if palette_bits else qmax, palette_bits, min_elements)
    blocker = rebuild_blocker(model)
    if blocker:
        correction.not_applied = blocker
        return model, correction
    copy = rebuilt(model, model.get_config())
    images = np.asarray(calibration[:CORRECTION_IMAGES], dtype=np.float32)
    _correct_graph(copy, [images], correction)
    return copy, correction


def rebuilt(model: Any, config: dict) -> Any:
    """A new model of `model`'s kind built from `config` (its get_config(), perhaps edited), with its
    weights: a Sequential's config is rebuilt as a Sequential (keras.Model.from_config reads it as
    if functional: "Unrecognized keyword arguments passed to Model: {'layers': ...}")."""
    import keras

    kind = keras.Sequential if isinstance(model, keras.Sequential) else keras.Model
    copy = kind.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


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


def _rounding_error(layer: Any, kernel: np.ndarray, correction: Correction, fold: np.ndarray | None) -> np.ndarray:
    """W_q - W for `layer`'s Keras kernel on the correction's grid; `fold`: the per-output-channel
    factor a following BatchNorm multiplies the kernel by when a converter folds it (None: no BatchNorm)."""
    import keras

    if isinstance(layer, keras.layers.DepthwiseConv2D):  # (h, w, in, multiplier): output channel in*multiplier
        h, w, channels, mult = kernel.shape
        outputs_last = kernel.reshape(h, w, 1, channels * mult)
    else:  # Conv2D (h, w, in, out), Dense (in, out)
        outputs_last = kernel
    if correction.palette_bits is None:
        return (rounded(outputs_last, -1, correction.qmax) - outputs_last).reshape(kernel.shape)
    to_core = (1, 0) if kernel.ndim == 2 else (3, 2, 0, 1)  # Core ML keeps (out, in) and (out, in, h, w)
    scale = np.ones(outputs_last.shape[-1]) if fold is None else fold
    folded = (outputs_last * scale).transpose(to_core)
    error = (palettized(folded, correction.palette_bits) - folded).transpose(np.argsort(to_core)) / scale
    return error.reshape(kernel.shape).astype(kernel.dtype)


def _fold_factor(follower: Any) -> np.ndarray | None:
    """gamma / sqrt(variance + epsilon) of `follower`, the layer alone reading a kernel's output, when
    it is a BatchNorm: the factor converters fold into the kernel."""
    import keras

    if not isinstance(follower, keras.layers.BatchNormalization):
        return None
    gamma = np.asarray(follower.gamma) if follower.scale else 1.0
    return gamma / np.sqrt(np.asarray(follower.moving_variance) + follower.epsilon)


def _mean_shift(layer: Any, x: np.ndarray, correction: Correction, follower: Any) -> np.ndarray:
    """Per-output-channel mean of (W_q - W) applied to the layer's real inputs `x`; `follower`: the
    layer alone reading its output (None when several do)."""
    import keras
    import tensorflow as tf

    kernel = np.asarray(layer.get_weights()[0])
    fold = _fold_factor(follower) if correction.palette_bits else None  # int8 grids commute with folding
    delta = _rounding_error(layer, kernel, correction, fold)
    if isinstance(layer, keras.layers.Dense):
        return x.reshape(-1, x.shape[-1]).mean(0) @ delta
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        out = tf.nn.depthwise_conv2d(x, delta, [1, *layer.strides, 1], layer.padding.upper(), dilations=layer.dilation_rate)
    else:
        out = tf.nn.conv2d(x, delta, [1, *layer.strides, 1], layer.padding.upper(), dilations=layer.dilation_rate)
    return np.asarray(tf.reduce_mean(out, axis=[0, 1, 2]))


def _correct_layer(layer: Any, x: np.ndarray, correction: Correction) -> None:
    import keras

    if getattr(layer, "groups", 1) != 1:
        correction.skipped.append(layer.name)
        return
    if layer.get_weights()[0].size < correction.min_elements:
        return  # stored as it is: nothing was rounded
    follower = only_consumer(layer)
    shift = _mean_shift(layer, x, correction, follower)
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


def only_consumer(layer: Any) -> Any:
    """The one layer reading `layer`'s output, or None when several do (then a BatchNorm cannot be
    told apart from a residual branch)."""
    nodes = getattr(layer, "_outbound_nodes", [])
    return nodes[0].operation if len(nodes) == 1 else None
