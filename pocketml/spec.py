"""ModelSpec: what a model expects and what its outputs mean. It travels with every artifact.

Preprocessing lives inside the model (a rescaling layer at the input), so every file pocketml
produces takes plain RGB pixels 0..255. The spec records that preprocessing anyway, so a reader
of spec.json or of an exported file's metadata knows what happens to the pixels.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pocketml.errors import PocketMLError
from pocketml.fsutil import atomic_write_json

MODEL_FILE = "model.keras"  # the Keras model of a model directory (written by `pocketml train`)
SPEC_FILE = "spec.json"  # its ModelSpec
LABELS_FILE = "labels.txt"  # its labels, one per line, in output order


@dataclass(frozen=True)
class Normalization:
    """In-model preprocessing as per-channel affine maps: x' = (x - mean) / std, x in 0..255 RGB.

    `name` identifies the backbone family's scheme (e.g. "mobilenet": mean 127.5, std 127.5).
    A scheme that is not a per-channel affine map (none in the registry today) keeps mean 0, std 1
    and is described by its name alone.
    """

    name: str = "none"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @classmethod
    def for_mobilenet(cls) -> Normalization:
        return cls("mobilenet", (127.5,) * 3, (127.5,) * 3)

    @classmethod
    def identity(cls) -> Normalization:
        return cls("none")


@dataclass(frozen=True)
class ModelSpec:
    labels: tuple[str, ...]
    image_size: tuple[int, int]  # (height, width) in pixels
    color_order: str = "RGB"  # channel order the model's input expects
    input_range: tuple[float, float] = (0.0, 255.0)  # pixel values the model's input expects
    normalization: Normalization = field(default_factory=Normalization.identity)
    backbone: str | None = None
    weights: str | None = None  # "imagenet", "none", or a path / package the weights came from
    weights_sha256: str | None = None
    source_sha256: str | None = None  # sha256 of the .keras file this spec describes

    def __post_init__(self) -> None:
        if not self.labels:
            raise PocketMLError("spec has no labels: give at least two class names (one per line in labels.txt)")
        if len(set(self.labels)) != len(self.labels):
            dupes = sorted({x for x in self.labels if self.labels.count(x) > 1})
            raise PocketMLError(f"labels must be unique; repeated: {', '.join(dupes)}")
        h, w = self.image_size
        if h < 8 or w < 8:
            raise PocketMLError(f"image_size {self.image_size} is too small; need height and width >= 8")
        if self.color_order not in ("RGB", "BGR"):
            raise PocketMLError(f"color_order {self.color_order!r} is not accepted; use RGB or BGR")

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["labels"] = list(self.labels)
        data["image_size"] = list(self.image_size)
        data["input_range"] = list(self.input_range)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PocketMLError(f"spec.json has unknown keys {unknown}; accepted: {sorted(known)}")
        try:
            norm = data.get("normalization") or {}
            return cls(
                labels=tuple(str(x) for x in data["labels"]),
                image_size=tuple(int(x) for x in data["image_size"]),  # type: ignore[arg-type]
                color_order=data.get("color_order", "RGB"),
                input_range=tuple(float(x) for x in data.get("input_range", (0, 255))),  # type: ignore[arg-type]
                normalization=Normalization(
                    name=norm.get("name", "none"),
                    mean=tuple(float(x) for x in norm.get("mean", (0, 0, 0))),  # type: ignore[arg-type]
                    std=tuple(float(x) for x in norm.get("std", (1, 1, 1))),  # type: ignore[arg-type]
                ),
                backbone=data.get("backbone"),
                weights=data.get("weights"),
                weights_sha256=data.get("weights_sha256"),
                source_sha256=data.get("source_sha256"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PocketMLError(f"spec.json is malformed ({exc!r}); it needs labels and image_size [h, w]") from exc

    def save(self, directory: str | Path) -> Path:
        """Write spec.json and labels.txt into `directory` atomically."""
        directory = Path(directory)
        write_labels(directory / LABELS_FILE, self.labels)
        return atomic_write_json(directory / SPEC_FILE, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ModelSpec:
        """Read a spec.json (path to the file or to the directory holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / SPEC_FILE
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError as exc:
            raise PocketMLError(f"no spec.json at {path}; pass --labels FILE or put spec.json beside the model") from exc
        except json.JSONDecodeError as exc:
            raise PocketMLError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from exc


def read_labels(path: str | Path) -> tuple[str, ...]:
    """Labels from a text file, one per line; blank lines ignored."""
    path = Path(path)
    try:
        labels = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    except FileNotFoundError as exc:
        raise PocketMLError(f"labels file {path} does not exist; give a text file with one label per line") from exc
    if not labels:
        raise PocketMLError(f"labels file {path} is empty; give one label per line")
    return labels


def write_labels(path: str | Path, labels: tuple[str, ...] | list[str]) -> Path:
    from pocketml.fsutil import atomic_write_text

    return atomic_write_text(path, "".join(f"{label}\n" for label in labels))
