"""Real photos for tests on any clone: an ImageFolder rendered from scikit-image's public-domain photos.

`../shared/data` (the hot-dog photos) exists for CI and benchmarks, not for a user's clone, so the
tests that need real photos (real-weight parity, int8 calibration, training) use this instead.
Every image is a crop of a real CC0 / public-domain photograph shipped inside scikit-image
(chelsea: CC0, Stefan van der Walt; coffee: CC0, Rachel Michetti; astronaut, rocket, hubble: public
domain), with a random position, size, rotation, flip, colour shift and a blend of another photo, so features vary from image to image and some decisions sit near the boundary, as they do
with real data. The same seed gives byte-identical files.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

# class -> the photographs its images are cut from
CLASSES = {"cat": ("chelsea",), "coffee": ("coffee",)}
DISTRACTORS = ("astronaut", "rocket", "hubble_deep_field")
SPLIT_COUNTS = {"train": 48, "val": 16, "test": 16}  # images per class
SIDE = 128  # px of the stored JPEGs (the models under test run at 64-128 px)


def _photo(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    return image[..., :3] if image.ndim == 3 else np.stack([image] * 3, axis=-1)


def _crop(photo: np.ndarray, rng: np.random.Generator):
    from PIL import Image

    height, width = photo.shape[:2]
    side = int(min(height, width) * rng.uniform(0.45, 1.0))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    image = Image.fromarray(photo[top : top + side, left : left + side])
    image = image.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image.resize((SIDE, SIDE), Image.Resampling.BILINEAR)


def render(rng: np.random.Generator, photos: dict[str, np.ndarray], label: str) -> bytes:
    """One JPEG of class `label`."""
    from PIL import Image

    main = np.asarray(_crop(photos[str(rng.choice(CLASSES[label]))], rng), dtype=np.float32)
    # Half the images carry a faint copy of the other class, the rest of an unrelated photo: up to
    # 55 % of another picture makes some images genuinely hard, as real data has.
    rival = [name for other, names in CLASSES.items() if other != label for name in names]
    other_name = str(rng.choice(rival if rng.random() < 0.5 else DISTRACTORS))
    other = np.asarray(_crop(photos[other_name], rng), dtype=np.float32)
    blend = rng.uniform(0.0, 0.55)
    pixels = (1 - blend) * main + blend * other
    pixels = pixels * rng.uniform(0.75, 1.25, size=3) + rng.uniform(-20, 20)  # white balance, exposure
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def write_photo_folder(root: Path, seed: int = 0, counts: dict[str, int] | None = None) -> Path:
    """ROOT/{train,val,test}/{cat,coffee}/NNN.jpg; returns ROOT."""
    counts = counts or SPLIT_COUNTS
    photos = {name: _photo(name) for names in (*CLASSES.values(), DISTRACTORS) for name in names}
    rng = np.random.default_rng(seed)
    for split, count in counts.items():
        for label in CLASSES:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                (folder / f"{index:03d}.jpg").write_bytes(render(rng, photos, label))
    return root
