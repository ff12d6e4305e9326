"""ModelSpec: what a model expects and what its outputs mean. It travels with every artifact.

Preprocessing lives inside every exported file (a rescaling layer at the input: the model's own,
or one `pocketml export --preprocess` puts in front of a model that lacks it), so every file pocketml
produces takes plain RGB pixels 0..255. The spec records that preprocessing anyway, so a reader
of spec.json or of an exported file's metadata knows what happens to the pixels.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from pocketml.errors import PocketMLError
from pocketml.fsutil import atomic_write_json

MODEL_FILE = "model.keras"  # the Keras model of a model directory (written by `pocketml train`)
SPEC_FILE = "spec.json"  # its ModelSpec
LABELS_FILE = "labels.txt"  # its labels, one per line, in output order


CHANNEL_ORDERS = ("RGB", "BGR")


@dataclass(frozen=True)
class Normalization:
    """Preprocessing as per-channel affine maps: x' = (x - mean) / std, x in 0..255 RGB, then the
    channels in `channel_order` (BGR: reversed after normalising, as Caffe-era networks expect).

    `name` identifies the scheme (e.g. "mobilenet": mean 127.5, std 127.5); `mean` and `std` are in
    RGB order. `added_at_export` says where it lives: False, inside the Keras model itself; True, the
    Keras model lacks it and `pocketml export --preprocess` put it in front of the model in every
    exported file (and validate applies it to the original before comparing). Either way every
    exported file takes plain RGB pixels 0..255.
    """

    name: str = "none"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channel_order: str = "RGB"  # the order the network receives its channels in
    added_at_export: bool = False

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3:
            raise PocketMLError(f"normalisation {self.name!r} needs 3 means and 3 stds (R, G, B); got {self.mean}, {self.std}")
        if any(not s for s in self.std):
            raise PocketMLError(f"normalisation {self.name!r} has a zero std {self.std}; every std must be non-zero")
        if self.channel_order not in CHANNEL_ORDERS:
            raise PocketMLError(f"channel_order {self.channel_order!r} is not accepted; use RGB or BGR")

    @classmethod
    def for_mobilenet(cls) -> Normalization:
        return cls("mobilenet", (127.5,) * 3, (127.5,) * 3)

    @classmethod
    def identity(cls) -> Normalization:
        return cls("none")

    @classmethod
    def preset(cls, name: str) -> Normalization:
        """A named scheme (PRESETS), else a one-line error listing them."""
        try:
            return PRESETS[name]
        except KeyError:
            raise PocketMLError(f"unknown preprocessing {name!r}; accepted: {', '.join(PRESETS)}") from None

    @property
    def is_identity(self) -> bool:
        return self.mean == (0.0,) * 3 and self.std == (1.0,) * 3 and self.channel_order == "RGB"

    def then(self, inner: Normalization) -> Normalization:
        """This map followed by `inner` (both RGB order), as one map: (x - m1) / s1 then (y - m2) / s2
        is (x - (m1 + m2 s1)) / (s1 s2)."""
        mean = tuple(m1 + m2 * s1 for m1, m2, s1 in zip(self.mean, inner.mean, self.std, strict=True))
        std = tuple(s1 * s2 for s1, s2 in zip(self.std, inner.std, strict=True))
        return Normalization("rescaling", mean, std)  # type: ignore[arg-type]

    def named(self) -> Normalization:
        """The same map under a preset's name when it equals one (to 4 significant digits)."""
        for preset in PRESETS.values():
            if preset.channel_order == self.channel_order and _close(preset.mean, self.mean) and _close(preset.std, self.std):
                return replace(self, name=preset.name)
        return self

    def apply(self, images):
        """float32 `images` [N,H,W,3] RGB 0..255 normalised (numpy), for a file from elsewhere that
        expects it done; pocketml's own files do this inside (export/graph.py preprocessing_layer)."""
        import numpy as np

        mean, std = (np.asarray(v, np.float32) for v in (self.mean, self.std))
        out = (np.asarray(images, np.float32) - mean) / std
        return np.ascontiguousarray(out[..., ::-1]) if self.channel_order == "BGR" else out

    def describe(self) -> str:
        """One line for notes and file metadata, e.g. "mobilenet: (x - 127.5) / 127.5"."""
        if self.is_identity:
            return f"{self.name}: raw RGB pixels 0..255"
        mean, std = (_numbers(v) for v in (self.mean, self.std))
        flip = ", then RGB->BGR" if self.channel_order == "BGR" else ""
        return f"{self.name}: (x - {mean}) / {std}{flip}"

    @classmethod
    def from_dict(cls, data: dict) -> Normalization:
        return cls(
            name=data.get("name", "none"),
            mean=tuple(float(x) for x in data.get("mean", (0, 0, 0))),  # type: ignore[arg-type]
            std=tuple(float(x) for x in data.get("std", (1, 1, 1))),  # type: ignore[arg-type]
            channel_order=data.get("channel_order", "RGB"),
            added_at_export=bool(data.get("added_at_export", False)),
        )


def _close(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(abs(x - y) <= 1e-4 * max(abs(x), abs(y), 1.0) for x, y in zip(a, b, strict=True))


def _numbers(values: tuple[float, ...]) -> str:
    return f"{values[0]:g}" if len(set(values)) == 1 else "(" + ", ".join(f"{v:g}" for v in values) + ")"


# --preprocess names: what a model trained with each family's preprocessing expects.
PRESETS: dict[str, Normalization] = {
    "none": Normalization.identity(),  # raw 0..255 (or the model normalises inside)
    "mobilenet": Normalization.for_mobilenet(),  # [-1, 1]: keras.applications mobilenet/efficientnetv2 "tf" mode
    "imagenet": Normalization(  # torchvision's ImageNet mean/std ("torch" mode)
        "imagenet", (0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)
    ),
    "caffe-bgr": Normalization("caffe-bgr", (123.68, 116.779, 103.939), (1.0,) * 3, "BGR"),  # ResNet50/VGG "caffe" mode
    "unit": Normalization("unit", (0.0,) * 3, (255.0,) * 3),  # [0, 1]
}


def channel_values(value: object, what: str) -> tuple[float, float, float]:
    """Three per-channel numbers (R, G, B) from 127.5, "127.5", "123.7,116.3,103.5" or a list."""
    items = str(value).replace(" ", "").split(",") if isinstance(value, (str, int, float)) else list(value)  # type: ignore[call-overload]
    try:
        numbers = tuple(float(x) for x in items)
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) == 1:
        numbers = numbers * 3
    if len(numbers) != 3:
        raise PocketMLError(f"{what} {value!r} is not accepted; give one number or three (R,G,B), e.g. 127.5 or 123.7,116.3,103.5")
    return numbers  # type: ignore[return-value]


def requested_normalization(
    preset: str | None = None, mean: object = None, std: object = None, bgr: bool = False
) -> Normalization | None:
    """What `--preprocess NAME` or `--mean/--std [--bgr]` ask for; None when neither was given."""
    explicit = mean is not None or std is not None or bgr
    if preset is not None and explicit:
        raise PocketMLError("give --preprocess NAME or --mean/--std [--bgr], not both")
    if preset is not None:
        return Normalization.preset(preset)
    if not explicit:
        return None
    means = channel_values(mean if mean is not None else 0.0, "--mean")
    stds = channel_values(std if std is not None else 1.0, "--std")
    return Normalization("custom", means, stds, "BGR" if bgr else "RGB").named()


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
            return cls(
                labels=tuple(str(x) for x in data["labels"]),
                image_size=tuple(int(x) for x in data["image_size"]),  # type: ignore[arg-type]
                color_order=data.get("color_order", "RGB"),
                input_range=tuple(float(x) for x in data.get("input_range", (0, 255))),  # type: ignore[arg-type]
                normalization=Normalization.from_dict(data.get("normalization") or {}),
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
