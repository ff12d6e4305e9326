"""An export directory for the bench tests: real converters on the real-weights EfficientNet-Lite0
96 px model, judged on the held-out photos.

Besides genuine fp32/fp16 files it holds three broken entries a bench must survive: an artifact
whose outputs are the Keras model's with the classes swapped (exports fine, fails validation), a
file that is not a model (fails to load) and an entry whose export crashed (failed in the manifest).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pocketml.artifact import FAILED, Artifact
from pocketml.fsutil import sha256_file, tree_bytes


def swapped_classes(model):
    """A copy of `model` whose final Dense has its two output columns swapped: every decision flips."""
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    dense = clone.layers[-1]
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel[:, ::-1], bias[::-1]])
    return clone


def exported(export_dir: Path, fmt: str, precision: str, relpath: str, model, spec, convert_as: str = "") -> Artifact:
    from pocketml.export.registry import format_module

    path = export_dir / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    format_module(fmt).convert(model, spec, convert_as or precision, path, None)
    return Artifact(fmt, precision, relpath, sha256=sha256_file(path), bytes=tree_bytes(path))


@pytest.fixture(scope="session")
def tflite_export_dir(tmp_path_factory, real_model_dir: Path, photos_dir: Path) -> Path:
    """The quick export: `export_model`'s TFLite fp32 and fp16 files of the real-weights model, judged
    on the test photos."""
    from pocketml.export.exporter import export_model

    from pocketml.configs.export import ExportConfig

    export_dir = tmp_path_factory.mktemp("tflite_export")
    config = ExportConfig(formats=["tflite"], precisions=["fp32", "fp16"], calibration=photos_dir)
    export_model(real_model_dir, export_dir, config)
    return export_dir


@pytest.fixture(scope="session")
def bench_export_dir(tmp_path_factory, real_model_dir: Path, photos_dir: Path) -> Path:
    return build_export_dir(tmp_path_factory.mktemp("export"), real_model_dir, photos_dir)


def build_export_dir(export_dir: Path, model_dir: Path, photos_dir: Path) -> Path:
    """`export_model`'s tflite/onnx fp32+fp16 files and a Core ML fp16 package, plus the three broken
    entries (see module doc), every entry judged by `validate` as the export judges."""
    from pocketml.export.exporter import export_model, export_variant
    from pocketml.export.model_source import load_source
    from pocketml.export.registry import format_module
    from pocketml.export.validate import validate

    from pocketml.configs.export import ExportConfig

    config = ExportConfig(formats=["tflite", "onnx"], precisions=["fp32", "fp16"], calibration=photos_dir)
    manifest = export_model(model_dir, export_dir, config)
    source = load_source(model_dir)
    # One Core ML file (conversion is slow): measured through the reference executor off macOS.
    manifest.artifacts.append(export_variant(source, format_module("coreml"), "fp16", export_dir, None, config))
    # Stands in for a broken quantised export: the converter ran, the decisions are all wrong.
    swapped = swapped_classes(source.model)
    manifest.artifacts.append(
        exported(export_dir, "tflite", "int8", "tflite/model-int8.tflite", swapped, source.spec, "fp32")
    )
    garbage = export_dir / "onnx" / "model-int8-dynamic.onnx"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    manifest.artifacts.append(Artifact("onnx", "int8-dynamic", "onnx/model-int8-dynamic.onnx", bytes=4096))
    manifest.artifacts.append(Artifact("onnx", "int8", "onnx/model-int8.onnx", status=FAILED, reason="calibration crashed"))
    manifest.save(export_dir)
    validate(export_dir)
    return export_dir
