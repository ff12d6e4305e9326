"""The model being exported, whatever shape a user brings it in, checked and normalised once.

Accepted: a `.keras` file; a legacy `.h5`; a TensorFlow SavedModel directory with a serving
signature; a `pocketml train` directory (model.keras + spec.json); from Python, a live keras.Model.
Functional, Sequential or subclassed; any input name; float or uint8 input; softmax or logits
output; fixed or dynamic spatial size. `load_source` loads it without running code from the file
(export/safe_load.py), refuses what cannot be an image classifier in one line naming what was found
and what is accepted, decides the preprocessing (the model's own, its spec.json's, or the one the
user asked for) and builds the one classifier every converter sees (export/graph.py). Every
problem is raised before any file is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pocketml.export import graph, safe_load

from pocketml.errors import PocketMLError, one_line
from pocketml.fsutil import sha256_file
from pocketml.spec import MODEL_FILE, PRESETS, SPEC_FILE, ModelSpec, Normalization, read_labels

ACCEPTED = (
    "a .keras or .h5 Keras model, a TensorFlow SavedModel directory, "
    "or a directory holding model.keras (+ spec.json) from `pocketml train`"
)
ACCEPTED_INPUT = "one RGB image input [N,H,W,3] (channels last), float or uint8"
ACCEPTED_OUTPUT = "one [N, classes] output (classes >= 2) of softmax probabilities or logits"
PROBE_SEED = 0  # the random pixels that tell probabilities from logits, the same on every run
PREPROCESS_HINT = f"--preprocess {'|'.join(p for p in PRESETS if p != 'none')} or --mean/--std [--bgr]"


@dataclass
class ModelSource:
    model: Any  # the classifier (export/graph.py): `image` float32 [N,H,W,3] RGB 0..255 -> probabilities
    spec: ModelSpec
    path: Path | None  # the model file or directory; None for a keras.Model handed over from Python
    notes: list[str] = field(default_factory=list)
    kind: str = "keras"  # keras | h5 | savedmodel | train-dir | object


@dataclass
class Network:
    """What was loaded, before it is shaped into the classifier."""

    model: Any  # a keras.Model, or the layer calling a SavedModel signature
    kind: str
    path: Path | None
    input_shape: tuple | None  # as declared, [N,H,W,C] with None for dynamic dims; None: not declared
    input_dtype: str
    spec: ModelSpec | None = None  # spec.json beside the model


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


def model_kind(path: Path) -> tuple[str, Path]:
    """(kind, the path to load) for a model path, else a one-line error naming what is accepted."""
    if not path.exists():
        raise PocketMLError(f"model {path} does not exist; give {ACCEPTED}")
    if path.is_dir():
        if (path / safe_load.SAVED_MODEL_FILE).is_file():
            return "savedmodel", path
        if (path / MODEL_FILE).is_file():
            return "train-dir", path / MODEL_FILE
        raise PocketMLError(f"directory {path} holds neither {safe_load.SAVED_MODEL_FILE} nor {MODEL_FILE}; give {ACCEPTED}")
    if path.name == safe_load.SAVED_MODEL_FILE:
        return "savedmodel", path.parent
    if path.suffix.lower() in safe_load.H5_SUFFIXES:
        import h5py

        if h5py.is_hdf5(path):
            return "h5", path
    elif path.suffix == ".keras" and zipfile.is_zipfile(path):
        return "keras", path
    raise PocketMLError(f"{path} is not a Keras .keras/.h5 model or a SavedModel; give {ACCEPTED}")


def declared_inputs(model: Any) -> list:
    """The input tensors a Functional/Sequential model declares; [] for a subclassed or unbuilt one."""
    try:
        return list(model.inputs or [])
    except (AttributeError, ValueError):  # subclassed models have no .inputs; unbuilt Sequentials refuse
        return []


def keras_network(model: Any, kind: str, path: Path | None, spec: ModelSpec | None = None) -> Network:
    inputs = declared_inputs(model)
    if inputs:
        if len(inputs) != 1:
            names = ", ".join(getattr(t, "name", "?") for t in inputs)
            raise PocketMLError(f"model has {len(inputs)} inputs ({names}); accepted: {ACCEPTED_INPUT}")
        return Network(model, kind, path, tuple(inputs[0].shape), str(inputs[0].dtype), spec)
    # A subclassed model: Keras records the shape it was first built with, if any.
    built = (getattr(model, "_build_shapes_dict", None) or {}).get("input_shape")
    return Network(model, kind, path, tuple(built) if built else None, "float32", spec)


def saved_model_network(directory: Path) -> Network:
    loaded, signature, key = safe_load.load_saved_model(directory)
    inputs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    if len(inputs) != 1:
        raise PocketMLError(f"SavedModel signature {key!r} has inputs {sorted(inputs)}; accepted: {ACCEPTED_INPUT}")
    if len(outputs) != 1:
        raise PocketMLError(f"SavedModel signature {key!r} has outputs {sorted(outputs)}; accepted: {ACCEPTED_OUTPUT}")
    (input_name, spec), output_name = next(iter(inputs.items())), next(iter(outputs))
    layer = graph.signature_layer(loaded, signature, input_name, output_name)
    shape = tuple(spec.shape) if spec.shape.rank is not None else ()
    return Network(layer, "savedmodel", directory, shape, spec.dtype.name)


def load_network(model: Any, custom_objects: dict | None = None) -> Network:
    """The model at a path (or a live keras.Model) loaded safely, with what it declares."""
    if not isinstance(model, (str, Path)):
        import keras

        if not isinstance(model, keras.Model):
            raise PocketMLError(f"cannot export a {type(model).__name__}; give a keras.Model or a path to {ACCEPTED}")
        return keras_network(model, "object", None)
    kind, path = model_kind(Path(model))
    if kind == "savedmodel":
        return saved_model_network(path)
    spec = ModelSpec.load(path.parent) if (path.parent / SPEC_FILE).is_file() else None
    return keras_network(safe_load.load_keras_file(path, custom_objects), kind, path, spec)


def input_size(network: Network, image_size: tuple[int, int] | None) -> tuple[int, int]:
    """The (height, width) the classifier takes, after the input refusals; `image_size` fills a
    dynamic or undeclared input, else the size in a spec.json beside the model."""
    default = network.spec.image_size if network.spec else None
    shape, dtype = network.input_shape, network.input_dtype
    if not dtype.startswith(("float", "bfloat", "uint", "int")):
        raise PocketMLError(f"model input is {dtype}, not pixels; accepted: {ACCEPTED_INPUT}")
    if shape is None:
        if (image_size or default) is None:
            raise PocketMLError("the model does not declare its input size (a subclassed model?); pass --image-size N or HxW")
        return tuple(image_size or default)  # type: ignore[return-value]
    if len(shape) != 4:
        raise PocketMLError(f"model input shape {shape} is not an image batch; accepted: {ACCEPTED_INPUT}")
    if shape[-1] != 3 and shape[1] in (1, 3, 4):
        raise PocketMLError(
            f"model input {shape} is channels-first [N,C,H,W]; accepted: {ACCEPTED_INPUT} (re-save it channels-last)"
        )
    if shape[-1] != 3:
        raise PocketMLError(f"model input {shape} has {shape[-1]} channels, not RGB; accepted: {ACCEPTED_INPUT}")
    fixed = shape[1:3]
    if None in fixed:
        if (image_size or default) is None:
            raise PocketMLError(f"model input {shape} has a dynamic size; pass --image-size N or HxW")
        return tuple(image_size or default)  # type: ignore[return-value]
    fixed = (int(fixed[0]), int(fixed[1]))
    if image_size is not None and tuple(image_size) != fixed:
        raise PocketMLError(f"--image-size {image_size} differs from the model's fixed input {fixed}; drop it")
    return fixed


def _per_channel(value: Any) -> np.ndarray | None:
    """`value` (a scalar, or one number per channel) as 3 float64s; None when it is not per channel."""
    values = np.asarray(value, np.float64).reshape(-1)
    return np.broadcast_to(values, 3) if values.size in (1, 3) else None


def affine_of(layer: Any) -> Normalization | None:
    """The per-channel map a Rescaling or (non-inverting) Normalization layer applies, else None."""
    kind = type(layer).__name__
    if kind == "Rescaling":
        scale, offset = _per_channel(layer.scale), _per_channel(layer.offset)
        if scale is None or offset is None or not scale.all():
            return None
        # x * scale + offset == (x - mean) / std; 0.0 - keeps a zero offset from printing as -0
        mean, std = 0.0 - offset / scale, 1 / scale
    elif kind == "Normalization" and not getattr(layer, "invert", False) and hasattr(layer, "mean"):
        mean, variance = _per_channel(layer.mean), _per_channel(layer.variance)
        if mean is None or variance is None:
            return None
        std = np.maximum(np.sqrt(variance), 1e-7)  # as Keras' Normalization divides
    else:
        return None
    return Normalization("rescaling", tuple(float(m) for m in mean), tuple(float(s) for s in std))  # type: ignore[arg-type]


def leading_layers(model: Any):
    """The layers from the input on, descending into a nested model that comes first (a backbone
    from keras.applications carries its Rescaling inside)."""
    import keras

    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        if isinstance(layer, keras.Model):
            yield from leading_layers(layer)
            return
        yield layer


def leading_normalization(model: Any) -> Normalization | None:
    """The preprocessing the consecutive Rescaling/Normalization layers at the model's input apply
    (named after a preset when it equals one), or None when the model starts with anything else."""
    combined = None
    for layer in leading_layers(model):
        step = affine_of(layer)
        if step is None:
            break
        combined = step if combined is None else combined.then(step)
    return combined.named() if combined is not None else None


def chosen_normalization(network: Network, requested: Normalization | None) -> tuple[Normalization, list[str]]:
    """The preprocessing the classifier applies or records, and what the user should be told about it."""
    detected = leading_normalization(network.model) if network.kind != "savedmodel" and hasattr(network.model, "layers") else None
    inside = network.spec.normalization if network.spec else detected
    if requested is not None and not requested.is_identity:
        added = dataclasses.replace(requested, added_at_export=True)
        notes = [f"preprocessing added in front of the model: {added.describe()}"]
        if inside is not None and not inside.is_identity:
            notes.append(f"the model already normalises its input ({inside.describe()}); both are applied")
        return added, notes
    if inside is not None:
        said = [] if network.spec else [f"preprocessing found inside the model: {inside.describe()}"]
        return inside, said
    if network.input_dtype.startswith(("uint", "int")):
        return Normalization.identity(), [f"{network.input_dtype} input: the model takes raw pixel values 0..255"]
    if requested is not None:  # --preprocess none: the user says the model takes raw pixels
        return Normalization.identity(), []
    where = "pocketml cannot see inside a SavedModel" if network.kind == "savedmodel" else "no Rescaling/Normalization layer at the model's input"
    return Normalization.identity(), [
        f"{where}: assuming it takes raw RGB pixels 0..255; if it expects normalised pixels pass {PREPROCESS_HINT}"
    ]


def single_output(output: Any) -> Any:
    """The one output tensor of a network call, else a one-line error."""
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        if len(output) != 1:
            raise PocketMLError(f"model has {len(output)} outputs; accepted: {ACCEPTED_OUTPUT}")
        output = output[0]
    shape = tuple(output.shape)
    if len(shape) != 2:
        raise PocketMLError(f"model output shape {shape} is not [N, classes]; accepted: {ACCEPTED_OUTPUT}")
    if (shape[1] or 0) < 2:
        raise PocketMLError(
            f"model output {shape} is not a probability vector over classes (one score); accepted: {ACCEPTED_OUTPUT}"
        )
    return output


def final_activation(model: Any) -> str | None:
    """The activation of a Functional/Sequential model's last layer (None when unknown)."""
    if not declared_inputs(model) or not getattr(model, "layers", None):
        return None
    layer = model.layers[-1]
    while getattr(layer, "layers", None):  # a nested Sequential/Functional head
        layer = layer.layers[-1]
    if type(layer).__name__ == "Softmax":
        return "softmax"
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None) if activation is not None else None


def needs_softmax(raw: Any, network: Network, size: tuple[int, int]) -> bool:
    """True for logits, False for probabilities, a one-line error for anything else.

    Decided on the outputs for random pixels (rows of probabilities sum to 1), so it works for
    subclassed models and SavedModels too; a Keras model's last activation refines the message.
    """
    activation = final_activation(network.model)
    if activation not in (None, "softmax", "linear"):
        raise PocketMLError(f"model output ends in {activation!r}; accepted: {ACCEPTED_OUTPUT}")
    probe = np.random.default_rng(PROBE_SEED).uniform(0, 255, (2, *size, 3)).astype(np.float32)
    try:
        out = np.asarray(raw(probe, training=False), dtype=np.float64)
    except Exception as exc:  # the user's model failing on an image batch is their model's problem
        raise PocketMLError(f"the model fails on a [2,{size[0]},{size[1]},3] image batch ({one_line(str(exc), type(exc).__name__)})") from exc
    if np.all(out >= -1e-6) and np.allclose(out.sum(axis=1), 1.0, atol=1e-3):
        return False
    if np.all((out >= 0) & (out <= 1)):
        raise PocketMLError(
            "model outputs scores in 0..1 that do not sum to 1 (independent sigmoids?); " f"accepted: {ACCEPTED_OUTPUT}"
        )
    return True


def classifier_of(network: Network, size: tuple[int, int], norm: Normalization) -> tuple[Any, list[str]]:
    """The graph.py classifier around `network` (the network itself when it already is one), and
    notes on what was changed."""
    notes = []
    model = network.model
    if network.input_dtype.startswith(("uint", "int")) and declared_inputs(model):
        model = graph.float_input(model, size)
    added = norm if norm.added_at_export else None
    try:
        image, output = graph.network_output(model, size, added)
    except Exception as exc:  # shape mismatches of a subclassed model surface here
        raise PocketMLError(f"the model cannot take a [N,{size[0]},{size[1]},3] image batch ({one_line(str(exc), type(exc).__name__)})") from exc
    output = single_output(output)
    raw = graph.classifier(image, output, add_softmax=False)
    softmax = needs_softmax(raw, network, size)
    if softmax:
        # Apps and the parity checks read probabilities; logits would make every tolerance meaningless.
        notes.append("model output had no softmax (logits); a Softmax layer was added so outputs are probabilities")
    dynamic = bool(network.input_shape) and None in network.input_shape[1:3]
    if dynamic:
        notes.append(f"dynamic input fixed at {size[0]}x{size[1]} pixels")
    if model is network.model and declared_inputs(model) and not (softmax or dynamic or added):
        # Already the classifier (a fixed float RGB input, probabilities out): used as it is, so its
        # layers stay where callers look for them; the converters still meet it only through graph.traced.
        return model, notes
    return (graph.classifier(image, output, add_softmax=True) if softmax else raw), notes


def source_hash(path: Path | None) -> str | None:
    """sha256 of a model file; of its files' names and hashes for a SavedModel directory."""
    if path is None:
        return None
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def model_spec(network: Network, size: tuple[int, int], norm: Normalization, labels_file: Path | None) -> ModelSpec:
    labels = read_labels(labels_file) if labels_file is not None else None
    if network.spec is not None:
        spec = dataclasses.replace(network.spec, labels=labels or network.spec.labels, image_size=size, normalization=norm)
    elif labels is not None:
        spec = ModelSpec(labels=labels, image_size=size, normalization=norm)
    else:
        where = f"beside {network.path}" if network.path else "for a model object"
        raise PocketMLError(f"no {SPEC_FILE} {where} and no labels; give one label per line with --labels FILE")
    return dataclasses.replace(spec, source_sha256=source_hash(network.path))


@dataclass
class Classifier:
    model: Any  # the graph.py classifier
    network: Network  # what was loaded
    normalization: Normalization  # inside the model, or added in front of it (added_at_export)
    notes: list[str]

    @property
    def size(self) -> tuple[int, int]:
        return tuple(int(x) for x in self.model.inputs[0].shape[1:3])  # type: ignore[return-value]


def load_classifier(
    model: str | Path | Any,
    image_size: str | tuple[int, int] | None = None,
    preprocess: Normalization | None = None,
    custom_objects: dict | None = None,
) -> Classifier:
    """The model loaded safely, refused or shaped into the classifier every converter sees.

    `image_size` fills a dynamic input; `preprocess` is what the model expects but lacks (None: what
    the model or its spec.json says, else raw pixels); `custom_objects` are classes/functions the
    caller trusts to build a Keras model with.
    """
    size = parse_image_size(image_size) if isinstance(image_size, str) else image_size
    network = load_network(model, custom_objects)
    size = input_size(network, tuple(size) if size else None)  # type: ignore[arg-type]
    norm, notes = chosen_normalization(network, preprocess)
    classifier, changes = classifier_of(network, size, norm)
    return Classifier(classifier, network, norm, [*notes, *changes])


def load_source(
    model: str | Path | Any,
    labels: str | Path | None = None,
    image_size: str | tuple[int, int] | None = None,
    preprocess: Normalization | None = None,
    custom_objects: dict | None = None,
) -> ModelSource:
    """The checked classifier (see load_classifier) and its spec; `labels` replaces spec.json's labels."""
    labels_file = Path(labels) if labels is not None else None
    if labels_file is not None and not labels_file.is_file():
        raise PocketMLError(f"labels file {labels_file} does not exist; give a text file with one label per line")
    loaded = load_classifier(model, image_size, preprocess, custom_objects)
    spec = model_spec(loaded.network, loaded.size, loaded.normalization, labels_file)
    classes = int(loaded.model.outputs[0].shape[-1])
    if spec.num_classes != classes:
        raise PocketMLError(
            f"{spec.num_classes} labels but the model outputs {classes} classes; give exactly {classes} labels"
        )
    return ModelSource(loaded.model, spec, loaded.network.path, loaded.notes, loaded.network.kind)
