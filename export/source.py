"""The model being exported: a `.keras` file (or a directory holding model.keras + spec.json),
loaded with safe_mode=True and checked to be an image classifier, plus the ModelSpec that
describes it. Every problem is one PocketMLError line, raised before any file is written.
"""

from __future__ import annotations

import dataclasses
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pocketml.errors import PocketMLError
from pocketml.fsutil import sha256_file
from pocketml.spec import MODEL_FILE, SPEC_FILE, ModelSpec, Normalization, read_labels

ACCEPTED = "a .keras file or a directory holding model.keras (+ spec.json)"


@dataclass
class Source:
    model: Any  # keras.Model with a fixed [1?,H,W,3] input and a probability output
    spec: ModelSpec
    path: Path  # the .keras file
    notes: list[str] = field(default_factory=list)


def keras_file(path: str | Path) -> Path:
    """The .keras file `path` names (itself, or model.keras inside a directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.exists():
        raise PocketMLError(f"model {path} does not exist; give {ACCEPTED}")
    # A .keras file is a zip archive holding config.json; .h5 / SavedModel dirs are not accepted.
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise PocketMLError(f"{path} is not a Keras v3 .keras file; give {ACCEPTED}")
    return path


def parse_image_size(text: str | None) -> tuple[int, int] | None:
    """(height, width) from "N" or "HxW"; None passes through."""
    if text is None:
        return None
    parts = str(text).lower().split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = (size[0], size[0])
    if len(size) != 2 or min(size) < 8:
        raise PocketMLError(f"--image-size {text!r} is not accepted; give N or HxW with N, H, W >= 8 pixels")
    return size  # type: ignore[return-value]


def load_keras(path: Path) -> Any:
    import keras

    try:
        # safe_mode refuses Lambda layers and other deserialised code: a model file is data.
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # keras raises ValueError/TypeError/OSError for bad or unsafe files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PocketMLError(f"cannot load {path} as a Keras model ({reason[:200]}); give {ACCEPTED}") from exc


def input_size(model: Any, image_size: tuple[int, int] | None) -> tuple[int, int]:
    """The (height, width) the model takes; `image_size` fills a dynamic input."""
    if len(model.inputs) != 1:
        raise PocketMLError(f"model has {len(model.inputs)} inputs; accepted: one image tensor [N,H,W,3]")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise PocketMLError(f"model input shape {shape} is not an RGB image tensor; accepted: [N,H,W,3]")
    fixed = shape[1:3]
    if None in fixed:
        if image_size is None:
            raise PocketMLError(f"model input {shape} has a dynamic size; pass --image-size N or HxW")
        return image_size
    fixed = (int(fixed[0]), int(fixed[1]))
    if image_size is not None and tuple(image_size) != fixed:
        raise PocketMLError(f"--image-size {image_size} differs from the model's fixed input {fixed}; drop it")
    return fixed


def output_activation(model: Any) -> str:
    """Name of the activation that produces the model's output ('linear' when none)."""
    layer = model.layers[-1]
    while hasattr(layer, "layers") and layer.layers:  # a nested Sequential/Functional head
        layer = layer.layers[-1]
    if type(layer).__name__ == "Softmax":
        return "softmax"
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "linear") if activation is not None else "linear"


def classifier_model(model: Any, size: tuple[int, int]) -> tuple[Any, list[str]]:
    """`model` with a fixed input of `size` and a softmax output, plus notes on what was changed."""
    import keras

    notes = []
    out_shape = tuple(model.outputs[0].shape) if len(model.outputs) == 1 else ()
    if len(out_shape) != 2 or (out_shape[1] or 0) < 2:
        raise PocketMLError(
            f"model output {out_shape or len(model.outputs)} is not a probability vector; "
            "accepted: one [N, classes] output with classes >= 2 ending in softmax"
        )
    activation = output_activation(model)
    fixed_input = tuple(model.inputs[0].shape[1:3]) == tuple(size)
    if activation == "softmax" and fixed_input:
        return model, notes
    if activation not in ("softmax", "linear"):
        raise PocketMLError(
            f"model output ends in {activation!r}, not a probability vector over classes; accepted: softmax or logits"
        )
    inputs = keras.Input((*size, 3), name="image")
    outputs = model(inputs)
    if activation != "softmax":
        # Apps and the parity checks read probabilities; logits would make every tolerance meaningless.
        outputs = keras.layers.Softmax(name="probabilities")(outputs)
        notes.append("model output had no softmax (logits); a Softmax layer was added so outputs are probabilities")
    if not fixed_input:
        notes.append(f"dynamic input fixed at {size[0]}x{size[1]} pixels")
    return keras.Model(inputs, outputs, name=model.name), notes


def rescaling_normalization(model: Any) -> Normalization:
    """The in-model normalisation read from a leading Rescaling layer (identity when none)."""
    for layer in model.layers[:4]:
        if type(layer).__name__ == "Rescaling":
            scale, offset = float(layer.scale), float(layer.offset)
            # x * scale + offset == (x - mean) / std
            return Normalization("rescaling", (-offset / scale,) * 3, (1 / scale,) * 3)
    return Normalization.identity()


def model_spec(path: Path, model: Any, size: tuple[int, int], labels_file: Path | None) -> ModelSpec:
    spec_path = path.parent / SPEC_FILE
    labels = read_labels(labels_file) if labels_file is not None else None
    if spec_path.is_file():
        spec = ModelSpec.load(spec_path)
        spec = dataclasses.replace(spec, labels=labels or spec.labels, image_size=size)
    elif labels is not None:
        spec = ModelSpec(labels=labels, image_size=size, normalization=rescaling_normalization(model))
    else:
        raise PocketMLError(f"no {SPEC_FILE} beside {path} and no --labels FILE; give one label per line with --labels")
    return dataclasses.replace(spec, source_sha256=sha256_file(path))


def load_model_checked(path: str | Path, image_size: tuple[int, int] | None = None) -> tuple[Any, Path, list[str]]:
    """(classifier model, .keras path, notes): the file loaded safely and shaped for export.

    A dynamic input takes `image_size`, else the image_size of a spec.json beside the model.
    """
    file = keras_file(path)
    model = load_keras(file)
    if image_size is None and _is_dynamic(model) and (file.parent / SPEC_FILE).is_file():
        image_size = ModelSpec.load(file.parent / SPEC_FILE).image_size
    size = input_size(model, image_size)
    model, notes = classifier_model(model, size)
    return model, file, notes


def _is_dynamic(model: Any) -> bool:
    return len(model.inputs) == 1 and None in tuple(model.inputs[0].shape[1:3])


def load_source(
    path: str | Path, labels: str | Path | None = None, image_size: str | tuple[int, int] | None = None
) -> Source:
    """The checked model and its spec; `labels` replaces spec.json's labels, `image_size` fills a dynamic input."""
    size = parse_image_size(image_size) if isinstance(image_size, str) else image_size
    labels_file = Path(labels) if labels is not None else None
    if labels_file is not None and not labels_file.is_file():
        raise PocketMLError(f"labels file {labels_file} does not exist; give a text file with one label per line")
    model, file, notes = load_model_checked(path, size)
    spec = model_spec(file, model, tuple(model.inputs[0].shape[1:3]), labels_file)
    classes = int(model.outputs[0].shape[-1])
    if spec.num_classes != classes:
        raise PocketMLError(
            f"{spec.num_classes} labels but the model outputs {classes} classes; give exactly {classes} labels"
        )
    return Source(model=model, spec=spec, path=file, notes=notes)
