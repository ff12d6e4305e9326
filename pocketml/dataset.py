"""Reading datasets the way every stage sees them: a curated dataset directory or an ImageFolder.

A dataset directory (written by `pocketml curate`) holds `manifest.csv`, one row per kept image,
with images stored by content hash under `images/`. An ImageFolder is `ROOT/[split/]label/*.jpg`
(splits named train, val/validation, test) or a flat folder of images (no labels, for calibration).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from pocketml.errors import PocketMLError

DATASET_MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = (
    "sha256",  # sha256 of the stored file's bytes; also its name under images/
    "path",  # relative to the dataset directory
    "label",
    "split",  # train | val | test
    "source",  # which source produced it (urls, imagenet, openimages, search, folder, glyphs)
    "source_url",  # where it came from (URL or original file path)
    "width",
    "height",
    "pixel_hash",  # hash of decoded pixels: equal for re-encodings of one photo
    "phash",  # 64-bit perceptual hash, 16 hex digits
    "flags",  # quality flags separated by ';' (dark, bright, blurry, low_info, grayscale, aspect, tiny)
)
SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    label: str | None
    split: str | None


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def read_records(root: str | Path) -> list[ImageRecord]:
    """Every image under `root`: a dataset dir with manifest.csv, an ImageFolder, or a flat folder."""
    root = Path(root)
    if not root.is_dir():
        raise PocketMLError(f"{root} is not a directory; give a dataset directory or an ImageFolder")
    if (root / DATASET_MANIFEST).is_file():
        return _manifest_records(root)
    split_dirs = [d for d in sorted(root.iterdir()) if d.is_dir() and d.name.lower() in SPLIT_ALIASES]
    if split_dirs:
        return [r for d in split_dirs for r in _class_folder_records(d, SPLIT_ALIASES[d.name.lower()])]
    records = _class_folder_records(root, None)
    if records:
        return records
    flat = [ImageRecord(p, None, None) for p in sorted(root.iterdir()) if is_image_file(p)]
    if not flat:
        raise PocketMLError(f"{root} holds no images ({', '.join(IMAGE_SUFFIXES)}) in itself or in class folders")
    return flat


def _manifest_records(root: Path) -> list[ImageRecord]:
    with open(root / DATASET_MANIFEST, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "label", "split"} - set(reader.fieldnames or ())
        if missing:
            raise PocketMLError(f"{root / DATASET_MANIFEST} lacks columns {sorted(missing)}; expected {MANIFEST_COLUMNS}")
        return [ImageRecord(root / row["path"], row["label"], row["split"] or None) for row in reader]


def _class_folder_records(root: Path, split: str | None) -> list[ImageRecord]:
    records = []
    for class_dir in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        records += [ImageRecord(p, class_dir.name, split) for p in sorted(class_dir.rglob("*")) if is_image_file(p)]
    return records


def labels_of(records: Sequence[ImageRecord]) -> list[str]:
    """Sorted distinct labels (the class order training uses)."""
    return sorted({r.label for r in records if r.label is not None})


HELD_OUT = ("test", "val")  # the splits a verdict is measured on, in order of preference
CALIBRATION_COUNT = 200  # calibration images at most: enough for stable activation ranges
CALIBRATION_SHARE = 4  # calibration takes at most 1/4 of its pool, so the rest can judge (agreement needs no labels)
EVALUATION_COUNT = 500  # evaluation images at most: bounds export and validation time on big splits
AGREEMENT_COUNT = 2000  # images agreement is measured on at most, held-out ones included
SEED = 0  # every choice of images is seeded, so a rerun picks the same files


def select_split(records: Sequence[ImageRecord], *preferred: str) -> list[ImageRecord]:
    """Records of the first split in `preferred` that has any; all records when none is split."""
    for split in preferred:
        chosen = [r for r in records if r.split == split]
        if chosen:
            return chosen
    if all(r.split is None for r in records):
        return list(records)
    return []


def bounded(records: Sequence[ImageRecord], limit: int) -> list[ImageRecord]:
    """At most `limit` records, the same ones on every run, each label keeping its share (class
    folders are sorted, so a prefix would be one class); the records keep their order."""
    if len(records) <= limit:
        return list(records)
    rng = np.random.default_rng(SEED)
    by_label: dict[str | None, list[int]] = {}
    for index, record in enumerate(records):
        by_label.setdefault(record.label, []).append(index)
    quotas = _quotas({label: len(ix) for label, ix in by_label.items()}, limit)
    picked = [int(i) for label, ix in by_label.items() for i in rng.choice(ix, size=quotas[label], replace=False)]
    return [records[i] for i in sorted(picked)]


def _quotas(sizes: dict, limit: int) -> dict:
    """Per-label counts summing to `limit`, proportional to `sizes` (largest remainders round up),
    at least one per label while the limit allows."""
    total = sum(sizes.values())
    exact = {label: limit * n / total for label, n in sizes.items()}
    quotas = {label: min(sizes[label], max(1, int(share))) for label, share in exact.items()}
    order = sorted(sizes, key=lambda label: exact[label] - int(exact[label]), reverse=True)
    turn = 0
    while sum(quotas.values()) < limit:  # limit < total, so some label always has room
        label = order[turn % len(order)]
        quotas[label] += quotas[label] < sizes[label]
        turn += 1
    while sum(quotas.values()) > limit:  # the one-per-label floor can overshoot with many small labels
        quotas[max(quotas, key=lambda label: quotas[label])] -= 1
    return quotas


@dataclass(frozen=True)
class ImageSet:
    """Images chosen for one role, with where they came from: what a manifest records."""

    role: str  # "calibration" (int8 activation ranges) | "evaluation" (every verdict) | "agreement" (agreement only)
    source: str  # the folder they were drawn from
    split: str  # train | val | test | all (a folder without splits) | rest (its images not used to calibrate) | other
    records: tuple[ImageRecord, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    unreadable: tuple[str, ...] = field(default_factory=tuple)  # files skipped: they do not decode

    def __len__(self) -> int:
        return len(self.records)

    @property
    def paths(self) -> list[Path]:
        return [r.path for r in self.records]

    @property
    def labels(self) -> list[str | None]:
        return [r.label for r in self.records]

    def to_dict(self) -> dict:
        return {"role": self.role, "source": self.source, "split": self.split, "count": len(self),
                "images": [str(r.path) for r in self.records], "labels": self.labels, "notes": list(self.notes),
                "unreadable": list(self.unreadable)}

    @classmethod
    def from_dict(cls, data: dict) -> ImageSet:
        labels = data.get("labels") or [None] * len(data["images"])
        records = tuple(ImageRecord(Path(p), label, data.get("split")) for p, label in zip(data["images"], labels, strict=True))
        return cls(data["role"], data["source"], data["split"], records, tuple(data.get("notes") or ()),
                   tuple(data.get("unreadable") or ()))


def choose_images(
    calibration: str | Path | None,
    evaluation: str | Path | None,
    calibration_count: int = CALIBRATION_COUNT,
    evaluation_count: int = EVALUATION_COUNT,
) -> tuple[ImageSet | None, ImageSet | None]:
    """The one choice of calibration and evaluation images every stage uses.

    Calibration comes from the training split of `calibration` (a folder without splits: any of its
    images); evaluation from the held-out split of `evaluation` (test, else val; a folder without
    splits: all of it). A folder given for one role also serves the other: `calibration` alone is
    evaluated on its held-out split (or, without splits, on its images not used to calibrate), and
    `evaluation` alone calibrates on its train split when it has one. No evaluation image is a
    calibration image, by path or by content, so an int8 file is never judged on what tuned it.
    """
    cal_records = read_records(calibration) if calibration is not None else None
    eval_records = read_records(evaluation) if evaluation is not None else None
    if cal_records is None and eval_records is not None and any(r.split == "train" for r in eval_records):
        calibration, cal_records = evaluation, eval_records
    cal_set = _calibration_set(calibration, cal_records, calibration_count) if cal_records is not None else None
    if eval_records is None and cal_records is not None:
        evaluation, eval_records = calibration, cal_records
    if eval_records is None:
        return cal_set, None
    return cal_set, _evaluation_set(evaluation, eval_records, cal_set, evaluation_count)


def evaluation_set(root: str | Path, calibration: ImageSet | None = None, count: int = EVALUATION_COUNT) -> ImageSet:
    """Evaluation images of `root` (test, else val, else all of it), none of them in `calibration`."""
    return _evaluation_set(root, read_records(root), calibration, count)


def calibration_count(pool: int, count: int = CALIBRATION_COUNT) -> int:
    """Calibration images taken from a pool of `pool`: at most `count`, and at most a quarter of a
    small pool, so the other three quarters are left to judge the files on (at least one image)."""
    return max(1, min(count, pool // CALIBRATION_SHARE))


def _calibration_set(root: str | Path, records: list[ImageRecord], count: int) -> ImageSet:
    if any(r.split is not None for r in records):
        chosen, split = [r for r in records if r.split == "train"], "train"
        if not chosen:
            raise PocketMLError(f"{root} has no train split to calibrate on; give a folder with train/ "
                                "(or without splits) as --calibration")
    else:
        chosen, split = list(records), "all"
    taken = bounded(chosen, calibration_count(len(chosen), count))
    notes = ()
    if len(taken) < min(count, len(chosen)):
        notes = (f"{len(taken)} of the {len(chosen)} images of {root} ({split}) calibrate; "
                 f"the other {len(chosen) - len(taken)} are left to judge the files on",)
    return ImageSet("calibration", str(root), split, tuple(taken), notes)


def _evaluation_set(root: str | Path, records: list[ImageRecord], cal_set: ImageSet | None, count: int) -> ImageSet:
    split = next((s for s in HELD_OUT if any(r.split == s for r in records)), None)
    if split is None and any(r.split is not None for r in records):
        raise PocketMLError(f"{root} has no test or val split to evaluate on; give --images a folder with "
                            "test/ or val/ (or without splits)")
    chosen = [r for r in records if r.split == split] if split else list(records)
    used = _fingerprints(cal_set.records) if cal_set is not None else set()
    # Hashing every file of a large split would be slow: draw enough candidates to survive the filter.
    candidates = bounded(chosen, count + (len(cal_set) if cal_set is not None else 0))
    kept = [r for r in candidates if not used & _fingerprints([r])]
    notes = []
    if len(kept) < len(candidates):
        notes.append(f"{len(candidates) - len(kept)} images left out of evaluation: they also calibrate")
    if not kept:
        raise PocketMLError(f"{root} has no images left to evaluate on once the calibration images are set "
                            "aside; give --images held-out images (a test/ or val/ split)")
    return ImageSet("evaluation", str(root), split or ("rest" if used else "all"), tuple(bounded(kept, count)),
                    tuple(notes))


def agreement_set(
    roots: Sequence[str | Path | None],
    calibration: ImageSet | None,
    evaluation: ImageSet,
    count: int = AGREEMENT_COUNT,
) -> ImageSet | None:
    """Every other image of the folders given (`roots`, any split) that neither calibrated nor is
    already an evaluation image, up to `count` with the evaluation images, each label keeping its
    share: agreement with Keras needs no labels, so these judge too (agreement only). None if none."""
    room = count - len(evaluation)
    sources = list(dict.fromkeys(str(root) for root in roots if root is not None))
    if room <= 0 or not sources:
        return None
    used = _fingerprints([*(calibration.records if calibration is not None else ()), *evaluation.records])
    pool = [r for root in sources for r in read_records(root) if str(Path(r.path).resolve()) not in used]
    # Hashing every file of a big dataset would be slow: draw enough candidates to survive the filter.
    candidates = bounded(pool, room + len(evaluation) + (len(calibration) if calibration is not None else 0))
    kept = bounded([r for r in candidates if not used & _fingerprints([r])], room)
    if not kept:
        return None
    splits = sorted({r.split or "all" for r in kept})
    return ImageSet("agreement", " + ".join(sources), "+".join(splits), tuple(kept))


def _fingerprints(records: Sequence[ImageRecord]) -> set[str]:
    """Resolved path and content hash of each record: a copy of a calibration image is still one."""
    found = set()
    for record in records:
        found.add(str(Path(record.path).resolve()))
        found.add(hashlib.sha256(Path(record.path).read_bytes()).hexdigest())
    return found


def load_image(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """One image as uint8 [H, W, 3] RGB: EXIF-rotated, shorter side resized, centre-cropped.

    The same resize policy as training's input pipeline, so accuracy here matches evaluation.
    """
    from PIL import Image

    height, width = size
    try:
        img = Image.fromarray(decode_rgb(path), "RGB")
    except OSError as exc:
        raise PocketMLError(f"cannot read image {path}: {exc}") from exc
    scale = max(height / img.height, width / img.width)
    new_size = (max(width, round(img.width * scale)), max(height, round(img.height * scale)))
    img = img.resize(new_size, Image.Resampling.BILINEAR)
    left, top = (img.width - width) // 2, (img.height - height) // 2
    return np.asarray(img.crop((left, top, left + width, top + height)), dtype=np.uint8)


def decode_rgb(path: str | Path) -> np.ndarray:
    """uint8 [H, W, 3] RGB pixels of an image file at its own size, EXIF orientation applied and any
    alpha composited on white: the one decoding every stage (verification, curation, training,
    export, bench) uses. Raises OSError (PIL's UnidentifiedImageError included) for unreadable files."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        return np.asarray(to_rgb(ImageOps.exif_transpose(img)), dtype=np.uint8)


def to_rgb(img):
    """A PIL image as RGB, compositing any transparency onto white (a transparent PNG or a black-on-
    transparent logo is not a black photo)."""
    from PIL import Image

    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def load_images(paths: Sequence[str | Path], size: tuple[int, int]) -> np.ndarray:
    """uint8 [N, H, W, 3] RGB batch of `paths` (see load_image)."""
    if not paths:
        return np.zeros((0, *size, 3), dtype=np.uint8)
    return np.stack([load_image(p, size) for p in paths])


def readable_images(image_set: ImageSet, size: tuple[int, int]) -> tuple[ImageSet, np.ndarray]:
    """The set without the files that do not decode (each named in a note, as acquisition skips them)
    and the uint8 [N, H, W, 3] batch of the rest; an error only when none is readable."""
    kept, pixels, skipped, notes = [], [], [], list(image_set.notes)
    for record in image_set.records:
        try:
            pixels.append(load_image(record.path, size))
        except PocketMLError as exc:
            skipped.append(str(record.path))
            notes.append(f"skipped unreadable {image_set.role} image: {exc}")
            continue
        kept.append(record)
    if image_set.records and not kept:
        raise PocketMLError(f"none of the {len(skipped)} {image_set.role} images in {image_set.source} can be read "
                            f"(first: {skipped[0]}); give a folder of JPEG/PNG images")
    batch = np.stack(pixels) if pixels else np.zeros((0, *size, 3), dtype=np.uint8)
    return replace(image_set, records=tuple(kept), notes=tuple(notes), unreadable=tuple(skipped)), batch
