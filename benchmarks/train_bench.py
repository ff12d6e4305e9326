"""Frozen-phase training: head on cached features (pocketml's fast path) vs plain `fit` on images.

Same data (the shared hot-dog photos, 200 train / 50 val), same backbone (the shared MobileNetV2
alpha 0.35 ImageNet .h5), same epochs, same augmentation, same seed, and the same decoded images
(JPEG decoding is done once, timed separately, and handed to both arms). The plain baseline runs
the frozen backbone forward on every image in every epoch; the fast path runs it once per cached
copy and then fits the head on arrays. Prints wall and CPU seconds (CPU time, summed over the
process's threads, is the steadier figure on a shared machine), the speed-ups, both validation
accuracies, and a closing RESULT line.

    .venv/bin/python -m benchmarks.train_bench
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from benchmarks.common import machine_info, print_result, shared_data  # noqa: E402

# pocketml train's defaults (TrainConfig): the figures describe what a user's run gets.
IMAGE_SIZE = 224  # px
EPOCHS = 30  # head epochs in both arms (no early stopping, so both do the same work)
COPIES = 2  # augmented copies cached by the fast path (plus one clean copy)
WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"


def _config(weights: str):
    from pocketml.configs.train import TrainConfig

    return TrainConfig(backbone="mobilenet_v2", alpha=0.35, weights=weights, image_size=IMAGE_SIZE, batch_size=32,
                       epochs_frozen=EPOCHS, epochs_finetune=0, feature_cache_copies=COPIES, patience=EPOCHS)


def _classifier(config, classes: int):
    import keras

    from training.backbones import get_backbone, resolve_weights
    from training.train import _build

    keras.utils.set_random_seed(config.seed)
    backbone = get_backbone(config.backbone)
    return _build(backbone, resolve_weights(backbone, config.weights, config.alpha, config.image_size), config, classes)


def _val_accuracy(classifier, splits, val_images, config) -> float:
    from training.evaluate import metrics

    probs = classifier.predict(val_images.astype("float32"), batch_size=config.batch_size, verbose=0)
    return metrics(splits.val.labels, probs.argmax(axis=1), splits.labels)["accuracy"]


class Timer:
    """Wall and process-CPU seconds of a block."""

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def fast_path(splits, decoded, config) -> tuple[Timer, float]:
    from training.train import fit_head_on_cached_features

    classifier = _classifier(config, len(splits.labels))
    with Timer() as timer:
        fit_head_on_cached_features(classifier, splits, config, decoded)
    return timer, _val_accuracy(classifier, splits, decoded[1], config)


def plain_fit(splits, decoded, config) -> tuple[Timer, float]:
    import keras

    from training.data import Augment, array_dataset, class_weights
    from training.train import backbone_of

    classifier = _classifier(config, len(splits.labels))
    timer = Timer().__enter__()
    backbone_of(classifier).trainable = False
    classifier.compile(keras.optimizers.Adam(config.lr_frozen), "sparse_categorical_crossentropy", metrics=["accuracy"])
    train_ds = array_dataset(decoded[0], splits.train.labels, config.batch_size, shuffle=True,
                             augment=Augment.from_config(config), seed=config.seed)
    val_ds = array_dataset(decoded[1], splits.val.labels, config.batch_size)
    classifier.fit(train_ds, validation_data=val_ds, epochs=config.epochs_frozen, shuffle=False,
                   class_weight=class_weights(splits), verbose=0)
    timer.__exit__()
    return timer, _val_accuracy(classifier, splits, decoded[1], config)


def main() -> None:
    from pocketml.console import print_table
    from training.data import decoded_images, load_splits

    splits = load_splits(shared_data("hotdog"))
    config = _config(str(shared_data("weights", WEIGHTS)))
    started = time.perf_counter()
    decoded = (decoded_images(splits.train, IMAGE_SIZE), decoded_images(splits.val, IMAGE_SIZE))
    decode_s = time.perf_counter() - started
    plain, plain_acc = plain_fit(splits, decoded, config)
    fast, fast_acc = fast_path(splits, decoded, config)
    print_table(
        f"frozen phase: {EPOCHS} epochs, MobileNetV2 a0.35 {IMAGE_SIZE}px, {len(splits.train)} train / "
        f"{len(splits.val)} val (decoding {decode_s:.1f} s, shared, not counted)",
        ("method", "wall s", "CPU s", "val accuracy", "speed-up wall", "speed-up CPU"),
        [("plain fit (baseline)", plain.wall, plain.cpu, plain_acc, 1.0, 1.0),
         (f"cached features (K={COPIES})", fast.wall, fast.cpu, fast_acc, plain.wall / fast.wall, plain.cpu / fast.cpu)],
    )
    print_result({
        "benchmark": "train_frozen_phase",
        "epochs": EPOCHS,
        "image_size": IMAGE_SIZE,
        "train_images": len(splits.train),
        "decode_s": round(decode_s, 2),
        "plain_fit_wall_s": round(plain.wall, 2),
        "plain_fit_cpu_s": round(plain.cpu, 2),
        "cached_features_wall_s": round(fast.wall, 2),
        "cached_features_cpu_s": round(fast.cpu, 2),
        "speedup_wall": round(plain.wall / fast.wall, 2),
        "speedup_cpu": round(plain.cpu / fast.cpu, 2),
        "plain_val_accuracy": plain_acc,
        "cached_val_accuracy": fast_acc,
        "accuracy_delta": round(fast_acc - plain_acc, 4),
        "goal_speedup": 5.0,
        "machine": machine_info(),
    })


if __name__ == "__main__":
    main()
