"""The standard TFLite metadata Android's ImageClassifier reads: parsed back from exported files."""

from __future__ import annotations

import zipfile

import pytest
from pocketml.export.tflite_metadata import (
    METADATA_NAME,
    ClassifierInfo,
    populate,
    read_associated_files,
    read_metadata,
)

from pocketml.fsutil import sha256_file
from tests.export.export_helpers import real_tflite_export


@pytest.fixture(scope="module")
def export_dir(real_model_dir, photos_dir, tmp_path_factory):
    return real_tflite_export(real_model_dir, photos_dir, tmp_path_factory.getbasetemp())


def metadata_entries(data: bytes) -> list[str]:
    from mediapipe.tasks.metadata import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    return [model.Metadata(i).Name().decode() for i in range(model.MetadataLength())]


@pytest.mark.parametrize("precision", ["fp32", "int8-uint8io"])
def test_metadata_describes_image_input_and_labelled_output(export_dir, real_model_dir, precision):
    from mediapipe.tasks.metadata import metadata_schema_py_generated as meta

    data = (export_dir / "tflite" / f"model-{precision}.tflite").read_bytes()
    metadata = read_metadata(data)
    assert metadata is not None
    description = metadata.description.decode()
    assert "(x - 127) / 128" in description and precision in description
    assert metadata.version.decode() == sha256_file(real_model_dir / "model.keras")[:12]
    assert metadata.minParserVersion.decode() == "1.0.0"

    (subgraph,) = metadata.subgraphMetadata
    (image,) = subgraph.inputTensorMetadata
    assert image.content.contentPropertiesType == meta.ContentProperties.ImageProperties
    assert image.content.contentProperties.colorSpace == meta.ColorSpaceType.RGB
    (norm,) = image.processUnits
    assert norm.optionsType == meta.ProcessUnitOptions.NormalizationOptions
    assert list(norm.options.mean) == [0.0] and list(norm.options.std) == [1.0]
    assert list(image.stats.min) == [0.0] and list(image.stats.max) == [255.0]

    (probability,) = subgraph.outputTensorMetadata
    (labels,) = probability.associatedFiles
    assert labels.name.decode() == "labels.txt"
    assert labels.type == meta.AssociatedFileType.TENSOR_AXIS_LABELS


def test_labels_file_is_zipped_onto_the_model(export_dir):
    path = export_dir / "tflite" / "model-fp32.tflite"
    assert zipfile.is_zipfile(path)
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["labels.txt"]
        assert archive.read("labels.txt").decode().split() == ["cat", "coffee"]


def test_populating_again_replaces_the_metadata(export_dir):
    data = (export_dir / "tflite" / "model-int8.tflite").read_bytes()
    again = populate(data, ClassifierInfo("renamed", "second pass", "v2", ("a", "b"), False))
    assert metadata_entries(again).count(METADATA_NAME) == 1
    assert read_metadata(again).name.decode() == "renamed"
    assert read_associated_files(again)["labels.txt"] == b"a\nb\n"
