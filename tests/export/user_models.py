"""Image classifiers shaped the ways users write them, all with real ImageNet weights (the packaged
EfficientNet-Lite0) and one head fitted on real photos, so every shape computes the same decisions:
functional with an unnamed input, Sequential, subclassed, a logits head, uint8 input, a dynamic
input size, no preprocessing inside (it expects (x - 127) / 128, given at export), and BGR input.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.models import PHOTO_LABELS

SIZE = 64  # px: small enough for quick conversions, large enough for Lite0's five stride-2 steps
MEAN, STD = 127.0, 128.0  # EfficientNet-Lite0's preprocessing: (x - 127) / 128


@dataclass
class Parts:
    """One backbone and one fitted head that every user-shaped model is assembled from."""

    backbone: Any  # EfficientNet-Lite0 (keras.Model, no top) at SIZE
    kernel: np.ndarray  # [features, 2] softmax-head weights fitted on the training photos
    bias: np.ndarray  # [2]


@functools.cache
def fitted_parts(train_dir: Path) -> Parts:
    import keras
    from pocketml.training.backbones import build_backbone, get_backbone, resolve_weights
    from sklearn.linear_model import LogisticRegression

    from pocketml.dataset import load_images, read_records

    lite = get_backbone("efficientnet_lite0")
    backbone = build_backbone(lite, SIZE, 1.0, resolve_weights(lite, "imagenet"))
    records = [r for r in read_records(train_dir) if r.label in PHOTO_LABELS]
    images = load_images([r.path for r in records], (SIZE, SIZE)).astype(np.float32)
    features = np.asarray(keras.layers.GlobalAveragePooling2D()(backbone.predict((images - MEAN) / STD, verbose=0)))
    labels = np.array([PHOTO_LABELS.index(r.label) for r in records])
    head = LogisticRegression(C=0.5, max_iter=2000).fit(features, labels)
    # Softmax over logits (0, w.x + b) is the logistic model's probability for class 1.
    kernel = np.zeros((features.shape[1], 2), np.float32)
    kernel[:, 1] = head.coef_[0]
    return Parts(backbone, kernel, np.array([0.0, head.intercept_[0]], np.float32))


def _head(parts: Parts, activation: str | None = "softmax"):
    import keras

    dense = keras.layers.Dense(2, activation=activation)
    dense.build((None, parts.kernel.shape[0]))
    dense.set_weights([parts.kernel, parts.bias])
    return dense


def _rescaling():
    import keras

    return keras.layers.Rescaling(1 / STD, offset=-MEAN / STD)


def _pool():
    import keras

    return keras.layers.GlobalAveragePooling2D()


def functional_unnamed(parts: Parts):
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))  # no name: Keras calls it input_layer_N
    return keras.Model(inputs, _head(parts)(_pool()(parts.backbone(_rescaling()(inputs)))))


def sequential(parts: Parts):
    import keras

    return keras.Sequential([keras.Input((SIZE, SIZE, 3)), _rescaling(), parts.backbone, _pool(), _head(parts)])


def subclassed(parts: Parts):
    import keras

    class PhotoClassifier(keras.Model):
        def __init__(self):
            super().__init__()
            self.scale, self.backbone, self.pool, self.head = _rescaling(), parts.backbone, _pool(), _head(parts)

        def call(self, images, training=False):
            return self.head(self.pool(self.backbone(self.scale(images), training=training)))

    model = PhotoClassifier()
    model(np.zeros((1, SIZE, SIZE, 3), np.float32))
    return model


def logits_head(parts: Parts):
    import keras

    inputs = keras.Input((SIZE, SIZE, 3), name="pixels")
    return keras.Model(inputs, _head(parts, activation=None)(_pool()(parts.backbone(_rescaling()(inputs)))))


def uint8_input(parts: Parts):
    import keras

    inputs = keras.Input((SIZE, SIZE, 3), dtype="uint8", name="camera_bytes")
    return keras.Model(inputs, _head(parts)(_pool()(parts.backbone(_rescaling()(inputs)))))


def dynamic_size(parts: Parts):
    """The same network on a [N, None, None, 3] input (the backbone rebuilt from its config)."""
    import keras

    config = parts.backbone.get_config()
    config["layers"][0]["config"]["batch_shape"] = [None, None, None, 3]
    backbone = keras.Model.from_config(config)
    backbone.set_weights(parts.backbone.get_weights())
    inputs = keras.Input((None, None, 3))
    return keras.Model(inputs, _head(parts)(_pool()(backbone(_rescaling()(inputs)))))


def without_preprocessing(parts: Parts):
    """Expects (x - 127) / 128 but does not contain it: exported with --mean 127 --std 128."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    return keras.Model(inputs, _head(parts)(_pool()(parts.backbone(inputs))))


def bgr_input(parts: Parts):
    """Expects normalised BGR (its stem convolution's input channels reversed), nothing inside:
    exported with --mean 127 --std 128 --bgr, it must decide exactly as the RGB models do."""
    import keras

    config = parts.backbone.get_config()
    backbone = keras.Model.from_config(config)
    backbone.set_weights(parts.backbone.get_weights())
    stem = next(layer for layer in backbone.layers if type(layer).__name__ == "Conv2D")
    kernel, *rest = stem.get_weights()
    stem.set_weights([kernel[:, :, ::-1, :].copy(), *rest])
    inputs = keras.Input((SIZE, SIZE, 3))
    return keras.Model(inputs, _head(parts)(_pool()(backbone(inputs))))


def reference_probabilities(model, images: np.ndarray, mean=0.0, std=1.0, bgr=False, logits=False) -> np.ndarray:
    """What the user's own model says about `images` (uint8 RGB) with the preprocessing it expects,
    computed by hand, independently of pocketml's graph."""
    x = (images.astype(np.float32) - np.float32(mean)) / np.float32(std)
    if bgr:
        x = x[..., ::-1]
    if getattr(model, "inputs", None) and str(model.inputs[0].dtype) == "uint8":
        x = images  # camera bytes, as the model was written to take them
    out = np.asarray(model(x, training=False), np.float64)
    if logits:
        out = np.exp(out - out.max(axis=1, keepdims=True))
        out /= out.sum(axis=1, keepdims=True)
    return out


@dataclass(frozen=True)
class Case:
    """One user-shaped model: how it is built and saved, what export is told, what it expects."""

    name: str
    build: Any  # Parts -> keras.Model
    save_as: str  # ".keras", ".h5", "savedmodel" or "object" (handed over from Python)
    export: dict = field(default_factory=dict)  # ExportConfig / load_source arguments
    expects: dict = field(default_factory=dict)  # reference_probabilities arguments
    note: str = ""  # a note export must print

    def source_kwargs(self) -> dict:
        """The same request as load_source arguments."""
        from pocketml.spec import requested_normalization

        kwargs = {"image_size": self.export.get("image_size")}
        kwargs["preprocess"] = requested_normalization(
            self.export.get("preprocess"), self.export.get("mean"), self.export.get("std"), self.export.get("bgr", False)
        )
        return kwargs


CASES = (
    Case("functional-unnamed-input", functional_unnamed, ".keras", note="found inside the model"),
    Case("sequential", sequential, ".keras", note="found inside the model"),
    Case("subclassed-savedmodel", subclassed, "savedmodel", note="cannot see inside a SavedModel"),
    Case("logits", logits_head, ".keras", expects={"logits": True}, note="a Softmax layer was added"),
    Case("uint8-input", uint8_input, ".keras", note="found inside the model"),
    Case("dynamic-size", dynamic_size, ".keras", export={"image_size": "64"}, note="dynamic input fixed at 64x64"),
    Case("legacy-h5", functional_unnamed, ".h5", note="found inside the model"),
    Case("savedmodel-logits", logits_head, "savedmodel", expects={"logits": True}, note="a Softmax layer was added"),
    Case(
        "no-preprocessing+preset", without_preprocessing, ".keras", export={"preprocess": "mobilenet"},
        expects={"mean": 127.5, "std": 127.5}, note="added in front of the model: mobilenet",
    ),
    Case(
        "bgr+mean-std", bgr_input, ".keras", export={"mean": "127", "std": "128", "bgr": True},
        expects={"mean": MEAN, "std": STD, "bgr": True}, note="then RGB->BGR",
    ),
)  # fmt: skip
LIVE_CASES = (Case("subclassed-object", subclassed, "object"), Case("functional-object", functional_unnamed, "object"))


def save_case(case: Case, model, directory: Path) -> Path | Any:
    """Where `model` was saved the way `case` says (the model itself for "object")."""
    directory.mkdir(parents=True, exist_ok=True)
    if case.save_as == "object":
        return model
    if case.save_as == "savedmodel":
        model.export(str(directory / "saved_model"), verbose=False)
        return directory / "saved_model"
    path = directory / f"model{case.save_as}"
    model.save(path)
    return path


def write_labels_file(directory: Path) -> Path:
    path = directory / "labels.txt"
    path.write_text("".join(f"{label}\n" for label in PHOTO_LABELS))
    return path


def photo_test_split(photos_dir: Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """(paths, uint8 images at SIZE, class indices) of the photos' test split."""
    from pocketml.dataset import load_images, read_records, select_split

    records = select_split(read_records(photos_dir), "test")
    paths = [r.path for r in records]
    return paths, load_images(paths, (SIZE, SIZE)), np.array([PHOTO_LABELS.index(r.label) for r in records])


@functools.cache
def exported_case(name: str, photos_dir: Path, base: Path, formats: tuple[str, ...] = ("tflite", "coreml", "onnx"),
                  precisions: tuple[str, ...] = ("fp32",), agreement_images: int = 32):
    """(export dir, saved model path, the model) of CASES[name] exported (fp32 unless `precisions`)
    and validated on the test photos (and agreement on `agreement_images` photos at most, the test
    ones included). Cached: the export tests and the predict tests share one conversion."""
    from pocketml.export.exporter import export_model

    from pocketml.configs.export import ExportConfig

    case = next(c for c in CASES if c.name == name)
    model = case.build(fitted_parts(photos_dir / "train"))
    work = base / f"case-{name}-{'-'.join(precisions)}"
    saved = save_case(case, model, work / "model")
    config = ExportConfig(
        formats=list(formats), precisions=list(precisions), labels=write_labels_file(work), validation_images=photos_dir,
        agreement_images=agreement_images,
        **{k: v for k, v in case.export.items()},
    )  # fmt: skip
    export_model(saved, work / "export", config)
    return work / "export", saved, model
