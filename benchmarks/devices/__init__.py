"""Devices: where an exported file runs (the host, an emulated ARM phone core, a browser, ...).

Declared once, like a format: one module per device kind, found through DEVICE_MODULES. Bench, the
recommendation, the CLI (`pocketml bench EXPORT --device KIND[:VARIANT]`, `pocketml device setup|status
KIND`) and the pipeline (`[bench] devices = [...]`) address every device through this module only.

A device module declares:
    KIND: str                      # "arm64"
    VARIANTS: tuple[str, ...]      # ("cortex-a76", "neoverse-n1"); the first-class choices of `KIND:VARIANT`
    DEFAULT_VARIANT: str
    FORMATS: tuple[str, ...]       # the formats it runs ("tflite", "onnx")
    PLATFORMS: tuple[str, ...]     # the recommendation groups it stands for ("android", "onnx")
    def status(variant: str) -> DeviceStatus
    def setup(variant: str) -> None            # idempotent, resumable; `pocketml device setup KIND`
    def run(files: list[Path], formats: list[str], images: np.ndarray | list[np.ndarray], variant: str, *,
            cost: bool) -> list[DeviceRun]
        # images: uint8 [N, H, W, 3] RGB for every file, or a list with one such array per file; one
        # DeviceRun per file, in order. All files go in one call, because starting a device (an emulator,
        # a browser) is the expensive part.
The verdict on a device is bench's (export's Judge on DeviceRun.outputs), never the device's own.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from pocketml import paths
from pocketml.errors import PocketMLError

DEVICE_MODULES = {
    "arm64": "pocketml.benchmarks.devices.arm64",
    "web": "pocketml.benchmarks.devices.web",
}


@dataclass
class DeviceStatus:
    ready: bool
    missing: list[str] = field(default_factory=list)  # one line each: what is missing and how to get it
    detail: dict = field(default_factory=dict)  # what is there (versions, paths), for `pocketml device status`


@dataclass
class DeviceRun:
    """One file on one device."""

    outputs: np.ndarray | None  # float32 [N, classes] probabilities on the images given, in order
    cost: dict = field(default_factory=dict)  # {"instructions": .., "simd": .., "dot": ..} or {"p50_ms": .., ...}
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # one line: why the file could not run there


def arrays_per_file(images: np.ndarray | list[np.ndarray], files: int) -> list[np.ndarray]:
    """A run's `images` as one array per file (one array given: the same for every file)."""
    arrays = list(images) if isinstance(images, list) else [images] * files
    if len(arrays) != files:
        raise PocketMLError(f"{len(arrays)} image arrays for {files} files; give one array, or one per file")
    return arrays


def per_array(run, files: list[Path], formats: list[str], images: list[np.ndarray], **kwargs) -> list[DeviceRun]:
    """A device `run` that takes one image array for all its files, given one array per file: one call per
    distinct array (files sharing an array run together), the results back in the files' order."""
    images = arrays_per_file(images, len(files))
    groups: dict[int, list[int]] = {}
    for index, array in enumerate(images):
        groups.setdefault(id(array), []).append(index)
    results: list[DeviceRun | None] = [None] * len(files)
    for indices in groups.values():
        done = run([files[i] for i in indices], [formats[i] for i in indices], images[indices[0]], **kwargs)
        for index, result in zip(indices, done, strict=True):
            results[index] = result
    return [r for r in results if r is not None]


def parse_device(spec: str) -> tuple[str, str]:
    """"arm64:neoverse-n1" -> ("arm64", "neoverse-n1"); "web" -> ("web", its DEFAULT_VARIANT)."""
    kind, _, variant = spec.strip().partition(":")
    module = device_module(kind)
    variant = variant or module.DEFAULT_VARIANT
    if variant not in module.VARIANTS:
        raise PocketMLError(f"device {kind!r} has no variant {variant!r}; known: {', '.join(module.VARIANTS)}")
    return kind, variant


def device_module(kind: str) -> ModuleType:
    if kind not in DEVICE_MODULES:
        raise PocketMLError(f"unknown device {kind!r}; known devices: {', '.join(DEVICE_MODULES)}")
    try:
        return importlib.import_module(DEVICE_MODULES[kind])
    except ModuleNotFoundError as exc:
        if exc.name != DEVICE_MODULES[kind]:
            raise
        raise PocketMLError(f"device {kind!r} is not part of this pocketml installation "
                            f"({DEVICE_MODULES[kind]} is missing)") from None


def device_label(kind: str, variant: str) -> str:
    """The one spelling of a device in tables, records and file names: "arm64:cortex-a76"."""
    return f"{kind}:{variant}"


def cache_dir(kind: str) -> Path:
    """Where `pocketml device setup KIND` keeps what it prepared: $POCKETML_CACHE/KIND or ~/.cache/pocketml/KIND."""
    return paths.cache_root() / kind
