"""The format registry. A new format is one module in export/ plus one line in FORMAT_MODULES.

Everything about a format is declared in its module and read from there by everyone else (the
exporter, validate, bench, package, predict):
  FORMAT: str                       # "tflite"
  SUFFIX: str                       # ".tflite" (a directory suffix such as ".mlpackage" is fine)
  PRECISIONS: tuple[str, ...]       # supported precisions, default export order
  NEEDS_CALIBRATION: frozenset[str] # precisions that need calibration images
  PLATFORMS: tuple[str, ...]        # the app platforms its files go to: each a bundle folder and a
                                    # recommendation group (several formats may feed one platform)
  RUNS_ON: str                      # what a device needs to run its files ("iOS 27+, macOS 27+")
  MIN_OS: int                       # the platform OS version RUNS_ON starts at (0: any); within a
                                    # platform, formats of different MIN_OS get a recommendation each
  TITLE: str                        # its section heading in a bundle README
  LABELS_BESIDE: bool               # the bundle ships labels.txt beside the file (the file cannot carry them)
  RUNTIME: str                      # how bench runs it, for the report
  THREADED: bool                    # its runtime takes a CPU thread count (bench times each count)
  RUNTIME_MODULE: str               # the runtime's import (the memory probe imports it before measuring)
  SNIPPETS: dict[str, str]          # platform -> usage code for its bundle README; {file}, {class_name},
                                    # {height}, {width}, {stem} (a platform a device stands for adds its own)
  convert(model, spec, precision, out_path, calibration, **options) -> list[str] | Converted
  load(path, threads=None) -> Predictor   # see export/runtime.py
  read_labels(path) -> tuple[str, ...] | None  # the labels the file carries (None: it has none)
  latency_unavailable() -> str | None     # why this machine cannot time the format (None: it can)
  bundle_extras(folder, files, model) -> list[str]  # files a bundle derives from the shipped `files` (ONNX:
                                          # ORT Mobile copies) and the README lines about them
  unavailable() -> str | None             # why this machine cannot convert to it at all, e.g. an optional
                                          # extra not installed (None: it can); checked before any export
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
    "coreai": "pocketml.export.coreai",
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


# A platform's name in the headings of its bundle and of bench's recommendation (else its name).
PLATFORM_TITLES = {"ios": "iOS", "android": "Android", "onnx": "ONNX Runtime"}


def platform_formats(extra: dict[str, tuple[str, ...]] | None = None) -> dict[str, tuple[str, ...]]:
    """platform -> the formats whose files it takes, in registry order: what the formats declare
    (PLATFORMS), plus `extra` — platforms something else stands for, such as a device that runs
    some formats (a browser: {"web": ("onnx", "tflite")}); a platform in both takes the union."""
    groups: dict[str, tuple[str, ...]] = {}
    for name in FORMAT_MODULES:
        for platform in format_module(name).PLATFORMS:
            groups[platform] = (*groups.get(platform, ()), name)
    for platform, formats in (extra or {}).items():
        check_formats(list(formats))
        groups[platform] = (*groups.get(platform, ()), *(f for f in formats if f not in groups.get(platform, ())))
    return groups


def platform_title(platform: str) -> str:
    return PLATFORM_TITLES.get(platform, platform)


def platform_min_os(platform: str, model) -> int:
    """The oldest OS version an app of `platform` supports, as the export recorded it in the manifest's
    model record (`--min-ios` for iOS); 0 where the export records none."""
    target = str(model.minimum_deployment_target or "")
    prefix = platform_title(platform)
    return int(target[len(prefix):]) if target.startswith(prefix) and target[len(prefix):].isdigit() else 0


def os_floor(fmt: str, platform: str) -> int:
    """The OS version a format's files need on `platform`: its MIN_OS on a platform it declares, 0 on
    one a device stands for (a browser does not care which iOS a file was made for)."""
    module = format_module(fmt)
    return module.MIN_OS if platform in module.PLATFORMS else 0


def os_tiers(formats: tuple[str, ...], platform: str) -> dict[int, tuple[str, ...]]:
    """OS floor -> the formats that start there, oldest first: the files that compete for one
    recommendation (iOS: Core ML from iOS 16 on, Core AI from iOS 27 on)."""
    tiers: dict[int, tuple[str, ...]] = {}
    for name in formats:
        floor = os_floor(name, platform)
        tiers[floor] = (*tiers.get(floor, ()), name)
    return dict(sorted(tiers.items()))
