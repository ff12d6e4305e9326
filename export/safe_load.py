"""Loading a model file without running code stored in it.

A model file is data. Keras' safe_mode refuses Python lambdas in `.keras` and (since Keras 3.x)
legacy `.h5` files; pocketml reads the stored config itself first anyway, so every kind of file gets
the same rule and a message that names the layer: only stock Keras layers load, plus custom classes
and functions the caller hands over explicitly (`custom_objects`, from Python). A TensorFlow
SavedModel holds no Python, but its graph can call stateful kernels (file reads and writes, Python
callbacks); its graph is read as a protobuf and refused unless it only computes.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pocketml.errors import PocketMLError, one_line, reason_of

KERAS_CONFIG = "config.json"  # the model config inside a .keras zip
H5_SUFFIXES = (".h5", ".hdf5")
SAVED_MODEL_FILE = "saved_model.pb"
SERVING_SIGNATURES = ("serving_default", "serve")  # tf.saved_model.save's default, then Keras export()'s
STOCK_MODEL_CLASSES = frozenset({"Functional", "Sequential", "Model"})
APPLICATIONS_MODULE = "keras.src.applications."  # where Keras defines the layers of its own application models
# Stateful kernels a serving graph may use: its own variables, function calls, control flow and
# random numbers. Any other stateful kernel (ReadFile, WriteFile, PyFunc, PrintV2 to a file, ...)
# is refused: converting must not read or write anything the model names.
ALLOWED_STATEFUL_OPS = frozenset(
    {
        "VarHandleOp", "ReadVariableOp", "StatefulPartitionedCall", "PartitionedCall",
        "If", "While", "Case", "RandomUniform", "RandomStandardNormal", "TruncatedNormal",
    }
)  # fmt: skip
FUNCTION_ATTRS = ("f", "then_branch", "else_branch", "body", "cond", "branches")
TRUST_HINT = "rebuild it from stock Keras layers, or pass the class/function in custom_objects from Python"


def keras_config(path: Path) -> dict:
    """The model config stored in a .keras zip or a legacy .h5 file (parsed JSON; nothing is built)."""
    try:
        if path.suffix.lower() in H5_SUFFIXES:
            import h5py

            with h5py.File(path, "r") as handle:
                text = handle.attrs.get("model_config")
            if text is None:
                raise PocketMLError(
                    f"{path} holds weights but no model (no model_config); give a whole model saved with model.save()"
                )
        else:
            with zipfile.ZipFile(path) as archive:
                text = archive.read(KERAS_CONFIG)
        return json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PocketMLError(f"{path} is not a readable Keras model ({reason_of(exc)})") from exc


def layer_configs(entry: Any) -> Iterator[dict]:
    """`entry` (a serialised layer or model) and every layer inside it, nested models and wrapped
    layers included. Initializers, dtype policies and the like are not layers: Keras resolves them
    only among its own classes or the caller's custom_objects."""
    if not isinstance(entry, dict) or "class_name" not in entry:
        return
    yield entry
    config = entry.get("config")
    children = config if isinstance(config, list) else (config or {}).get("layers") or []  # old Sequential: a list
    for child in children:
        yield from layer_configs(child)
    if isinstance(config, dict) and isinstance(config.get("layer"), dict):  # TimeDistributed, Bidirectional
        yield from layer_configs(config["layer"])


def is_stock(entry: dict) -> bool:
    """A class Keras itself defines (a layer or a model container), not one a user wrote."""
    import keras

    module, name = entry.get("module"), entry["class_name"]
    # Keras writes registered_name None (layers) or the class name (models) for its own classes and
    # "package>Name" for registered user classes; tf.keras 2 files have neither key.
    if entry.get("registered_name") not in (None, name) or (module is not None and not str(module).startswith("keras")):
        return False
    return name in STOCK_MODEL_CLASSES or isinstance(getattr(keras.layers, name, None), type) or application_layer(module, name)


def application_layer(module: str | None, name: str) -> bool:
    """A layer class of a keras.applications model, defined in the installed Keras's own module for it
    (ConvNeXt's LayerScale, InceptionResNetV2's CustomScaleLayer): Keras code, not code from the file."""
    import importlib

    import keras

    if not (module or "").startswith(APPLICATIONS_MODULE) or not module[len(APPLICATIONS_MODULE):].isidentifier():
        return False
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return False
    return isinstance(found, type) and issubclass(found, keras.layers.Layer)


def lambda_function_name(entry: dict) -> str | None:
    """The registered function a Lambda layer calls, or None when its Python code is in the file."""
    config = entry.get("config") or {}
    function = config.get("function")
    if isinstance(function, str):  # tf.keras 2: function_type "function", name in "function"
        return function if config.get("function_type", "function") == "function" else None
    if isinstance(function, dict) and function.get("class_name") != "__lambda__":
        return function.get("config") if isinstance(function.get("config"), str) else None
    return None  # a "__lambda__" dict or tf.keras 2's [code, defaults, closure]: marshalled bytecode


def check_keras_config(config: dict, path: Path, custom_objects: dict | None) -> None:
    """A one-line error for the first layer that would need code from outside Keras."""
    trusted = set(custom_objects or ())
    for entry in layer_configs(config):
        name = entry["class_name"]
        layer = entry["config"].get("name", "?") if isinstance(entry.get("config"), dict) else "?"
        if name == "Lambda":
            function = lambda_function_name(entry)
            if function is None:
                raise PocketMLError(
                    f"{path.name} has a Lambda layer {layer!r} whose Python code is stored in the file; "
                    f"pocketml does not run code from model files: {TRUST_HINT}"
                )
            if function not in trusted:
                raise PocketMLError(f"{path.name}: Lambda layer {layer!r} calls {function!r}; {TRUST_HINT}")
        elif name in {"TFOpLambda", "SlicingOpLambda"}:
            raise PocketMLError(
                f"{path.name}: layer {layer!r} is a raw TensorFlow op from tf.keras 2 ({name}), which Keras 3 "
                "cannot load; save the model as a SavedModel (model.export(DIR)) and export that"
            )
        elif not is_stock(entry) and name not in trusted and entry.get("registered_name") not in trusted:
            raise PocketMLError(f"{path.name}: {name!r} ({layer!r}) is a custom class, not a stock Keras one; {TRUST_HINT}")


def load_keras_file(path: Path, custom_objects: dict | None = None) -> Any:
    """The Keras model in a .keras or .h5 file, after its config passed check_keras_config."""
    import keras

    check_keras_config(keras_config(path), path, custom_objects)
    try:
        # safe_mode stays on whatever the caller trusts: it refuses marshalled Python lambdas.
        return keras.saving.load_model(path, custom_objects=custom_objects, compile=False, safe_mode=True)
    except Exception as exc:  # keras raises ValueError/TypeError/OSError for bad or unsafe files
        raise PocketMLError(f"cannot load {path} as a Keras model ({one_line(str(exc), type(exc).__name__)})") from exc


def saved_model_proto(directory: Path):
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString((directory / SAVED_MODEL_FILE).read_bytes())
    except DecodeError as exc:
        raise PocketMLError(f"{directory / SAVED_MODEL_FILE} is not a SavedModel protobuf ({exc})") from exc
    serving = [g for g in proto.meta_graphs if "serve" in g.meta_info_def.tags] or list(proto.meta_graphs)
    if not serving:
        raise PocketMLError(f"{directory} has no graph; give a SavedModel written by tf.saved_model.save or model.export")
    return serving[0]


def serving_signature(meta_graph, directory: Path) -> str:
    """The signature key to convert: serving_default, else serve, else the only one there is."""
    keys = [k for k in meta_graph.signature_def if not k.startswith("__")]
    for key in SERVING_SIGNATURES:
        if key in keys:
            return key
    if len(keys) == 1:
        return keys[0]
    raise PocketMLError(
        f"SavedModel {directory} has signatures {keys or 'none'}; accepted: one serving signature "
        f"({' or '.join(SERVING_SIGNATURES)}), e.g. from model.export(DIR)"
    )


def _called_functions(node) -> Iterator[str]:
    for key in FUNCTION_ATTRS:
        if key in node.attr:
            value = node.attr[key]
            if value.HasField("func"):
                yield value.func.name
            yield from (f.name for f in value.list.func)


def graph_ops(meta_graph, signature_key: str) -> set[str]:
    """Op types the loader and the serving signature can run: the main-graph nodes behind the
    signature's outputs and the init op, and every function those or the object graph call
    (the checkpoint save/restore functions, which tf.saved_model.load does not run, are left out)."""
    nodes = {n.name: n for n in meta_graph.graph_def.node}
    functions = {f.signature.name: f for f in meta_graph.graph_def.library.function}
    roots = [t.name for key in (signature_key, "__saved_model_init_op") if key in meta_graph.signature_def
             for t in meta_graph.signature_def[key].outputs.values()]  # fmt: skip
    ops: set[str] = set()
    pending_nodes = [r.split(":")[0].lstrip("^") for r in roots]
    pending_functions = list(meta_graph.object_graph_def.concrete_functions)
    seen: set[str] = set()
    while pending_nodes or pending_functions:
        if pending_nodes:
            name = pending_nodes.pop()
            if name in seen or name not in nodes:
                continue
            seen.add(name)
            node = nodes[name]
            ops.add(node.op)
            pending_nodes += [i.split(":")[0].lstrip("^") for i in node.input]
            pending_functions += list(_called_functions(node))
            continue
        name = pending_functions.pop()
        if f"fn:{name}" in seen or name not in functions:
            continue
        seen.add(f"fn:{name}")
        for node in functions[name].node_def:
            ops.add(node.op)
            pending_functions += list(_called_functions(node))
    return ops


def check_saved_model_ops(meta_graph, signature_key: str, directory: Path) -> None:
    from tensorflow.python.framework import op_def_registry

    unsafe = sorted(
        op
        for op in graph_ops(meta_graph, signature_key)
        if op not in ALLOWED_STATEFUL_OPS and (op_def_registry.get(op) is None or op_def_registry.get(op).is_stateful)
    )
    if unsafe:
        raise PocketMLError(
            f"SavedModel {directory} runs ops that touch files, Python or other state ({', '.join(unsafe[:6])}); "
            "accepted: graphs that only compute (variables, math, control flow)"
        )


def load_saved_model(directory: Path) -> tuple[Any, Any, str]:
    """(loaded object, its serving signature function, the signature's key), after the op check."""
    import tensorflow as tf

    meta_graph = saved_model_proto(directory)
    key = serving_signature(meta_graph, directory)
    check_saved_model_ops(meta_graph, key, directory)
    try:
        loaded = tf.saved_model.load(str(directory))
    except Exception as exc:  # TF raises many types for unreadable or incompatible SavedModels
        raise PocketMLError(f"cannot load SavedModel {directory} ({one_line(str(exc), type(exc).__name__)})") from exc
    return loaded, loaded.signatures[key], key
