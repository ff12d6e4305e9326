"""The format registry. A new format is one module in export/ plus one line here.

Every format module provides:
  FORMAT: str                       # "tflite"
  SUFFIX: str                       # ".tflite" (a directory suffix such as ".mlpackage" is fine)
  PRECISIONS: tuple[str, ...]       # supported precisions, default export order
  NEEDS_CALIBRATION: frozenset[str] # precisions that need calibration images
  convert(model, spec, precision, out_path, calibration) -> list[str]   # notes for the user
  load(path) -> Predictor
  read_labels(path) -> tuple[str, ...] | None  # the labels the file carries (None: it has none)
"""

from __future__ import annotations

import importlib
from types import ModuleType

from pocketml.errors import PocketMLError

FORMAT_MODULES = {
    "tflite": "export.tflite",
    "coreml": "export.coreml",
    "onnx": "export.onnx",
}


def format_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(FORMAT_MODULES[name])
    except KeyError:
        raise PocketMLError(f"unknown format {name!r}; accepted: {', '.join(FORMAT_MODULES)}") from None


def format_of_path(path: str) -> str:
    """Format name from an artifact's file name (`pocketml predict` on a file a user brought)."""
    for name in FORMAT_MODULES:
        if str(path).rstrip("/").endswith(format_module(name).SUFFIX):
            return name
    suffixes = ", ".join(format_module(n).SUFFIX for n in FORMAT_MODULES)
    raise PocketMLError(f"cannot tell the format of {path}; accepted suffixes: {suffixes}")
