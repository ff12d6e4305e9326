"""The format registry. A new format is one module in export/ plus one line in FORMAT_MODULES.

Everything about a format is declared in its module and read from there by everyone else (the
exporter, validate, bench, package, predict):
  FORMAT: str                       # "tflite"
  SUFFIX: str                       # ".tflite" (a directory suffix such as ".mlpackage" is fine)
  PRECISIONS: tuple[str, ...]       # supported precisions, default export order
  NEEDS_CALIBRATION: frozenset[str] # precisions that need calibration images
  PLATFORM: str                     # the platform it is recommended for; also its bundle folder
  TITLE: str                        # the bundle README's heading
  LABELS_BESIDE: bool               # the bundle ships labels.txt beside the file (the file cannot carry them)
  RUNTIME: str                      # how bench runs it, for the report
  THREADED: bool                    # its runtime takes a CPU thread count (bench times each count)
  RUNTIME_MODULE: str               # the runtime's import (the memory probe imports it before measuring)
  SNIPPET: str                      # usage code for the bundle README; {file}, {class_name}, {height}, {width}
  convert(model, spec, precision, out_path, calibration, **options) -> list[str] | Converted
  load(path, threads=None) -> Predictor   # see export/runtime.py
  read_labels(path) -> tuple[str, ...] | None  # the labels the file carries (None: it has none)
  latency_unavailable() -> str | None     # why this machine cannot time the format (None: it can)
  read_precision(path) -> str | None      # the precision the file records (None: it records none)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from pocketml.errors import PocketMLError

FORMAT_MODULES = {
    "tflite": "pocketml.export.tflite",
    "coreml": "pocketml.export.coreml",
    "onnx": "pocketml.export.onnx",
}


@dataclass
class Converted:
    """What a format's convert() reports besides the file: notes for the user and facts for the manifest."""

    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)


def format_names() -> list[str]:
    return list(FORMAT_MODULES)


def format_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(FORMAT_MODULES[name])
    except KeyError:
        raise PocketMLError(f"unknown format {name!r}; accepted: {', '.join(FORMAT_MODULES)}") from None


def check_formats(names: list[str]) -> list[str]:
    """`names` when each is a registered format (checked before anything runs), else a one-line error."""
    unknown = [n for n in names if n not in FORMAT_MODULES]
    if unknown:
        raise PocketMLError(f"unknown format(s) {', '.join(unknown)}; accepted: {', '.join(FORMAT_MODULES)}")
    return list(names)


def format_of_path(path: str | Path) -> str:
    """Format name from a file's name (a file a user brought to bench or predict)."""
    for name in FORMAT_MODULES:
        if str(path).rstrip("/").endswith(format_module(name).SUFFIX):
            return name
    suffixes = ", ".join(format_module(n).SUFFIX for n in FORMAT_MODULES)
    raise PocketMLError(f"cannot tell the format of {path}; accepted suffixes: {suffixes}")


def format_for_platform(platform: str) -> str | None:
    return next((n for n in FORMAT_MODULES if platform == format_module(n).PLATFORM), None)


def platforms() -> list[str]:
    return [format_module(n).PLATFORM for n in FORMAT_MODULES]
