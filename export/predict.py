"""`pocketml predict`: the top-K labels, with probabilities, that a model file gives each image.

Any file `pocketml export` writes (.tflite, .onnx, .mlpackage: Core ML itself on macOS, the
reference executor elsewhere) is run through its format module's `load(path)`, found by suffix in
the registry; labels come from the file's own metadata (`--labels` for a file from elsewhere that
has none) and its preprocessing is inside it. A Keras model (anything `pocketml export` accepts) is
shaped exactly as export shapes it, with the labels of its spec.json or `--labels`.

Images are decoded and resized as everywhere else in pocketml (shorter side, centre crop) and
predicted in batches; a folder streams, one row per image as it is done, and an unreadable image
is a row with its error rather than the end of the run.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from pocketml.export import safe_load
from pocketml.export.registry import format_module, format_names, format_of_path

from pocketml.artifact import MANIFEST_FILE, ExportManifest, file_problem
from pocketml.dataset import is_image_file, load_image
from pocketml.errors import PocketMLError
from pocketml.spec import MODEL_FILE, Normalization, read_labels

BATCH = 32  # images decoded and predicted together: bounded memory, few runtime calls
DEFAULT_TOP = 3
KERAS_SUFFIXES = (".keras", *safe_load.H5_SUFFIXES)


@dataclass
class Prediction:
    image: str  # the image's path as given or found
    top: list[tuple[str, float]] = field(default_factory=list)  # (label, probability), best first
    error: str | None = None  # why the image could not be classified

    def to_dict(self) -> dict:
        return {"image": self.image, "top": [{"label": k, "p": p} for k, p in self.top], "error": self.error}


@dataclass
class LabelledModel:
    """A Predictor with the labels of its outputs: `predict` gives probabilities, `classify` names them."""

    predictor: Any  # export.runtime.Predictor
    labels: tuple[str, ...]
    path: Path
    format: str  # keras, tflite, onnx, coreml
    notes: list[str] = field(default_factory=list)  # what loading it assumed
    preprocess: Normalization | None = None  # applied before a file from elsewhere that expects it

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.predictor.input_size)  # type: ignore[return-value]

    def predict(self, images: np.ndarray) -> np.ndarray:
        """float32 [N, classes] probabilities for uint8|float32 [N,H,W,3] RGB 0..255 images."""
        if self.preprocess is not None:
            images = self.preprocess.apply(images)
        probs = np.asarray(self.predictor.predict(images), dtype=np.float32)
        if probs.ndim != 2 or probs.shape[1] != len(self.labels):
            raise PocketMLError(
                f"{self.path.name} outputs {probs.shape[1:]} scores but has {len(self.labels)} labels; "
                f"give --labels with exactly {probs.shape[-1]} lines"
            )
        return probs

    def classify(self, image: np.ndarray | str | Path, top: int = DEFAULT_TOP) -> list[tuple[str, float]]:
        """(label, probability) best first for one image: an [H,W,3] array of the model's size or a file."""
        pixels = load_image(image, self.input_size) if isinstance(image, (str, Path)) else np.asarray(image)
        return top_labels(self.predict(pixels[None])[0], self.labels, top)


def is_keras_source(path: Path) -> bool:
    """A model `pocketml export` takes (Keras file, SavedModel, model directory) rather than an exported file."""
    if path.is_dir():
        return (path / safe_load.SAVED_MODEL_FILE).is_file() or (path / MODEL_FILE).is_file()
    return path.suffix.lower() in KERAS_SUFFIXES or path.name == safe_load.SAVED_MODEL_FILE


def load(
    path: str | Path,
    labels: str | Path | None = None,
    image_size: str | tuple[int, int] | None = None,
    preprocess: Normalization | None = None,
) -> LabelledModel:
    """The model file at `path` with its labels, ready to classify images."""
    path = Path(path)
    if not path.exists():
        suffixes = ", ".join(format_module(name).SUFFIX for name in format_names())
        raise PocketMLError(f"model {path} does not exist; give a {suffixes}, .keras or .h5 model")
    if is_keras_source(path):
        from pocketml.export import keras_model

        predictor = keras_model.load(path, labels=labels, image_size=image_size, preprocess=preprocess)
        return LabelledModel(predictor, predictor.spec.labels, path, "keras", predictor.notes)
    if image_size is not None:
        raise PocketMLError(f"--image-size applies to Keras models; {path.name} carries its input size inside")
    fmt = format_of_path(str(path))
    module = format_module(fmt)
    check_exported(path)
    predictor, carried = readable_file(module, path)
    names = read_labels(labels) if labels is not None else carried
    if not names:
        raise PocketMLError(f"{path.name} carries no labels; pass --labels FILE (one label per line, in output order)")
    notes = []
    if preprocess is not None and not preprocess.is_identity:
        # pocketml's own files carry their preprocessing inside; a file from elsewhere may expect it done.
        notes.append(f"applying {preprocess.describe()} before {path.name} (it must expect normalised input)")
    return LabelledModel(predictor, tuple(names), path, fmt, notes, preprocess if notes else None)


def check_exported(path: Path) -> None:
    """A file inside an export directory (EXPORT_DIR/<format>/file) must be the one its manifest
    entry judged: a file replaced since would otherwise run under another file's verdict."""
    export_dir = path.resolve().parent.parent
    if not (export_dir / MANIFEST_FILE).is_file():
        return
    try:
        manifest = ExportManifest.read(export_dir)
    except PocketMLError:  # a manifest.json of something else: not an export directory
        return
    relative = path.resolve().relative_to(export_dir).as_posix()
    artifact = next((a for a in manifest.artifacts if a.path == relative), None)
    problem = file_problem(export_dir, artifact) if artifact is not None else None
    if problem:
        raise PocketMLError(f"{problem}; rerun `pocketml export` into {export_dir}")


def readable_file(module, path: Path):
    """The file's Predictor and the labels it carries, else a one-line error saying it is not a file of
    its format (a runtime's own parse error would be a traceback)."""
    try:
        return module.load(path), module.read_labels(path)
    except PocketMLError:
        raise
    except Exception as exc:  # each runtime raises its own type for a file it cannot parse
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise PocketMLError(f"{path} is not a valid {module.SUFFIX} model ({why}); give a model "
                            f"file written by `pocketml export` or another {module.FORMAT} converter") from exc


def image_paths(inputs: Iterable[str | Path]) -> list[Path]:
    """The images named, folders expanded to every image inside them (sorted), else a one-line error."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            inside = sorted(p for p in item.rglob("*") if is_image_file(p))
            if not inside:
                raise PocketMLError(f"folder {item} holds no images; give image files or folders of them")
            found += inside
        elif item.is_file():
            found.append(item)
        else:
            raise PocketMLError(f"image {item} does not exist; give image files or folders of them")
    if not found:
        raise PocketMLError("no images given; give image files or folders of them")
    return found


def top_labels(probs: np.ndarray, labels: tuple[str, ...], top: int) -> list[tuple[str, float]]:
    """The `top` most probable (label, probability) pairs, best first (ties keep label order)."""
    order = np.argsort(-probs, kind="stable")[: max(1, top)]
    return [(labels[i], float(probs[i])) for i in order]


def predictions(model: LabelledModel, paths: list[Path], top: int = DEFAULT_TOP) -> Iterator[Prediction]:
    """One Prediction per path, in order, computed BATCH images at a time."""
    if top < 1:
        raise PocketMLError(f"--top {top} is not accepted; give 1 or more")
    for start in range(0, len(paths), BATCH):
        rows: list[Prediction] = []
        pixels: list[np.ndarray] = []
        for path in paths[start : start + BATCH]:
            rows.append(Prediction(str(path)))
            try:
                pixels.append(load_image(path, model.input_size))
            except PocketMLError as exc:  # an unreadable image is a row with its reason
                rows[-1].error = str(exc)
        probs = iter(model.predict(np.stack(pixels)) if pixels else ())
        for row in rows:
            if row.error is None:
                row.top = top_labels(next(probs), model.labels, top)
            yield row


def csv_header(top: int) -> list[str]:
    return ["image", *(f"{kind}_{rank}" for rank in range(1, top + 1) for kind in ("label", "p")), "error"]


def csv_row(row: Prediction, top: int) -> list[str]:
    cells = [row.image]
    for rank in range(top):
        label, p = row.top[rank] if rank < len(row.top) else ("", None)
        cells += [label, "" if p is None else f"{p:.6f}"]
    return [*cells, row.error or ""]


def text_line(row: Prediction) -> str:
    if row.error:
        return f"{row.image}: error: {row.error}"
    return f"{row.image}: " + ", ".join(f"{label} {p:.4f}" for label, p in row.top)


def write_rows(rows: Iterable[Prediction], stream: IO[str], style: str, top: int, each: Callable[[Prediction], None]) -> int:
    """Write `rows` to `stream` as they come (style csv, json or text); returns how many."""
    count = 0
    writer = csv.writer(stream, lineterminator="\n")
    if style == "csv":
        writer.writerow(csv_header(top))
    elif style == "json":
        stream.write("[")
    for row in rows:
        if style == "csv":
            writer.writerow(csv_row(row, top))
        elif style == "json":
            stream.write(("," if count else "") + "\n  " + json.dumps(row.to_dict()))
        else:
            stream.write(text_line(row) + "\n")
        stream.flush()
        count += 1
        each(row)
    if style == "json":
        stream.write("\n]\n")
    return count


def run(
    model: LabelledModel, inputs: Iterable[str | Path], top: int = DEFAULT_TOP, style: str = "text", out: Path | None = None
) -> list[Prediction]:
    """Predict every image, streaming rows to `out` (written atomically) or stdout; returns the rows."""
    from pocketml.console import console, progress
    from pocketml.fsutil import atomic_output

    paths = image_paths(inputs)
    top = min(top, len(model.labels))
    kept: list[Prediction] = []
    with progress() as bar:
        task = bar.add_task(f"predict {model.path.name}", total=len(paths))

        def each(row: Prediction) -> None:
            kept.append(row)
            bar.advance(task)

        rows = predictions(model, paths, top)
        if out is None:  # the terminal (console.file stays on it while library output is captured)
            write_rows(rows, console.file, style, top, each)
        else:
            with atomic_output(out) as tmp, open(tmp, "w", encoding="utf-8", newline="") as stream:
                write_rows(rows, stream, style, top, each)
    return kept


def summary_rows(rows: list[Prediction]) -> list[tuple[str, int]]:
    """(top-1 label, images) for the summary table, most frequent first; failures last."""
    counts: dict[str, int] = {}
    for row in rows:
        key = row.top[0][0] if row.top else "(error)"
        counts[key] = counts.get(key, 0) + 1
    return sorted(counts.items(), key=lambda kv: (kv[0] == "(error)", -kv[1], kv[0]))

