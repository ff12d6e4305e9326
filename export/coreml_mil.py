"""The one adapter over coremltools internals: a saved `.mlpackage` -> a plain, numpy-only program.

coremltools has no public API that reads an mlprogram back into ops with their constant values, but
its own tools (coremltools/models/utils.py) rebuild one from the spec with the milproto frontend's
`load(model_spec, specification_version, file_weights_dir)`. Everything that touches those internals
lives here, so a coremltools upgrade that moves them breaks exactly one module and its test
(tests/export/test_coreml_reference_ops.py::test_adapter_*), never the executor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pocketml.errors import PocketMLError

SUPPORTED_COREMLTOOLS = "9."  # the major version whose internals this adapter was written against

# Core ML's ImageFeatureType.ColorSpace enum values (Model.proto / FeatureTypes.proto).
COLOR_SPACES = {10: "GRAYSCALE", 20: "RGB", 30: "BGR", 40: "GRAYSCALE_FLOAT16"}


@dataclass(frozen=True)
class MilOp:
    """One operation; every input is the name of a value (or a tuple of names for list inputs)."""

    op_type: str
    name: str
    inputs: dict[str, str | tuple[str, ...]]
    outputs: tuple[str, ...]
    output_dtypes: tuple[str, ...]  # MIL dtype names ("fp16", "fp32", "int32", "string", ...)
    value: Any = None  # the constant, for op_type == "const" only


@dataclass(frozen=True)
class ImageInput:
    name: str
    color_space: str  # "RGB" | "BGR" | "GRAYSCALE" | "GRAYSCALE_FLOAT16"
    height: int
    width: int


@dataclass
class MilProgram:
    """The `main` function of an mlprogram as plain data: ops in execution order, numpy constants."""

    path: Path
    specification_version: int
    inputs: dict[str, tuple[tuple[int, ...], str]]  # name -> (shape, MIL dtype)
    outputs: tuple[str, ...]
    ops: list[MilOp]
    image_inputs: dict[str, ImageInput] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)  # user-defined metadata

    @property
    def op_types(self) -> set[str]:
        return {op.op_type for op in self.ops}


def _internals():
    """The coremltools pieces this adapter relies on, or a loud error naming what moved."""
    try:
        import coremltools as ct
        from coremltools.converters.mil.frontend.milproto import load as milproto_load
        from coremltools.converters.mil.mil import types
    except ImportError as exc:  # a moved module is a pocketml bug to fix, said plainly
        raise PocketMLError(
            f"cannot import coremltools' MIL loader ({exc}); the Core ML reference executor supports "
            f"coremltools {SUPPORTED_COREMLTOOLS}x"
        ) from exc
    needed = ((milproto_load, "load"), (types, "builtin_to_string"), (types, "is_list"), (types, "is_dict"))
    for owner, attr in (*needed, (ct.models, "MLModel")):
        if not hasattr(owner, attr):
            raise PocketMLError(
                f"coremltools {ct.__version__} has no {owner.__name__}.{attr}; the Core ML reference "
                f"executor supports coremltools {SUPPORTED_COREMLTOOLS}x"
            )
    return ct, milproto_load, types


def _plain(value: Any) -> Any:
    """A const's value as numpy / str / list (coremltools wraps lists in its own mil_list)."""
    if hasattr(value, "ls"):
        return list(value.ls)
    if isinstance(value, (str, bool, list, tuple)):
        return value
    return np.asarray(value)


def _dtype_name(var, types) -> str:
    if types.is_list(var.sym_type):
        return "list"
    if types.is_dict(var.sym_type):
        return "dict"
    return types.builtin_to_string(var.dtype)


class _Names:
    """Unique value names. The milproto loader can give two vars the same name (the classifier's
    label list and a scalar const were both `const_0`), so values are keyed by var identity.
    """

    def __init__(self):
        self._by_var: dict[int, str] = {}
        self._taken: set[str] = set()

    def __call__(self, var) -> str:
        key = id(var)
        if key not in self._by_var:
            name, n = var.name, 1
            while name in self._taken:
                name, n = f"{var.name}#{n}", n + 1
            self._taken.add(name)
            self._by_var[key] = name
        return self._by_var[key]


def _convert_op(op, types, names: _Names) -> MilOp:
    outputs = tuple(names(o) for o in op.outputs)
    if op.blocks:
        # Control flow (cond / while_loop) has nested blocks the executor does not run.
        return MilOp(op.op_type, op.name, {}, outputs, ())
    inputs: dict[str, str | tuple[str, ...]] = {}
    for key, var in op.inputs.items():
        inputs[key] = tuple(names(v) for v in var) if isinstance(var, (list, tuple)) else names(var)
    value = _plain(op.outputs[0].val) if op.op_type == "const" else None
    return MilOp(
        op_type=op.op_type,
        name=op.name,
        inputs=inputs,
        outputs=outputs,
        output_dtypes=tuple(_dtype_name(o, types) for o in op.outputs),
        value=value,
    )


def _image_inputs(spec) -> dict[str, ImageInput]:
    images = {}
    for feature in spec.description.input:
        if feature.type.WhichOneof("Type") == "imageType":
            image = feature.type.imageType
            space = COLOR_SPACES.get(image.colorSpace, str(image.colorSpace))
            images[feature.name] = ImageInput(feature.name, space, int(image.height), int(image.width))
    return images


def load_program(path: str | Path) -> MilProgram:
    """Read a saved `.mlpackage` (spec + weight blobs) into a MilProgram; no Core ML runtime needed."""
    path = Path(path)
    if not (path / "Manifest.json").is_file():
        raise PocketMLError(f"{path} is not a saved .mlpackage (no Manifest.json); expected a Core ML model package")
    ct, milproto_load, _ = _internals()
    mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
    spec = mlmodel.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        raise PocketMLError(f"{path.name} is a {spec.WhichOneof('Type')} model; the reference executor runs mlprogram only")
    program = milproto_load.load(spec, spec.specificationVersion, mlmodel.weights_dir)
    if "main" not in program.functions:
        raise PocketMLError(f"{path.name} has no 'main' function; found {sorted(program.functions)}")
    return program_from_mil(
        program,
        path=path,
        specification_version=int(spec.specificationVersion),
        image_inputs=_image_inputs(spec),
        metadata=dict(spec.description.metadata.userDefined),
    )


def program_from_mil(program, path: Path, specification_version: int = 0, **description) -> MilProgram:
    """A MilProgram from an in-memory coremltools MIL program (the loader's result, or one built with
    coremltools' MIL builder, which is how the per-op tests exercise the executor without a save).
    """
    _, _, types = _internals()
    main = program.functions["main"]
    names = _Names()
    return MilProgram(
        path=path,
        specification_version=specification_version,
        inputs={names(var): (tuple(int(d) for d in var.shape), _dtype_name(var, types)) for var in main.inputs.values()},
        outputs=tuple(names(var) for var in main.outputs),
        ops=[_convert_op(op, types, names) for op in main.operations],
        **description,
    )


def materialize_constexpr(path: str | Path) -> dict[str, np.ndarray]:
    """coremltools' own decompression of every constexpr op's output, by output name.

    Used only by tests, as the independent reference for the executor's numpy decompression.
    """
    ct, milproto_load, _ = _internals()
    mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
    spec = mlmodel.get_spec()
    main = milproto_load.load(spec, spec.specificationVersion, mlmodel.weights_dir).functions["main"]
    return {
        op.outputs[0].name: np.asarray(op.materialized_val_inference())
        for op in main.operations
        if op.op_type.startswith("constexpr_") and len(op.outputs) == 1
    }
