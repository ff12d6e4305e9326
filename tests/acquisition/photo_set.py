"""Distinct real photos for the acquisition tests, on any clone (no ../shared needed).

Rendered like tests/photos.py (crops of scikit-image's CC0 / public-domain photographs, each moved,
scaled, rotated, flipped, colour-shifted and blended with another photo) but at Flickr-era sizes
(~400x300, varied aspect) and *filtered*: a render is kept only when its pHash is more than
MIN_DISTANCE bits from every photo already kept, so any two photos are unrelated pictures as far as
exact/near-duplicate search can tell, as two different web photos are. The tests plant their own
duplicates on top. The same seed gives byte-identical files.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from pocketml.acquisition import hashing

from tests.photos import CLASSES, DISTRACTORS

LABELS = tuple(CLASSES)  # ("cat", "coffee")
SPLIT_COUNTS = {"train": 24, "val": 10}  # photos per label; ImageFolder sources read train and val
MIN_DISTANCE = 16  # pHash bits between any two kept photos: above curation's group distance (10)


def _photos() -> dict[str, np.ndarray]:
    from tests.photos import _photo

    return {name: _photo(name) for names in (*CLASSES.values(), DISTRACTORS) for name in names}


def _render(rng: np.random.Generator, photos: dict[str, np.ndarray], label: str) -> Image.Image:
    photo = photos[str(rng.choice(CLASSES[label]))]
    height, width = photo.shape[:2]
    crop_h = int(height * rng.uniform(0.5, 1.0))
    crop_w = min(width, int(crop_h * rng.uniform(1.0, 1.5)))
    top, left = int(rng.integers(0, height - crop_h + 1)), int(rng.integers(0, width - crop_w + 1))
    image = Image.fromarray(photo[top : top + crop_h, left : left + crop_w])
    image = image.rotate(float(rng.uniform(-12, 12)), resample=Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    side = int(rng.integers(300, 420))
    size = (side, max(64, round(side * image.height / image.width)))
    main = np.asarray(image.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    other = photos[str(rng.choice(DISTRACTORS))]
    other = np.asarray(Image.fromarray(other).resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    blend = rng.uniform(0.0, 0.35)
    pixels = ((1 - blend) * main + blend * other) * rng.uniform(0.8, 1.2, size=3) + rng.uniform(-15, 15)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def distinct_photos(count: int, label: str, seed: int, taken: list[int]) -> list[bytes]:
    """`count` JPEGs of `label`, each > MIN_DISTANCE pHash bits from every hash in `taken` (extended)."""
    photos, rng, out = _photos(), np.random.default_rng(seed), []
    for _ in range(count * 40):
        if len(out) == count:
            return out
        image = _render(rng, photos, label)
        value = hashing.phash(image)
        if all(hashing.hamming(value, other) > MIN_DISTANCE for other in taken):
            taken.append(value)
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=90)
            out.append(buffer.getvalue())
    raise RuntimeError(f"could not render {count} distinct {label} photos")


def write_photo_folder(root: Path, seed: int = 0) -> Path:
    """ROOT/{train,val}/{cat,coffee}/NNN.jpg of pairwise-distinct real photos; returns ROOT."""
    taken: list[int] = []
    for index, (split, count) in enumerate(SPLIT_COUNTS.items()):
        for offset, label in enumerate(LABELS):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for k, data in enumerate(distinct_photos(count, label, seed * 100 + index * 10 + offset, taken)):
                (folder / f"{k:03d}.jpg").write_bytes(data)
    return root


def photos_of(folder: Path, label: str, count: int, split: str = "train") -> list[Path]:
    """The first `count` photos of a label in a split of the folder."""
    found = sorted((folder / split / label).glob("*.jpg"))[:count]
    if len(found) < count:
        raise ValueError(f"{folder / split / label} has {len(found)} photos, {count} wanted")
    return found
