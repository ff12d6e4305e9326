"""Convert a Keras classifier to Core ML exactly the way export/coreml.py does (image input, RGB,
scale 1, bias 0, classifier ending, fp32/fp16 compute, iOS16/iOS18, int8 / 6-bit kmeans weight
compression), so the reference executor's tests do not depend on the exporter's module.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

PRECISIONS = ("fp32", "fp16", "int8-weights", "palettized-6bit")
TARGETS = ("iOS16", "iOS18")


def convert_keras(
    model,
    labels: Sequence[str],
    out_path: Path,
    precision: str = "fp32",
    target: str = "iOS16",
    base=None,
):
    """Save `model` as an mlprogram `.mlpackage` at `out_path`; returns the coremltools MLModel.

    `base`: an MLModel already converted from `model` at fp16 (compressed variants) or the same
    precision, to skip a second ct.convert.
    """
    if precision not in PRECISIONS or target not in TARGETS:
        raise ValueError(f"precision {precision!r} / target {target!r}; accepted {PRECISIONS} / {TARGETS}")
    mlmodel = base if base is not None else convert_program(model, labels, precision, target)
    mlmodel = compress(mlmodel, precision)
    mlmodel.save(str(out_path))
    return mlmodel


def convert_program(model, labels: Sequence[str], precision: str, target: str):
    """ct.convert with the exporter's arguments: image input, classifier ending, compute precision."""
    import coremltools as ct

    _, height, width, _ = model.input_shape
    # Compressed variants start from the fp16 program, as the exporter's do.
    compute = ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16
    return ct.convert(
        model,
        convert_to="mlprogram",
        inputs=[
            ct.ImageType(
                name="image",
                shape=(1, height, width, 3),
                color_layout=ct.colorlayout.RGB,
                scale=1.0,
                bias=[0, 0, 0],
            )
        ],
        classifier_config=ct.ClassifierConfig(list(labels)),
        compute_precision=compute,
        minimum_deployment_target=getattr(ct.target, target),
    )


def compress(mlmodel, precision: str):
    """int8 linear weight quantisation or 6-bit k-means palettisation; other precisions unchanged."""
    import coremltools.optimize.coreml as cto

    if precision == "int8-weights":
        config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8"))
        return cto.linear_quantize_weights(mlmodel, config=config)
    if precision == "palettized-6bit":
        config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(nbits=6, mode="kmeans"))
        return cto.palettize_weights(mlmodel, config=config)
    return mlmodel


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
    builds them: preprocessing inside the model, global average pooling, Dense + softmax.

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
        from training.efficientnet_lite import build_efficientnet_lite0

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
