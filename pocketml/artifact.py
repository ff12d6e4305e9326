"""Artifact, its Parity verdict and the export manifest: the contract between export, bench, package and apps.

`EXPORT_DIR/manifest.json` (written by the export stage only):
  {"model": {spec..., "source": path, "source_sha256": ...},
   "planned": files the export set out to write (more than listed: unfinished), "inputs": digest,
   "images": {"calibration": ImageSet.to_dict() | null, "evaluation": ImageSet.to_dict() | null,
              "agreement": ImageSet.to_dict() | null (other images that did not calibrate: agreement only)},
   "artifacts": [{"format", "precision", "path" (relative to EXPORT_DIR), "sha256", "bytes",
                  "convert_seconds", "status", "reason", "notes", "details", "parity": {...}}]}

`BENCH_DIR/recommendations.json` (written by the bench stage only): one Recommendation per platform.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from pocketml.errors import PocketMLError
from pocketml.fsutil import atomic_write_json, sha256_file
from pocketml.spec import ModelSpec, Normalization

MANIFEST_FILE = "manifest.json"
RECOMMENDATIONS_FILE = "recommendations.json"

# Every precision name a format may produce. Each format module declares the subset it supports.
PRECISIONS = (
    "fp32",
    "fp16",
    "int8-dynamic",  # weights int8, activations quantised at run time (TFLite dynamic range, ORT dynamic)
    "int8",  # full integer with a calibration set; float input/output
    "int8-uint8io",  # full integer, uint8 input and output tensors (TFLite)
    "int8-weights",  # weights int8, compute in float (Core ML linear weight quantisation)
    "palettized-6bit",  # 6-bit lookup-table weights (Core ML palettisation)
    "compressed",  # Core ML weights compressed by the search: the first rung within budget and <= 30 % of fp32
)

# The verdict vocabulary, defined here only: an Artifact's status says whether its file was written,
# its Parity's status what the judge made of it (export/judge.py); bench rows reuse the same words.
EXPORTED = "exported"  # Artifact.status: the file was written
FAILED = "failed"  # Artifact.status: the converter crashed. Parity.status: the images show the file outside its budget
PASSED = "passed"  # Parity.status: the images show the file within its budget
TOO_FEW = "too few images"  # Parity.status: the 95 % interval straddles the budget; images_needed would decide it
SKIPPED = "skipped"  # Parity.status: not judged (no images, no runtime here); reason says why
VERDICTS = (PASSED, FAILED, TOO_FEW, SKIPPED)


def accuracy_drop_points(accuracy: float | None, reference_accuracy: float | None) -> float | None:
    """Percentage points of accuracy lost against the reference; the one definition of a drop.

    Rounded: 0.96 - 0.95 is 1.0000000000000009 points in floating point, not over a 1-point budget.
    """
    if accuracy is None or reference_accuracy is None:
        return None
    return round(100 * (reference_accuracy - accuracy), 9)


def agreement_interval(agreeing: float, total: float, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of an agreement rate: honest at 0 or 1 flips, unlike p ± z·se."""
    if total <= 0:
        return (0.0, 1.0)
    p = min(max(agreeing / total, 0.0), 1.0)
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


def images_to_decide(rate: float, line: float, most: int = 10_000_000) -> int | None:
    """How many images would make the interval of `rate` (if it held) clear `line` on one side: the
    smallest n whose interval lies wholly above (rate > line) or below it. None when rate is the line."""
    if rate == line:
        return None

    def decided(n: int) -> bool:
        low, high = agreement_interval(rate * n, n)
        return low >= line if rate > line else high < line

    high = 1
    while not decided(high):
        if high >= most:
            return None
        high *= 2
    low = high // 2
    while high - low > 1:  # decided() turns true once and stays true as n grows
        middle = (low + high) // 2
        low, high = (low, middle) if decided(middle) else (middle, high)
    return high


@dataclass
class Parity:
    """How an artifact's outputs compare with the Keras original on the evaluation images: the
    figures and the verdict against its precision's tolerance, computed once by the export stage."""

    max_abs_diff: float | None = None  # largest |p_file - p_keras| over every image and class
    mean_abs_diff: float | None = None
    p99_abs_diff: float | None = None  # 99th percentile over images of each image's largest |dp|
    top1_agreement: float | None = None  # over every judged image, ambiguous flips included
    flips: int | None = None  # images whose top-1 class differs from Keras' (k of `images`)
    ambiguous_flips: int | None = None  # flips on images Keras itself decides by less than the precision may move
    agreement_low: float | None = None  # 95 % interval (Wilson) of the agreement the budget counts:
    agreement_high: float | None = None  # ambiguous flips left out
    flipped: list[dict] = field(default_factory=list)  # each flip: image, Keras' margin (top-1 - top-2), ambiguous
    accuracy: float | None = None  # on the labelled held-out images only
    reference_accuracy: float | None = None  # the Keras model's accuracy on the same images
    held_out_images: int = 0  # the held-out split's images (the first of `images`): accuracy is measured there only
    held_out_flips: int | None = None  # flips among them; the rest of `flips` are on the other images
    images: int = 0  # images agreement and |dp| are measured on: held out and every other non-calibration image
    status: str = SKIPPED  # one of VERDICTS
    reason: str | None = None
    images_needed: int | None = None  # too few images: about how many would decide, if the rates held

    @property
    def accuracy_drop_points(self) -> float | None:
        return accuracy_drop_points(self.accuracy, self.reference_accuracy)

    @classmethod
    def from_dict(cls, data: dict | None) -> Parity:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


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
    details: dict = field(default_factory=dict)  # format-specific facts (e.g. a quantisation search's ladder)
    parity: Parity = field(default_factory=Parity)

    @property
    def name(self) -> str:
        return f"{self.format}-{self.precision}"

    @property
    def integer_only(self) -> bool | None:
        """Every op runs in integers (what an NPU / DSP / Edge TPU needs); None when not quantised."""
        return self.details.get("integer_only")

    @property
    def activation_bits(self) -> int | None:
        """16 for a file computing with 16-bit activations (16x8): integer, yet no NPU / DSP / Edge TPU
        delegate runs it and CPU kernels for it are slow; 8 for int8; None when unrecorded or float."""
        return self.details.get("activation_bits")

    @property
    def accelerator_ready(self) -> bool:
        """Every op in 8-bit integers: what an NPU, DSP or Edge TPU runs."""
        return self.integer_only is True and self.activation_bits != 16

    @property
    def float_ops(self) -> list[str]:
        """Ops a quantised file keeps in float (it then runs on CPU/GPU only), from its export."""
        return list(self.details.get("float_ops") or [])

    @property
    def passed(self) -> bool:
        return self.status == EXPORTED and self.parity.status == PASSED

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Artifact:
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["parity"] = Parity.from_dict(data.get("parity"))
        return cls(**data)


@dataclass
class ModelRecord:
    """The manifest's `model` entry: the spec every file was exported with, where the Keras original is
    and how it was exported. Written flat, as in every manifest so far: {spec..., "source", "notes", ...}."""

    spec: ModelSpec
    source: str | None = None  # the Keras original (absolute); None: a keras.Model from Python
    notes: list[str] = field(default_factory=list)  # what export decided about the model (preprocessing...)
    minimum_deployment_target: str | None = None  # Core ML
    opset: int | None = None  # ONNX

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    @property
    def image_size(self) -> tuple[int, int]:
        return self.spec.image_size

    @property
    def normalization(self) -> Normalization:
        return self.spec.normalization

    def to_dict(self) -> dict:
        return {**self.spec.to_dict(), "source": self.source, "notes": list(self.notes),
                "minimum_deployment_target": self.minimum_deployment_target, "opset": self.opset}

    @classmethod
    def from_dict(cls, data: dict) -> ModelRecord:
        spec_keys = set(ModelSpec.__dataclass_fields__)
        extra = {k: data[k] for k in ("source", "notes", "minimum_deployment_target", "opset") if k in data}
        return cls(ModelSpec.from_dict({k: v for k, v in data.items() if k in spec_keys}), **extra)


@dataclass
class ExportManifest:
    model: ModelRecord
    artifacts: list[Artifact] = field(default_factory=list)
    images: dict = field(default_factory=dict)  # role -> ImageSet.to_dict(): which images calibrated, which judged
    # An export in progress (or interrupted) records `planned` > len(artifacts): its finished files
    # only, so no reader ever pairs a file with an earlier export's verdict; `inputs` is the digest of
    # model, settings and images a rerun compares to keep the files already judged.
    planned: int | None = None
    inputs: str | None = None

    @property
    def complete(self) -> bool:
        return self.planned is None or len(self.artifacts) >= self.planned

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "images": self.images, "planned": self.planned, "inputs": self.inputs,
                "artifacts": [a.to_dict() for a in self.artifacts]}

    def save(self, export_dir: str | Path) -> Path:
        return atomic_write_json(Path(export_dir) / MANIFEST_FILE, self.to_dict())

    @classmethod
    def read(cls, export_dir: str | Path) -> ExportManifest:
        """The manifest as written, finished or not, its files unchecked (the exporter resuming)."""
        path = Path(export_dir) / MANIFEST_FILE
        if not path.is_file():
            raise PocketMLError(f"{export_dir} has no {MANIFEST_FILE}; pass a directory written by `pocketml export`")
        try:
            data = json.loads(path.read_text())
            return cls(model=ModelRecord.from_dict(data["model"]), artifacts=[Artifact.from_dict(a) for a in data["artifacts"]],
                       images=data.get("images") or {}, planned=data.get("planned"), inputs=data.get("inputs"))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise PocketMLError(f"{path} is not a pocketml export manifest ({exc!r})") from exc

    @classmethod
    def load(cls, export_dir: str | Path) -> ExportManifest:
        """The manifest of a finished export whose every exported file is the one it judged."""
        manifest = cls.read(export_dir)
        if not manifest.complete:
            raise PocketMLError(f"{export_dir} holds an unfinished export ({len(manifest.artifacts)} of "
                                f"{manifest.planned} files done); rerun `pocketml export` to finish it")
        for artifact in manifest.artifacts:
            problem = file_problem(Path(export_dir), artifact)
            if problem:
                raise PocketMLError(f"{problem}; rerun `pocketml export` into {export_dir}")
        return manifest

    def find(self, fmt: str, precision: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.format == fmt and a.precision == precision), None)

    def by_name(self, name: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.name == name), None)


def file_problem(export_dir: Path, artifact: Artifact) -> str | None:
    """Why an exported file is not the one its manifest entry judged (missing, or other bytes); None when it is."""
    if artifact.status != EXPORTED or not artifact.sha256:
        return None
    path = export_dir / artifact.path
    if not path.exists():
        return f"{path} is missing though {MANIFEST_FILE} lists it"
    found = sha256_file(path)
    if found != artifact.sha256:
        return (f"{path} does not match its {MANIFEST_FILE} entry (sha256 {found[:12]}, judged {artifact.sha256[:12]}): "
                "it was replaced after the export judged it")
    return None


@dataclass(frozen=True)
class Recommendation:
    """The file to ship on one platform, for the devices `runs_on` names (iOS: one for Core ML's
    iOS 16+, one for Core AI's iOS 27+); artifact None: nothing qualified, and why."""

    platform: str
    artifact: str | None  # Artifact.name
    reason: str
    runs_on: str = ""  # empty in recommendations written before platforms had OS tiers

    @property
    def label(self) -> str:
        """How bench's report names it: the platform and which devices the file is for."""
        return f"{self.platform} ({self.runs_on})" if self.runs_on else self.platform


def save_recommendations(bench_dir: str | Path, recommendations: list[Recommendation]) -> Path:
    return atomic_write_json(Path(bench_dir) / RECOMMENDATIONS_FILE, [asdict(r) for r in recommendations])


def load_recommendations(bench_dir: str | Path) -> list[Recommendation]:
    path = Path(bench_dir) / RECOMMENDATIONS_FILE
    if not path.is_file():
        raise PocketMLError(f"{bench_dir} has no {RECOMMENDATIONS_FILE}; pass a directory written by `pocketml bench`")
    try:
        return [Recommendation(**r) for r in json.loads(path.read_text())]
    except (json.JSONDecodeError, TypeError) as exc:
        raise PocketMLError(f"{path} is not a pocketml recommendations file ({exc!r})") from exc
