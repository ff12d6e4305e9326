"""Calibration images for full-integer quantisation: an ImageFolder or a flat folder of images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pocketml.dataset import load_images, read_records
from pocketml.errors import PocketMLError

DEFAULT_COUNT = 200  # enough for stable activation ranges; the issue asks for >= 100 when available
SEED = 0  # fixed so a re-export calibrates on the same images and yields the same file


@dataclass
class CalibrationSet:
    source: Path
    paths: list[Path]
    labels: list[str | None]  # class folder of each image (None for a flat folder)
    images: np.ndarray  # uint8 [N,H,W,3] RGB, the model's input size

    def to_dict(self) -> dict:
        """What the export manifest records, so validate can reuse exactly these images."""
        return {"source": str(self.source), "images": [str(p) for p in self.paths], "labels": self.labels}


def chosen_indices(total: int, count: int) -> np.ndarray:
    """Sorted indices of `count` of `total` items, the same on every run."""
    if total <= count:
        return np.arange(total)
    return np.sort(np.random.default_rng(SEED).choice(total, size=count, replace=False))


def load_calibration(folder: str | Path, size: tuple[int, int], count: int = DEFAULT_COUNT) -> CalibrationSet:
    """Up to `count` images of `folder` (ImageFolder with or without splits, or flat) at `size`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PocketMLError(f"calibration folder {folder} does not exist; give an ImageFolder or a folder of images")
    records = read_records(folder)  # raises a one-line error for a folder without images
    if not records:
        raise PocketMLError(f"calibration folder {folder} holds no images; give an ImageFolder or a folder of images")
    chosen = [records[i] for i in chosen_indices(len(records), count)]
    paths = [r.path.resolve() for r in chosen]
    return CalibrationSet(folder.resolve(), paths, [r.label for r in chosen], load_images(paths, size))
