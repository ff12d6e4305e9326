"""The input normalisation folded into the first convolution, so an integer file reads pixels exactly.

Every pocketml classifier starts x' = x * s + o (a Rescaling: MobileNet's (x - 127.5) / 127.5,
EfficientNet-Lite's (x - 127) / 128, ImageNet mean/std). Converted as it is, an integer file
computes x * s, rounds the product onto an 8-bit grid (TFLite: 1.5 pixel values a step on both of
quantization_bench's models), adds o and rounds again, so the first conv never sees the pixels the
camera gave. Folded:

    x - z       z = round(-o / s), the pixel the normalisation maps nearest to 0: integers in
                [-z, 255 - z], 256 levels, exact on an 8-bit grid of step 1
    conv(W * s) the scale moves into the kernel, per input channel
    + W . d     d = s * z + o (|d| <= s / 2) moves into the following BatchNorm's mean, or the bias

This is the same function except where the conv pads: the original pads x' with 0, the folded
conv pads x - z with 0, i.e. x' with d - at most half a pixel step, on the padded border only.
Measured (quantization_bench's models, bias-corrected full-integer TFLite, float I/O):
- demo EfficientNet-Lite0 128 px, 125 test glyphs: 2 flips, max |dp| 0.235 -> 1 flip (within
  budget), 0.194; the strict uint8-I/O file too (there d = 0: pixel 127 is exactly 0).
- hot-dog MobileNetV2 a0.35 96 px, 50 val photos: max |dp| 0.117 -> 0.101 (1 flip either way).
The fp32 graph of the folded model differs from Keras by at most 0.0014 in a probability (hot-dog).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pocketml.export.quantization.equalize import bias_corrected, only_consumer, rebuild_blocker, rebuilt


@dataclass
class InputFold:
    """What folding did: the Rescaling and the conv it went into, or why nothing was folded."""

    rescaling: str | None = None
    conv: str | None = None
    zero_pixel: list[float] = field(default_factory=list)  # z per channel: the pixel subtracted
    border_offset: float = 0.0  # max |d|: what the padded border reads in normalised units
    reason: str | None = None  # set when nothing was folded

    def to_dict(self) -> dict:
        if self.reason:
            return {"folded": False, "reason": self.reason}
        return {"folded": True, "rescaling": self.rescaling, "into": self.conv, "zero_pixel": self.zero_pixel,
                "border_offset": round(self.border_offset, 6)}


def integer_ready(model: Any, calibration: np.ndarray, qmax: int = 127) -> tuple[Any, dict]:
    """The Keras model an integer file is converted from: the input normalisation folded (when the
    graph allows), then the kernels bias-corrected for rounding onto +-qmax. `model` is left as it
    was; the dict says what each step did (the manifest's record)."""
    folded, fold = input_folded(model)
    corrected, correction = bias_corrected(folded, calibration, qmax=qmax)
    return corrected, {"input_fold": fold.to_dict(), "bias_correction": correction.to_dict()}


def fold_summary(model: Any) -> str:
    """What integer_ready does to `model`'s input, in words (a ladder rung's settings)."""
    found = _foldable(model)
    if isinstance(found, str):
        return f"normalisation as the model has it ({found})"
    return f"normalisation {found[0].name} folded into {found[1].name}"


def input_folded(model: Any) -> tuple[Any, InputFold]:
    """A copy of `model` with its input Rescaling folded into the first Conv2D (see the module
    docstring), or `model` itself with the reason when its graph does not have that shape."""

    found = _foldable(model)
    why = found if isinstance(found, str) else rebuild_blocker(model)
    if why:
        return model, InputFold(reason=why)
    rescaling, conv, follower = found
    scale, offset = _per_channel(rescaling.scale), _per_channel(rescaling.offset)
    zero = np.clip(np.round(-offset / scale), 0, 255) + 0.0  # + 0.0: no -0.0 in the manifest
    residue = scale * zero + offset  # what x' is where x - z is 0: exactly 0 unless z was rounded

    config = model.get_config()
    layer = _layer_config(config, _chain(model, rescaling))
    # Scalars where they can be: a per-channel multiply by 1 stays in the graph as a broadcast op, which
    # made ONNX Runtime's integer file 3x slower (0.60 ms against 0.21 on the hot-dog model).
    uniform = bool(np.all(zero == zero[0]))
    layer["config"]["scale"] = 1.0
    layer["config"]["offset"] = float(0.0 - zero[0]) if uniform else (0.0 - zero).tolist()
    copy = rebuilt(model, config)

    conv_copy = _counterpart(copy, model, conv)
    follower_copy = _counterpart(copy, model, follower) if follower is not None else None
    kernel, *bias = conv.get_weights()
    kernel = kernel.astype(np.float64)
    shift = np.einsum("hwio,i->o", kernel, residue)  # the conv's response to the constant residue
    folded_kernel = (kernel * scale[None, None, :, None]).astype(np.float32)
    if follower_copy is not None:
        weights = follower_copy.get_weights()
        weights[-2] = (weights[-2] - shift).astype(np.float32)  # BatchNorm subtracts its moving mean
        follower_copy.set_weights(weights)
        conv_copy.set_weights([folded_kernel, *bias])
    else:
        conv_copy.set_weights([folded_kernel, (bias[0] + shift).astype(np.float32)])
    return copy, InputFold(rescaling.name, conv.name, zero.tolist(), float(np.abs(residue).max()))


def _per_channel(value: Any) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, np.float64).reshape(-1), (3,)).copy()


def input_rescaling(model: Any) -> Any | None:
    """The Rescaling that alone reads the model's image input (its normalisation), or None; also when
    it is the first layer of a nested model (Keras' MobileNetV3 and EfficientNetV2 carry their own)."""
    import keras

    if isinstance(model, keras.Sequential):  # its .layers leave out the InputLayer: the first layer reads it
        first = model.layers[0] if model.layers else None
    else:
        inputs = [layer for layer in model.layers if isinstance(layer, keras.layers.InputLayer)]
        first = _reader(inputs[0]) if len(inputs) == 1 else None
    return first if isinstance(first, keras.layers.Rescaling) else None


def _reader(layer: Any) -> Any | None:
    """The one layer reading `layer`'s output, looking through nested models to the first layer
    inside that reads their input; None when several do."""
    import keras

    reader = only_consumer(layer)
    while isinstance(reader, keras.Model):
        inner = [candidate for candidate in reader.layers if isinstance(candidate, keras.layers.InputLayer)]
        reader = only_consumer(inner[0]) if len(inner) == 1 else None
    return reader


def _foldable(model: Any) -> tuple[Any, Any, Any] | str:
    """(Rescaling, the Conv2D its output reaches, the BatchNorm after that conv or None), or why not."""
    import keras

    first = input_rescaling(model)
    if first is None:
        return "the model does not start with a Rescaling"
    scale, offset = _per_channel(first.scale), _per_channel(first.offset)
    if np.any(scale <= 0):
        return f"{first.name} scales by {scale.tolist()}: only positive scales fold"
    if np.any((-offset / scale < -0.5) | (-offset / scale > 255.5)):
        return f"{first.name} maps no pixel 0..255 to 0: the padded border would read a value far from 0"
    conv = _reader(first)
    while isinstance(conv, keras.layers.ZeroPadding2D):
        conv = _reader(conv)  # zero padding of x - z is padding of x' with the residue, as the conv's own is
    if type(conv) is not keras.layers.Conv2D or conv.groups != 1 or conv.data_format != "channels_last":
        return f"{first.name} is not read by one plain Conv2D alone"
    follower = only_consumer(conv)
    if isinstance(follower, keras.layers.BatchNormalization) and follower.center and follower.axis in (-1, 3):
        return first, conv, follower
    if conv.use_bias:
        return first, conv, None
    return f"{conv.name} has neither a bias nor a BatchNorm to take the offset"


def _path(graph: Any, layer: Any) -> list[int] | None:
    """Indices into .layers, nested models included, that lead from `graph` to `layer`."""
    import keras

    for index, candidate in enumerate(graph.layers):
        if candidate is layer:
            return [index]
        if isinstance(candidate, keras.Model):
            inner = _path(candidate, layer)
            if inner is not None:
                return [index, *inner]
    return None


def _walk(graph: Any, path: list[int]) -> list[Any]:
    """The layers met following `path` (indices into .layers) down from `graph`: nested models, then
    the layer at its end."""
    chain = []
    for index in path:
        graph = graph.layers[index]
        chain.append(graph)
    return chain


def _chain(graph: Any, layer: Any) -> list[Any]:
    """The nested models of `graph` that hold `layer`, then `layer` itself."""
    return _walk(graph, _path(graph, layer))


def _layer_config(config: dict, chain: list[Any]) -> dict:
    """The entry of a model's get_config() for the last layer of `chain`, inside the configs of the
    nested models before it (names are unique within one model)."""
    layers = config["layers"]
    for layer in chain:
        entry = next(c for c in layers if c["config"]["name"] == layer.name)
        layers = entry["config"].get("layers", [])
    return entry


def _counterpart(copy: Any, original: Any, layer: Any) -> Any:
    """The layer of `copy` (a from_config clone of `original`, so its layers in the same order) at
    `layer`'s place: names may repeat across nested models, places do not."""
    return _walk(copy, _path(original, layer))[-1]
