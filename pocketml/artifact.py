"""Artifact and the export manifest: the contract between export, validate, bench and apps.

`EXPORT_DIR/manifest.json`:
  {"model": {spec..., "source": path, "source_sha256": ...},
   "artifacts": [{"format", "precision", "path" (relative to EXPORT_DIR), "sha256", "bytes",
                  "convert_seconds", "status", "reason", "notes", "parity": {...}, "recommended"}]}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pocketml.errors import PocketMLError
from pocketml.fsutil import atomic_write_json

MANIFEST_FILE = "manifest.json"

FORMATS = ("tflite", "coreml", "onnx")
# Every precision name a format may produce. Each format module declares the subset it supports.
PRECISIONS = (
    "fp32",
    "fp16",
    "int8-dynamic",  # weights int8, activations quantised at run time (TFLite dynamic range, ORT dynamic)
    "int8",  # full integer with a calibration set; float input/output
    "int8-uint8io",  # full integer, uint8 input and output tensors (TFLite)
    "int8-weights",  # weights int8, compute in float (Core ML linear weight quantisation)
    "palettized-6bit",  # 6-bit lookup-table weights (Core ML palettisation)
)

# Artifact.status values
EXPORTED = "exported"
FAILED = "failed"  # the converter crashed; reason says why


@dataclass
class Parity:
    """How an artifact's outputs compare with the Keras original on the same images."""

    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    top1_agreement: float | None = None
    accuracy: float | None = None
    reference_accuracy: float | None = None  # the Keras model's accuracy on the same images
    images: int = 0
    status: str = "skipped"  # passed | failed | skipped
    reason: str | None = None


@dataclass
class Artifact:
    format: str
    precision: str
    path: str  # relative to the export directory
    status: str = EXPORTED
    reason: str | None = None
    sha256: str | None = None
    bytes: int | None = None
    convert_seconds: float | None = None
    notes: list[str] = field(default_factory=list)
    parity: Parity = field(default_factory=Parity)
    recommended: list[str] = field(default_factory=list)  # platforms this artifact is recommended for

    @property
    def name(self) -> str:
        return f"{self.format}-{self.precision}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Artifact:
        data = dict(data)
        data["parity"] = Parity(**(data.get("parity") or {}))
        return cls(**data)


@dataclass
class ExportManifest:
    model: dict
    artifacts: list[Artifact] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"model": self.model, "artifacts": [a.to_dict() for a in self.artifacts]}

    def save(self, export_dir: str | Path) -> Path:
        return atomic_write_json(Path(export_dir) / MANIFEST_FILE, self.to_dict())

    @classmethod
    def load(cls, export_dir: str | Path) -> ExportManifest:
        path = Path(export_dir) / MANIFEST_FILE
        if not path.is_file():
            raise PocketMLError(f"{export_dir} has no {MANIFEST_FILE}; pass a directory written by `pocketml export`")
        try:
            data = json.loads(path.read_text())
            return cls(model=data["model"], artifacts=[Artifact.from_dict(a) for a in data["artifacts"]])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise PocketMLError(f"{path} is not a pocketml export manifest ({exc!r})") from exc

    def find(self, fmt: str, precision: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.format == fmt and a.precision == precision), None)
