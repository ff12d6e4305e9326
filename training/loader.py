"""Batches for Keras on any backend: a keras.utils.PyDataset over decoded uint8 images.

No tf.data, so the JAX path never imports TensorFlow. Keras runs `__getitem__` on `workers`
threads and keeps up to `max_queue_size` batches ready (prefetch); on a GPU the JAX trainer
also copies the next batch to the device while the current step runs. The images come from
training.data.split_images: one in-RAM array when the split fits (a batch is a memory copy), or
LazyImages that decode just the batch's files.

Every batch has the same shape, so a compiled step is traced once (a partial last batch would
compile a second program, and with data parallelism could not be split across devices):
- training (shuffle=True): an epoch takes `steps` batches from an endless stream of per-epoch
  permutations (seeded), so every image is seen equally often and none is dropped for good;
- inference: images in order, the last batch padded with repeats; callers keep the first N outputs.

Imports keras at module level: import this module only once the backend is decided.
"""

from __future__ import annotations

import math
import threading
import time

import keras
import numpy as np


class ImageBatches(keras.utils.PyDataset):
    """uint8 [B, S, S, 3] images, plus int32 labels and float32 per-sample weights when given."""

    def __init__(self, images, batch_size: int, *, labels: np.ndarray | None = None,
                 class_weights: dict[int, float] | None = None, shuffle: bool = False, seed: int = 0,
                 steps: int = 0, workers: int = 2) -> None:
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max(4, 2 * workers))
        self.images, self.batch_size, self.labels, self.shuffle = images, batch_size, labels, shuffle
        self.sample_weights = None
        if class_weights is not None and labels is not None:
            self.sample_weights = np.array([class_weights[int(y)] for y in labels], np.float32)
        self.count = len(images)
        self._batches = steps if shuffle and steps else math.ceil(self.count / batch_size)
        self._rng = np.random.default_rng(seed)
        self._stream = np.empty(0, np.int64)
        self._lock = threading.Lock()
        self.loader_seconds = 0.0  # summed over worker threads: time spent producing batches
        self._order = self._next_order()

    @property
    def num_batches(self) -> int:
        return self._batches

    def __len__(self) -> int:
        return self._batches

    def _next_order(self) -> np.ndarray:
        need = self._batches * self.batch_size
        if not self.shuffle:
            order = np.arange(self.count)
            return np.concatenate([order, np.full(need - self.count, self.count - 1)]) if need > self.count else order
        while len(self._stream) < need:
            self._stream = np.concatenate([self._stream, self._rng.permutation(self.count)])
        order, self._stream = self._stream[:need], self._stream[need:]
        return order

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self._order = self._next_order()

    def __getitem__(self, index: int):
        started = time.perf_counter()
        chosen = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        batch = (np.asarray(self.images[chosen], dtype=np.uint8),)
        if self.labels is not None:
            batch += (self.labels[chosen].astype(np.int32),)
            if self.sample_weights is not None:
                batch += (self.sample_weights[chosen],)
        with self._lock:
            self.loader_seconds += time.perf_counter() - started
        return batch if len(batch) > 1 else batch[0]


def predict_images(model, images, batch_size: int, workers: int = 2) -> np.ndarray:
    """model.predict over `images` (array or LazyImages) in full batches of `batch_size` (one
    compiled shape for every split); float32 [N, ...]."""
    batches = ImageBatches(images, batch_size, workers=workers)
    return np.asarray(model.predict(batches, verbose=0), dtype=np.float32)[: batches.count]
