"""The training input pipeline: dataset records -> tf.data batches of (RGB 0..255 float32, class index).

Images are decoded by `pocketml.dataset.load_image` itself (EXIF rotation, alpha on white,
aspect-preserving resize of the shorter side, centre crop), so training, evaluation, export
validation and benchmarks all see exactly the same pixels for one file. Augmentation runs here,
on training batches only; the saved model never contains it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pocketml.dataset import ImageRecord, labels_of, load_image, read_records
from pocketml.errors import PocketMLError

CACHE_LIMIT_BYTES = 1 << 30  # decoded uint8 images kept in memory between epochs below this total


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


@dataclass(frozen=True)
class Augment:
    flip: bool = True
    rotation: float = 0.05  # fraction of a full turn
    zoom: float = 0.1  # fraction of the side
    brightness: float = 0.1  # fraction of the 0..255 range
    contrast: float = 0.1  # contrast factor deviation

    @classmethod
    def from_config(cls, config) -> Augment | None:
        if not config.augment:
            return None
        return cls(config.augment_flip, config.augment_rotation, config.augment_zoom,
                   config.augment_brightness, config.augment_contrast)

    def layers(self, seed: int):
        """Keras preprocessing layers (run inside tf.data, not in the model), each with its own seed."""
        import keras

        out = []
        if self.flip:
            out.append(keras.layers.RandomFlip("horizontal", seed=seed))
        if self.rotation > 0:
            out.append(keras.layers.RandomRotation(self.rotation, fill_mode="reflect", seed=seed + 1))
        if self.zoom > 0:
            out.append(keras.layers.RandomZoom(self.zoom, fill_mode="reflect", seed=seed + 2))
        if self.brightness > 0:
            out.append(keras.layers.RandomBrightness(self.brightness, value_range=(0, 255), seed=seed + 3))
        if self.contrast > 0:
            out.append(keras.layers.RandomContrast(self.contrast, value_range=(0, 255), seed=seed + 4))
        return out


def _decoder(size: int):
    import tensorflow as tf

    def decode(path, label):
        image = tf.numpy_function(lambda p: load_image(p.decode(), (size, size)), [path], tf.uint8, stateful=False)
        image.set_shape((size, size, 3))
        return image, label

    return decode


def decoded_images(split: Split, size: int, batch_size: int = 32) -> np.ndarray:
    """uint8 [N, size, size, 3] of the whole split, decoded in parallel by the file pipeline."""
    batches = [x.numpy().astype(np.uint8) for x, _ in image_dataset(split, size, batch_size)]
    return np.concatenate(batches) if batches else np.zeros((0, size, size, 3), np.uint8)


def array_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int, *, shuffle: bool = False,
                  augment: Augment | None = None, seed: int = 0):
    """Like image_dataset, from already-decoded uint8 images (several passes over one decode)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    return _batched(ds, len(labels), batch_size, shuffle, augment, seed)


def image_dataset(
    split: Split,
    size: int,
    batch_size: int,
    *,
    shuffle: bool = False,
    augment: Augment | None = None,
    seed: int = 0,
):
    """tf.data batches (float32 [B, size, size, 3] in 0..255, int32 [B]); augmented only when `augment`."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((list(split.paths), split.labels))
    ds = ds.map(_decoder(size), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if len(split) * size * size * 3 <= CACHE_LIMIT_BYTES:
        ds = ds.cache()  # decode each file once, not once per epoch
    return _batched(ds, len(split), batch_size, shuffle, augment, seed)


def _batched(ds, count: int, batch_size: int, shuffle: bool, augment: Augment | None, seed: int):
    """Shuffle, batch, cast to float32 0..255, augment (training only), prefetch."""
    import tensorflow as tf

    if shuffle:
        ds = ds.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    if augment is not None:
        layers = augment.layers(seed)

        def apply(x, y):
            for layer in layers:
                x = layer(x, training=True)
            return tf.clip_by_value(x, 0.0, 255.0), y

        ds = ds.map(apply, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
