"""Reading datasets the way every stage sees them: a curated dataset directory or an ImageFolder.

A dataset directory (written by `pocketml curate`) holds `manifest.csv`, one row per kept image,
with images stored by content hash under `images/`. An ImageFolder is `ROOT/[split/]label/*.jpg`
(splits named train, val/validation, test) or a flat folder of images (no labels, for calibration).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
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


def select_split(records: Sequence[ImageRecord], *preferred: str) -> list[ImageRecord]:
    """Records of the first split in `preferred` that has any; all records when none is split."""
    for split in preferred:
        chosen = [r for r in records if r.split == split]
        if chosen:
            return chosen
    if all(r.split is None for r in records):
        return list(records)
    return []


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
