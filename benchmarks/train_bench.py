"""Training speed on this CPU, two comparisons in one run, each against a baseline measured here.

1. Frozen phase: head on cached features (pocketml's fast path) vs plain `fit` on images. Same
   data (the shared hot-dog photos, 200 train / 50 val), same backbone (the shared MobileNetV2
   alpha 0.35 ImageNet .h5), same epochs, same augmentation, same seed, and the same decoded
   images (JPEG decoding is done once, timed separately, and handed to both arms). The plain
   baseline runs the frozen backbone forward on every image in every epoch; the fast path runs it
   once per cached copy and then fits the head on arrays. Wall and CPU seconds (CPU time, summed
   over the process's threads, is the steadier figure on a shared machine), speed-ups, both
   validation accuracies.
2. Backends: `pocketml train` with EfficientNet-Lite0 at 224 px on the same photos, on TensorFlow
   (this process, the baseline) and on JAX (a subprocess, as `--backend jax` runs): images/s of
   phase 1 (feature passes) and phase 2 (fine-tuning steps), compile time left out, from each
   run's training.json, and both val accuracies.

Ends with one RESULT line.

    .venv/bin/python benchmarks/train_bench.py
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from pocketml.benchmarks.common import machine_info, print_result, shared_data  # noqa: E402

# pocketml train's defaults (TrainConfig): the figures describe what a user's run gets.
IMAGE_SIZE = 224  # px
EPOCHS = 30  # head epochs in both arms (no early stopping, so both do the same work)
COPIES = 2  # augmented copies cached by the fast path (plus one clean copy)
WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
BACKEND_FINETUNE_EPOCHS = 2  # phase-2 epochs per backend: the first compiles, the second is timed


def _config(weights: str):
    from pocketml.configs.train import TrainConfig

    return TrainConfig(backbone="mobilenet_v2", alpha=0.35, weights=weights, image_size=IMAGE_SIZE, batch_size=32,
                       epochs_frozen=EPOCHS, epochs_finetune=0, feature_cache_copies=COPIES, patience=EPOCHS)


def _classifier(config, classes: int):
    from pocketml.training.devices import seed_everything
    from pocketml.training.train import new_classifier

    seed_everything(config.seed)
    return new_classifier(config, classes)


def _val_accuracy(classifier, splits, val_images, config) -> float:
    from pocketml.training.evaluate import metrics
    from pocketml.training.loader import predict_images

    probs = predict_images(classifier, val_images, config.batch_size)
    return metrics(splits.val.labels, probs.argmax(axis=1), splits.labels)["accuracy"]


class Timer:
    """Wall and process-CPU seconds of a block."""

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def fast_path(splits, decoded, config) -> tuple[Timer, float]:
    from pocketml.training.devices import device_plan
    from pocketml.training.train import fit_head_on_cached_features

    classifier = _classifier(config, len(splits.labels))
    plan = device_plan(config, len(splits.train))
    with Timer() as timer:
        fit_head_on_cached_features(classifier, splits, config, plan, decoded)
    return timer, _val_accuracy(classifier, splits, decoded[1], config)


def plain_fit(splits, decoded, config) -> tuple[Timer, float]:
    import keras
    from pocketml.training.augment import Augment, AugmentedTrainer
    from pocketml.training.data import class_weights
    from pocketml.training.loader import ImageBatches
    from pocketml.training.train import backbone_of

    classifier = _classifier(config, len(splits.labels))
    timer = Timer().__enter__()
    backbone_of(classifier).trainable = False
    trainer = AugmentedTrainer(classifier, Augment.from_config(config), seed=config.seed)
    trainer.compile(keras.optimizers.Adam(config.lr_frozen), "sparse_categorical_crossentropy", metrics=["accuracy"])
    train_batches = ImageBatches(decoded[0], config.batch_size, labels=splits.train.labels,
                                 class_weights=class_weights(splits), shuffle=True, seed=config.seed)
    val_batches = ImageBatches(decoded[1], config.batch_size, labels=splits.val.labels)
    trainer.fit(train_batches, validation_data=val_batches, epochs=config.epochs_frozen, shuffle=False, verbose=0)
    timer.__exit__()
    return timer, _val_accuracy(classifier, splits, decoded[1], config)


def frozen_phase(splits) -> dict:
    from pocketml.training.data import decoded_images

    from pocketml.console import print_table

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
    return {
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
    }


def backend_run(backend: str, data: Path, out: Path) -> dict:
    """One `train` on `backend`: images/s of both phases (from training.json) and val accuracy."""
    from pocketml.training.train import train

    from pocketml.configs.train import TrainConfig

    config = TrainConfig(backbone="efficientnet_lite0", weights="imagenet", image_size=IMAGE_SIZE, batch_size=25,
                         epochs_frozen=EPOCHS, epochs_finetune=BACKEND_FINETUNE_EPOCHS, unfreeze_blocks=1,
                         feature_cache_copies=1, patience=EPOCHS, backend=backend)
    started = time.perf_counter()
    train(data, out, config)
    seconds = time.perf_counter() - started
    run = json.loads((out / "training.json").read_text())
    frozen, finetune = run["phases"]
    return {"phase1_images_per_s": frozen["images_per_s"], "phase2_images_per_s": finetune["images_per_s"],
            "phase1_first_pass_s": frozen["first_pass_seconds"], "phase2_first_epoch_s": finetune["first_epoch_seconds"],
            "val_accuracy": json.loads((out / "eval.json").read_text())["accuracy"], "seconds": round(seconds, 1)}


def backends(data: Path) -> dict:
    from pocketml.console import print_table

    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        runs = {name: backend_run(name, data, Path(tmp) / name) for name in ("tensorflow", "jax")}
    tf, jax = runs["tensorflow"], runs["jax"]
    print_table(
        f"backends on this CPU: EfficientNet-Lite0 {IMAGE_SIZE}px, phase 1 = 2 feature passes, phase 2 = "
        f"{BACKEND_FINETUNE_EPOCHS} epochs (compile left out)",
        ("backend", "phase 1 images/s", "phase 2 images/s", "val accuracy", "seconds", "phase 2 vs TF"),
        [(name, r["phase1_images_per_s"], r["phase2_images_per_s"], r["val_accuracy"], r["seconds"],
          r["phase2_images_per_s"] / tf["phase2_images_per_s"]) for name, r in runs.items()],
    )
    return {
        "backends": runs,
        "jax_vs_tf_phase1": round(jax["phase1_images_per_s"] / tf["phase1_images_per_s"], 3),
        "jax_vs_tf_phase2": round(jax["phase2_images_per_s"] / tf["phase2_images_per_s"], 3),
        "jax_minus_tf_val_accuracy": round(jax["val_accuracy"] - tf["val_accuracy"], 4),
    }


def main() -> None:
    from pocketml.training.data import load_splits

    data = shared_data("hotdog")
    figures = {"benchmark": "train_frozen_phase_and_backends", **frozen_phase(load_splits(data)), **backends(data)}
    print_result({**figures, "machine": machine_info()})


if __name__ == "__main__":
    main()
