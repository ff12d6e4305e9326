"""Training input, framework-free: dataset records -> splits -> decoded uint8 images.

Images are decoded by `pocketml.dataset.load_image` itself (EXIF rotation, alpha on white,
aspect-preserving resize of the shorter side, centre crop), so training, evaluation, export
validation and benchmarks all see exactly the same pixels for one file. Decoding runs on a thread
pool (PIL releases the GIL while it decodes and resizes). A split whose decoded pixels fit in the
cache budget is decoded once and kept in RAM as one uint8 array; a bigger one is decoded batch by
batch on demand (`LazyImages`). Batching, prefetch and augmentation are in training.loader and
training.augment; nothing here imports keras, TensorFlow or JAX.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pocketml.dataset import ImageRecord, labels_of, load_image, read_records
from pocketml.errors import PocketMLError

CACHE_LIMIT_BYTES = 16 << 30  # decoded uint8 pixels of one run kept in RAM at most (bytes)...
CACHE_RAM_FRACTION = 0.5  # ...and at most this share of the memory available when training starts


@dataclass(frozen=True)
class Split:
    """One split as parallel lists: file paths and class indices into the label list."""

    paths: tuple[str, ...]
    labels: np.ndarray  # int32 [N]

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class DatasetSplits:
    labels: tuple[str, ...]  # class names, sorted (index = class id)
    train: Split
    val: Split
    test: Split | None  # None: evaluation falls back to val

    @property
    def eval_name(self) -> str:
        return "test" if self.test is not None else "val"

    @property
    def eval_split(self) -> Split:
        return self.test if self.test is not None else self.val

    def class_counts(self) -> dict[str, int]:
        counts = Counter(self.train.labels.tolist())
        return {label: counts.get(i, 0) for i, label in enumerate(self.labels)}


def load_splits(dataset_dir: str | Path) -> DatasetSplits:
    """Train/val/test of a curated dataset dir or an ImageFolder, checked for what training needs."""
    records = [r for r in read_records(dataset_dir) if r.label is not None]
    by_split = {name: [r for r in records if r.split == name] for name in ("train", "val", "test")}
    missing = [name for name in ("train", "val") if not by_split[name]]
    if missing:
        raise PocketMLError(
            f"{dataset_dir} has no {' or '.join(missing)} split; training needs train and val "
            "(manifest.csv split column, or train/ and val/ folders of class folders)"
        )
    labels = tuple(labels_of(records))
    if len(labels) < 2:
        raise PocketMLError(f"{dataset_dir} has {len(labels)} class ({', '.join(labels)}); training needs at least 2")
    trained = {r.label for r in by_split["train"]}
    empty = [label for label in labels if label not in trained]
    if empty:
        raise PocketMLError(f"class(es) {', '.join(empty)} have no training images; add some or remove the class")
    return DatasetSplits(
        labels=labels,
        train=_split(by_split["train"], labels),
        val=_split(by_split["val"], labels),
        test=_split(by_split["test"], labels) if by_split["test"] else None,
    )


def _split(records: list[ImageRecord], labels: tuple[str, ...]) -> Split:
    index = {label: i for i, label in enumerate(labels)}
    return Split(tuple(str(r.path) for r in records), np.array([index[r.label] for r in records], dtype=np.int32))


def class_weights(splits: DatasetSplits) -> dict[int, float]:
    """Inverse-frequency weights (mean 1 over the training images), so a rare class still counts."""
    counts = splits.class_counts()
    total, classes = sum(counts.values()), len(counts)
    return {i: total / (classes * counts[label]) for i, label in enumerate(splits.labels)}


def decode_threads() -> int:
    return max(2, min(16, os.cpu_count() or 1))


def decode_many(paths: Sequence[str], size: int) -> np.ndarray:
    """uint8 [N, size, size, 3] of `paths`, decoded in parallel, in order."""
    out = np.empty((len(paths), size, size, 3), np.uint8)
    if not paths:
        return out
    with ThreadPoolExecutor(min(decode_threads(), len(paths))) as pool:
        for i, image in enumerate(pool.map(lambda p: load_image(p, (size, size)), paths)):
            out[i] = image
    return out


def decoded_images(split: Split, size: int) -> np.ndarray:
    """uint8 [N, size, size, 3] of the whole split, decoded in parallel."""
    return decode_many(split.paths, size)


class LazyImages:
    """A split too big for RAM, indexed like the decoded array: images[indices] decodes just those."""

    def __init__(self, paths: Sequence[str], size: int) -> None:
        self.paths, self.size = tuple(paths), size
        self.shape = (len(self.paths), size, size, 3)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, indices) -> np.ndarray:
        return decode_many([self.paths[i] for i in np.atleast_1d(indices)], self.size)


def available_memory_bytes() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return CACHE_LIMIT_BYTES  # no sysconf (Windows): the fixed budget alone decides


def cache_budget_bytes() -> int:
    """Bytes of decoded pixels one training run may keep in RAM."""
    return int(min(CACHE_LIMIT_BYTES, CACHE_RAM_FRACTION * available_memory_bytes()))


def split_images(splits: Sequence[Split], size: int, budget: int | None = None) -> list[np.ndarray | LazyImages]:
    """Each split's images: decoded arrays while they fit in `budget` bytes together (first splits
    first), LazyImages for the rest, so every epoch after the first reads RAM instead of files."""
    budget = cache_budget_bytes() if budget is None else budget
    out: list[np.ndarray | LazyImages] = []
    for split in splits:
        need = len(split) * size * size * 3
        if need <= budget:
            out.append(decoded_images(split, size))
            budget -= need
        else:
            out.append(LazyImages(split.paths, size))
    return out
