"""The backend-neutral input pipeline: decoded pixels, batches, shuffling, padding, augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from pocketml.dataset import load_images

SIZE = 48


@pytest.fixture(scope="module")
def splits(photos_dir):
    from pocketml.training.data import load_splits

    return load_splits(photos_dir)


@pytest.fixture(scope="module")
def train_images(splits):
    from pocketml.training.data import decoded_images

    return decoded_images(splits.train, SIZE)


def test_decoded_and_lazy_images_are_load_image_pixels(splits, train_images):
    from pocketml.training.data import LazyImages, split_images

    expected = load_images(splits.train.paths[:5], (SIZE, SIZE))
    assert train_images.dtype == np.uint8 and train_images.shape == (96, SIZE, SIZE, 3)
    assert np.array_equal(train_images[:5], expected)
    lazy = LazyImages(splits.train.paths, SIZE)
    assert len(lazy) == 96 and np.array_equal(lazy[np.array([4, 0])], expected[[4, 0]])
    cached, streamed = split_images([splits.train, splits.val], SIZE, budget=96 * SIZE * SIZE * 3)
    assert isinstance(cached, np.ndarray) and isinstance(streamed, LazyImages), "the budget holds only the first split"


def test_inference_batches_keep_order_and_pad_to_one_shape(splits, train_images):
    from pocketml.training.loader import ImageBatches

    batches = ImageBatches(train_images, 40, workers=1)
    shapes = [batches[i].shape for i in range(len(batches))]
    assert len(batches) == 3 and shapes == [(40, SIZE, SIZE, 3)] * 3, "partial last batch padded"
    assert np.array_equal(batches[0], train_images[:40]) and np.array_equal(batches[2][:16], train_images[80:])
    assert np.array_equal(batches[2][16:], np.repeat(train_images[95:], 24, axis=0))


def test_training_batches_reshuffle_each_epoch_and_see_every_image(splits, train_images):
    from pocketml.training.loader import ImageBatches

    def epoch_batches(batches):
        out = [batches[i] for i in range(len(batches))]
        batches.on_epoch_end()
        return out

    def make():
        return ImageBatches(train_images, 32, labels=splits.train.labels, class_weights={0: 0.5, 1: 2.0},
                            shuffle=True, seed=3, workers=1)

    batches = make()
    first = epoch_batches(batches)
    second = epoch_batches(batches)
    x, y, w = first[0]
    assert x.shape == (32, SIZE, SIZE, 3) and y.dtype == np.int32 and w.dtype == np.float32
    assert np.array_equal(w, np.where(y == 0, 0.5, 2.0))
    position = {image.tobytes(): i for i, image in enumerate(train_images)}
    seen = [position[image.tobytes()] for batch in first for image in batch[0]]
    assert sorted(seen) == list(range(96)), "one epoch is one permutation of the training set"
    assert not np.array_equal(first[0][1], second[0][1]) or not np.array_equal(first[0][0], second[0][0])
    again = epoch_batches(make())
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, again, strict=True)), "same seed, same order"


def test_fixed_steps_per_epoch_cycle_through_the_set(splits, train_images):
    from pocketml.training.loader import ImageBatches

    batches = ImageBatches(train_images, 64, labels=splits.train.labels, shuffle=True, steps=5, workers=1)
    position = {image.tobytes(): i for i, image in enumerate(train_images)}
    seen = [position[image.tobytes()] for i in range(5) for image in batches[i][0]]
    assert len(batches) == 5 and len(seen) == 320
    counts = np.bincount(seen, minlength=96)
    assert counts.min() >= 3 and counts.max() <= 4, "320 draws from 96 images: 3 or 4 each"


def test_augmentation_changes_training_batches_only(train_images):
    import keras
    from pocketml.training.augment import Augment, AugmentedTrainer

    inputs = keras.Input((SIZE, SIZE, 3))
    identity = keras.Model(inputs, keras.layers.Identity()(inputs))
    trainer = AugmentedTrainer(identity, Augment(), seed=1)
    clean = train_images[:8]
    augmented = np.asarray(trainer(clean, training=True))
    assert augmented.shape == clean.shape and augmented.min() >= 0 and augmented.max() <= 255
    assert np.abs(augmented - clean).mean() > 1.0
    assert np.array_equal(np.asarray(trainer(clean, training=False)), clean.astype(np.float32))
    assert AugmentedTrainer(identity, None).augmentation == []


def test_augmented_features_differ_per_pass_and_clean_features_match(splits, train_images):
    import keras
    from pocketml.training.augment import Augment, AugmentedFeatures
    from pocketml.training.loader import predict_images

    inputs = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    extractor = keras.Model(inputs, pooled)
    augmenter = AugmentedFeatures(extractor, Augment(flip=False, rotation=0.0, zoom=0.0), seed=2)
    first, second = (predict_images(augmenter, train_images, 32, workers=1) for _ in range(2))
    clean = predict_images(extractor, train_images, 32, workers=1)
    assert first.shape == clean.shape == (96, 3)
    np.testing.assert_allclose(clean, train_images.reshape(96, -1, 3).mean(axis=1), rtol=1e-5)
    assert np.abs(first - clean).max() > 1.0 and np.abs(first - second).max() > 1.0


def test_wrappers_are_built_before_keras_sees_any_batch(train_images):
    """Keras' JAX predict builds an unbuilt model on the first batch and cannot rewind a threaded
    PyDataset: outputs would shift by a batch. Built at construction, nothing is consumed."""
    import keras
    from pocketml.training.augment import Augment, AugmentedFeatures, AugmentedTrainer

    inputs = keras.Input((SIZE, SIZE, 3))
    inner = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    for wrapper in (AugmentedFeatures(inner, Augment()), AugmentedTrainer(inner, Augment()), AugmentedFeatures(inner, None)):
        assert all(layer.built for layer in wrapper._flatten_layers()), type(wrapper).__name__
