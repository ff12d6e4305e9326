"""Standard TFLite metadata, written the way Android's image-classifier APIs read it.

A `.tflite` file carries a `TFLITE_METADATA` entry pointing at a buffer that holds a
ModelMetadata flatbuffer (file identifier "M001"): model name/description/version, the input
image tensor (RGB, NormalizationOptions) and the output tensor whose TENSOR_AXIS_LABELS
associated file names the classes. The associated files themselves are zipped onto the end of
the .tflite (the flatbuffer ignores trailing bytes; the zip reader finds its central directory
at the end). tflite-support's writer cannot be installed beside TF 2.21 and mediapipe's does not
import, so this is built directly with the schema bindings mediapipe ships and `flatbuffers`.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import flatbuffers
import numpy as np

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
TFLITE_IDENTIFIER = b"TFL3"
LABELS_NAME = "labels.txt"
# Everything written here (image properties, normalisation, axis labels) exists since schema 1.0.0.
MIN_PARSER_VERSION = "1.0.0"


@dataclass(frozen=True)
class ClassifierInfo:
    name: str  # model name shown by metadata viewers
    description: str  # what the model does and what happens to the pixels inside it
    version: str  # source model's sha256 prefix: ties the file to the exact .keras it came from
    labels: tuple[str, ...]
    input_uint8: bool  # uint8 input tensor (camera bytes) rather than float32 0..255


def _schema():
    from mediapipe.tasks.metadata import metadata_schema_py_generated as meta

    return meta


def _input_metadata(info: ClassifierInfo):
    meta = _schema()
    tensor = meta.TensorMetadataT()
    tensor.name = "image"
    dtype = "uint8" if info.input_uint8 else "float32"
    tensor.description = f"RGB image as {dtype}, pixel values 0..255; the model normalises internally."
    tensor.content = meta.ContentT()
    tensor.content.contentPropertiesType = meta.ContentProperties.ImageProperties
    tensor.content.contentProperties = meta.ImagePropertiesT()
    tensor.content.contentProperties.colorSpace = meta.ColorSpaceType.RGB
    # Preprocessing lives inside the model, so the app must pass raw pixels: mean 0, std 1.
    norm = meta.ProcessUnitT()
    norm.optionsType = meta.ProcessUnitOptions.NormalizationOptions
    norm.options = meta.NormalizationOptionsT()
    norm.options.mean = [0.0]
    norm.options.std = [1.0]
    tensor.processUnits = [norm]
    tensor.stats = meta.StatsT()
    tensor.stats.max = [255.0]
    tensor.stats.min = [0.0]
    return tensor


def _output_metadata(info: ClassifierInfo):
    meta = _schema()
    tensor = meta.TensorMetadataT()
    tensor.name = "probability"
    tensor.description = f"Probabilities of the {len(info.labels)} classes in {LABELS_NAME} order."
    tensor.content = meta.ContentT()
    tensor.content.contentPropertiesType = meta.ContentProperties.FeatureProperties
    tensor.content.contentProperties = meta.FeaturePropertiesT()
    tensor.stats = meta.StatsT()
    tensor.stats.max = [1.0]
    tensor.stats.min = [0.0]
    labels = meta.AssociatedFileT()
    labels.name = LABELS_NAME
    labels.description = "Class labels, one per line, in output order."
    labels.type = meta.AssociatedFileType.TENSOR_AXIS_LABELS
    tensor.associatedFiles = [labels]
    return tensor


def metadata_bytes(info: ClassifierInfo) -> bytes:
    """The ModelMetadata flatbuffer for an image classifier."""
    meta = _schema()
    model = meta.ModelMetadataT()
    model.name = info.name
    model.description = info.description
    model.version = info.version
    model.author = "pocketml"
    model.minParserVersion = MIN_PARSER_VERSION
    subgraph = meta.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [_input_metadata(info)]
    subgraph.outputTensorMetadata = [_output_metadata(info)]
    model.subgraphMetadata = [subgraph]
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), METADATA_IDENTIFIER)
    return bytes(builder.Output())


def with_metadata(tflite: bytes, metadata: bytes) -> bytes:
    """`tflite` with `metadata` stored as its TFLITE_METADATA buffer (replacing any earlier one)."""
    from mediapipe.tasks.metadata import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(tflite, 0))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata, dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    kept = [m for m in (model.metadata or []) if _text(m.name) != METADATA_NAME]
    model.metadata = [*kept, entry]
    builder = flatbuffers.Builder(len(tflite) + len(metadata) + 1024)
    builder.Finish(model.Pack(builder), TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def with_associated_files(tflite: bytes, files: dict[str, bytes]) -> bytes:
    """`tflite` with `files` zipped onto its end, where Android's metadata extractor looks."""
    stream = io.BytesIO(tflite)
    stream.seek(0, io.SEEK_END)
    with zipfile.ZipFile(stream, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return stream.getvalue()


def populate(tflite: bytes, info: ClassifierInfo) -> bytes:
    """`tflite` with standard classifier metadata and its labels file attached."""
    labels = "".join(f"{label}\n" for label in info.labels).encode("utf-8")
    return with_associated_files(with_metadata(tflite, metadata_bytes(info)), {LABELS_NAME: labels})


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def read_metadata(tflite: bytes):
    """The ModelMetadataT stored in `tflite`, or None when it has no TFLITE_METADATA."""
    from mediapipe.tasks.metadata import schema_py_generated as schema

    meta = _schema()
    model = schema.Model.GetRootAs(tflite, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if _text(entry.Name()) == METADATA_NAME:
            data = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
            if not meta.ModelMetadata.ModelMetadataBufferHasIdentifier(data, 0):
                raise ValueError(f"{METADATA_NAME} buffer lacks the {METADATA_IDENTIFIER!r} identifier")
            return meta.ModelMetadataT.InitFromObj(meta.ModelMetadata.GetRootAs(data, 0))
    return None


def read_associated_files(tflite: bytes) -> dict[str, bytes]:
    """Files zipped onto `tflite` (empty when none)."""
    stream = io.BytesIO(tflite)
    if not zipfile.is_zipfile(stream):
        return {}
    with zipfile.ZipFile(stream) as archive:
        return {name: archive.read(name) for name in archive.namelist()}
