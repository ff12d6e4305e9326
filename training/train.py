"""Two-phase transfer learning on any Keras 3 backend: dataset directory in, an app-ready model directory out.

Phase 1 trains only the head on a frozen backbone. Because the backbone is frozen, its pooled
features for an image never change, so they are computed once (for a clean copy of the training
set plus `feature_cache_copies` augmented copies) and the head is fitted on those cached arrays:
each head epoch costs microseconds per image instead of a full backbone forward pass.
Phase 2 unfreezes the top N backbone blocks at a lower learning rate, BatchNorm kept in inference
mode, and is kept only if it beats phase 1 on validation loss.

The backend (TensorFlow by default, JAX for GPUs) is chosen before keras is imported
(training.devices); one other than this process's runs the same code in a subprocess
(training.backend_process). The input pipeline is numpy + Keras (training.loader), so nothing
here imports TensorFlow unless TensorFlow is the backend. Devices, precision, batch and data
parallelism come from training.devices.device_plan. The saved model is always float32 on one
device, so a model trained on JAX exports under TensorFlow like any other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pocketml.training import model as model_lib
from pocketml.training.backbones import (
    Backbone,
    Weights,
    build_backbone,
    check_config,
    get_backbone,
    resolve_weights,
)
from pocketml.training.data import DatasetSplits, class_weights, load_splits, split_images
from pocketml.training.devices import DevicePlan, process_backend, resolve_backend

from pocketml.configs.train import TrainConfig
from pocketml.console import console, print_table, progress, step_done
from pocketml.fsutil import (
    atomic_output,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    sha256_file,
)
from pocketml.spec import MODEL_FILE, ModelSpec

HISTORY_FILE = "history.csv"
HISTORY_PNG = "history.png"  # the training curves of history.csv
CONFIG_FILE = "train_config.json"
TRAINING_FILE = "training.json"  # backend, devices, precision, batch and per-phase speed of the run
HISTORY_COLUMNS = ("phase", "epoch", "loss", "accuracy", "val_loss", "val_accuracy")
EPSILON = 1e-7  # probability floor in the cross-entropy (Keras' own epsilon)


@dataclasses.dataclass
class PhaseResult:
    rows: list[dict]
    best_val_loss: float
    best_val_accuracy: float
    timing: dict = dataclasses.field(default_factory=dict)


def train(dataset_dir: str | Path, out_dir: str | Path, config: TrainConfig | None = None) -> Path:
    """Fine-tune `config.backbone` on `dataset_dir`; write model.keras, spec.json, labels.txt,
    history.csv, training.json and the evaluation files into `out_dir`. Returns `out_dir`."""
    config = config or TrainConfig()
    backend = resolve_backend(config.backend)
    if backend != process_backend():
        checked_inputs(dataset_dir, config)  # user errors before a second interpreter starts
        from pocketml.training.backend_process import train_in_backend

        return train_in_backend(backend, dataset_dir, out_dir, config)
    return _train_here(Path(dataset_dir), Path(out_dir), config)


def checked_inputs(dataset_dir: str | Path, config: TrainConfig) -> tuple[Backbone, DatasetSplits, Weights]:
    """Backbone, splits and weights, every user error raised before anything is written."""
    backbone, weights = check_config(config)
    return backbone, load_splits(dataset_dir), weights


def _train_here(dataset_dir: Path, out_dir: Path, config: TrainConfig) -> Path:
    from pocketml.training.devices import tensorflow_left_out

    from pocketml.console import library_output

    # Other libraries' output (TF/JAX/absl logs) goes to out_dir/libraries.log, pocketml's to the terminal.
    with library_output(out_dir), tensorflow_left_out():
        return _train(dataset_dir, out_dir, config)


def _train(dataset_dir: Path, out_dir: Path, config: TrainConfig) -> Path:
    from pocketml.training.devices import device_plan, seed_everything, weight_replicas

    started = time.perf_counter()
    backbone, splits, weights = checked_inputs(dataset_dir, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    plan = device_plan(config, len(splits.train))
    console.print(f"training on {plan.devices} x {plan.kind} ({plan.backend}, {plan.precision}, "
                  f"{plan.batch_size} images per step)")
    images = tuple(split_images([splits.train, splits.val], config.image_size))
    with plan.scope():
        classifier = new_classifier(config, len(splits.labels), weights)
    replicas = weight_replicas(classifier, plan)
    rows: list[dict] = []
    phases: list[dict] = []
    best = PhaseResult([], math.inf, 0.0)
    if config.epochs_frozen > 0:
        best = fit_head_on_cached_features(classifier, splits, config, plan, images)
        rows, phases = rows + best.rows, phases + [best.timing]
    if config.epochs_finetune > 0 and (config.unfreeze_blocks > 0 or config.epochs_frozen == 0):
        tuned = fine_tune(classifier, backbone, splits, config, plan, best.best_val_loss, images)
        rows, phases = rows + tuned.rows, phases + [tuned.timing]
        if tuned.best_val_loss < best.best_val_loss:
            best = tuned
    if plan.mixed or plan.devices > 1:
        classifier = float32_copy(classifier, config, len(splits.labels))

    save_model_dir(classifier, out_dir, splits, backbone, weights, config, rows)
    atomic_write_json(out_dir / TRAINING_FILE, {**plan.record(), "weight_replicas": replicas, "phases": phases})
    from pocketml.training.evaluate import evaluate_model

    eval_images = images[1] if splits.test is None else None
    report = evaluate_model(classifier, splits, out_dir, config.batch_size, eval_images)
    _print_summary(config, weights, plan, splits, best, report, time.perf_counter() - started)
    console.print(f"model directory: {out_dir} (model.keras, spec.json, labels.txt, history.csv + history.png, training.json, eval.json, PNGs)")
    return out_dir


def new_classifier(config: TrainConfig, num_classes: int, weights: Weights | None = None):
    """The classifier `train` starts from: the backbone with its weights (config.weights unless
    `weights` is given), the preprocessing in front and the pooled softmax head on top."""
    backbone = get_backbone(config.backbone)
    if weights is None:
        weights = resolve_weights(backbone, config.weights, config.alpha, config.image_size)
    alpha = config.alpha if backbone.uses_alpha else 1.0
    base = build_backbone(backbone, config.image_size, alpha, weights)
    return model_lib.build_classifier(base, backbone.normalization, num_classes, config.dropout)


def float32_copy(classifier, config: TrainConfig, num_classes: int):
    """The trained model rebuilt under float32 on one device, so exports never inherit bf16/fp16
    layers or a device layout."""
    copy = new_classifier(config, num_classes, Weights("none"))
    copy.set_weights(classifier.get_weights())
    return copy


def backbone_of(classifier):
    """The nested backbone model inside a classifier built by training.model.build_classifier."""
    import keras

    return next(layer for layer in classifier.layers if isinstance(layer, keras.Model))


def cached_features(extractor, images, labels: np.ndarray, config: TrainConfig, plan: DevicePlan,
                    copies: int, desc: str) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Pooled features of `images`: one clean pass plus `copies` augmented passes, their labels,
    and each pass's timing. Every pass is one compiled model.predict over prefetched batches; the
    augmented passes share one model whose seed state moves on, so each copy differs."""
    from pocketml.training.augment import Augment, AugmentedFeatures
    from pocketml.training.loader import predict_images

    augment = Augment.from_config(config)
    augmenter = AugmentedFeatures(extractor, augment, seed=config.seed) if augment and copies else None
    models = [extractor] + [augmenter] * (copies if augmenter else 0)
    features, passes = [], []
    with progress() as bar:
        task = bar.add_task(desc, total=len(models))
        for model in models:
            began, wall = time.perf_counter(), time.time()
            features.append(predict_images(model, images, plan.batch_size, plan.loader_workers))
            passes.append({"model": model.name, "images": len(images), "seconds": time.perf_counter() - began,
                           "started_at": wall, "ended_at": time.time()})
            bar.advance(task)
    return np.concatenate(features), np.tile(labels, len(models)), passes


def fit_head_on_cached_features(classifier, splits: DatasetSplits, config: TrainConfig, plan: DevicePlan,
                                images: tuple) -> PhaseResult:
    """Phase 1: fit Dropout+Dense on cached backbone features, then copy it into `classifier`.

    `images` are the train and val images (training.data.split_images). The features are computed
    on the plan's devices and precision; the head (microseconds per step) trains in float32 on one
    device with config.batch_size and lr_frozen, so phase 1 is the same optimisation everywhere.
    """
    import keras

    started, wall = time.perf_counter(), time.time()
    backbone_of(classifier).trainable = False
    extractor = model_lib.feature_extractor(classifier)
    with plan.scope():
        x_train, y_train, train_passes = cached_features(extractor, images[0], splits.train.labels, config, plan,
                                                         config.feature_cache_copies, "features: train")
        x_val, y_val, val_passes = cached_features(extractor, images[1], splits.val.labels, config, plan, 0,
                                                   "features: val")
    features_s = time.perf_counter() - started
    head = model_lib.build_head(x_train.shape[1], len(splits.labels), config.dropout)
    # Many steps per graph call: a head step takes microseconds, so per-step Python overhead would dominate.
    head.compile(keras.optimizers.Adam(config.lr_frozen), "sparse_categorical_crossentropy", metrics=["accuracy"],
                 steps_per_execution=32)
    stop = keras.callbacks.EarlyStopping("val_loss", patience=config.patience, restore_best_weights=True)
    # Per-sample weights rather than class_weight: Keras turns arrays + class_weight into a
    # tf.data pipeline and then ignores shuffle=True.
    weights = np.array([class_weights(splits)[int(y)] for y in y_train], dtype=np.float32)
    with epoch_progress("frozen", config.epochs_frozen) as report:
        history = head.fit(
            x_train, y_train, sample_weight=weights, batch_size=config.batch_size, epochs=config.epochs_frozen,
            shuffle=True, validation_data=(x_val, y_val), callbacks=[stop, report], verbose=0,
        )
    model_lib.copy_head(head, classifier)
    result = _phase_result("frozen", history.history)
    passes = train_passes + val_passes
    result.timing = {
        "phase": "frozen", **_throughput(passes), "feature_seconds": features_s,
        "head_seconds": time.perf_counter() - started - features_s, "seconds": time.perf_counter() - started,
        "started_at": wall, "ended_at": time.time(),
    }
    return result


def _throughput(passes: list[dict]) -> dict:
    """Images/s over the passes that reused a compiled model (all passes when none did): a model's
    first pass also traces and compiles its predict function."""
    first = {id(p) for p in {p["model"]: p for p in reversed(passes)}.values()}
    steady = [p for p in passes if id(p) not in first] or passes
    images, seconds = sum(p["images"] for p in steady), sum(p["seconds"] for p in steady)
    return {"images": sum(p["images"] for p in passes), "images_per_s": images / seconds if seconds else None,
            "first_pass_seconds": sum(p["seconds"] for p in passes if id(p) in first),
            "steady_started_at": min(p["started_at"] for p in steady),
            "steady_ended_at": max(p["ended_at"] for p in steady)}


def cross_entropy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean sparse categorical cross-entropy, as Keras computes val_loss."""
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, EPSILON, 1.0)).mean())


def fine_tune(classifier, backbone: Backbone, splits: DatasetSplits, config: TrainConfig, plan: DevicePlan,
              baseline_val_loss: float, images: tuple) -> PhaseResult:
    """Phase 2: unfreeze the top blocks (BatchNorm stays frozen) and train them with the head at lr_finetune.

    The best epoch is checkpointed; if no epoch beats `baseline_val_loss` (phase 1's best), the
    classifier keeps the weights it came in with. Validation runs in a callback on full batches
    (data parallelism cannot split a partial one) and scores exactly the val images.
    """
    import keras
    from pocketml.training.augment import Augment, AugmentedTrainer
    from pocketml.training.loader import ImageBatches, predict_images

    started, wall = time.perf_counter(), time.time()
    base = backbone_of(classifier)
    base.trainable = True
    start = backbone.top_block_start(base, config.unfreeze_blocks)
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= start and not isinstance(layer, keras.layers.BatchNormalization)
    before = classifier.get_weights()
    best = {"loss": baseline_val_loss, "weights": None}
    epochs: list[dict] = []

    class Epochs(keras.callbacks.Callback):
        # Runs first at each epoch end: training time excludes validation.
        def on_epoch_begin(self, epoch, logs=None):
            epochs.append({"began": time.perf_counter(), "started_at": time.time()})

        def on_epoch_end(self, epoch, logs=None):
            epochs[-1].update(seconds=time.perf_counter() - epochs[-1]["began"], ended_at=time.time())

    class Validate(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            began = time.perf_counter()
            probs = predict_images(self.model, images[1], plan.batch_size, plan.loader_workers)
            logs["val_loss"] = cross_entropy(probs, splits.val.labels)
            logs["val_accuracy"] = float((probs.argmax(axis=1) == splits.val.labels).mean())
            epochs[-1]["validation_seconds"] = time.perf_counter() - began

    class KeepBest(keras.callbacks.Callback):
        # The best checkpoint, held in memory: the model directory only ever gets the final file.
        def on_epoch_end(self, epoch, logs=None):
            if logs["val_loss"] < best["loss"]:
                best["loss"], best["weights"] = logs["val_loss"], classifier.get_weights()

    with plan.scope():
        trainer = AugmentedTrainer(classifier, Augment.from_config(config), seed=config.seed)
        trainer.compile(keras.optimizers.Adam(config.lr_finetune * plan.lr_scale), "sparse_categorical_crossentropy",
                        metrics=["accuracy"])
        batches = ImageBatches(images[0], plan.batch_size, labels=splits.train.labels,
                               class_weights=class_weights(splits), shuffle=True, seed=config.seed,
                               steps=config.steps_per_epoch, workers=plan.loader_workers)
        stop = keras.callbacks.EarlyStopping("val_loss", patience=config.patience)
        # shuffle=False: the batches reshuffle themselves every epoch.
        with epoch_progress("finetune", config.epochs_finetune) as report:
            history = trainer.fit(batches, epochs=config.epochs_finetune, shuffle=False,
                                  callbacks=[Epochs(), Validate(), KeepBest(), report, stop], verbose=0)
        classifier.set_weights(best["weights"] if best["weights"] is not None else before)
    base.trainable = False
    result = _phase_result("finetune", history.history)
    if best["weights"] is None:
        result.best_val_loss = math.inf  # never better than phase 1: phase 1's weights are kept
    result.timing = _finetune_timing(epochs, batches, started, wall)
    return result


def _finetune_timing(epochs: list[dict], batches, started: float, wall: float) -> dict:
    per_epoch = batches.num_batches * batches.batch_size
    steady = epochs[1:] or epochs  # the first epoch also compiles the train step
    seconds = sum(e["seconds"] for e in steady)
    return {
        "phase": "finetune", "steps": len(epochs) * batches.num_batches, "batch_size": batches.batch_size,
        "images": len(epochs) * per_epoch, "images_per_s": len(steady) * per_epoch / seconds if seconds else None,
        "first_epoch_seconds": epochs[0]["seconds"] if epochs else None,
        "train_seconds": sum(e["seconds"] for e in epochs),
        "validation_seconds": sum(e.get("validation_seconds", 0.0) for e in epochs),
        "loader_seconds": batches.loader_seconds, "seconds": time.perf_counter() - started,
        "started_at": wall, "ended_at": time.time(),
        # The steady epochs' training time (validation of the last one excluded), for utilisation.
        "steady_started_at": steady[0]["started_at"], "steady_ended_at": steady[-1]["ended_at"],
    }


@contextlib.contextmanager
def epoch_progress(phase: str, epochs: int) -> Iterator[Any]:
    """A Keras callback showing finished epochs: a bar on a terminal, one line per epoch elsewhere
    (a log or CI shows a long fine-tune moving)."""
    import keras

    with progress() as bar:
        task = bar.add_task(f"train {phase}", total=epochs)

        class Report(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                figures = ", ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items() if k in HISTORY_COLUMNS)
                bar.advance(task)
                step_done(f"train {phase} epoch {epoch + 1}/{epochs}: {figures}")

        yield Report()


def _phase_result(phase: str, history: dict) -> PhaseResult:
    epochs = len(history["loss"])
    rows = [{"phase": phase, "epoch": i + 1, **{k: float(history[k][i]) for k in HISTORY_COLUMNS[2:]}}
            for i in range(epochs)]
    best = min(rows, key=lambda r: r["val_loss"])
    return PhaseResult(rows, best["val_loss"], best["val_accuracy"])


def history_csv(rows: list[dict]) -> str:
    lines = [",".join(HISTORY_COLUMNS)]
    lines += [",".join(f"{row[c]:.6g}" if isinstance(row[c], float) else str(row[c]) for c in HISTORY_COLUMNS)
              for row in rows]
    return "\n".join(lines) + "\n"


def save_model_dir(classifier, out_dir: Path, splits: DatasetSplits, backbone: Backbone, weights: Weights,
                   config: TrainConfig, rows: list[dict]) -> ModelSpec:
    """model.keras, spec.json, labels.txt, history.csv and the config used, each written atomically."""
    with atomic_output(out_dir / MODEL_FILE) as tmp:
        classifier.save(tmp)
    spec = ModelSpec(
        labels=splits.labels,
        image_size=(config.image_size, config.image_size),
        normalization=backbone.normalization,
        backbone=backbone.name,
        weights=weights.source,
        weights_sha256=weights.sha256,
        source_sha256=sha256_file(out_dir / MODEL_FILE),
    )
    spec.save(out_dir)
    atomic_write_text(out_dir / HISTORY_FILE, history_csv(rows))
    if rows:
        atomic_write_bytes(out_dir / HISTORY_PNG, history_png(rows))
    atomic_write_json(out_dir / CONFIG_FILE, dataclasses.asdict(config))
    return spec


def history_png(rows: list[dict]) -> bytes:
    """Loss and accuracy per epoch, train and val, the fine-tune phase continuing the frozen one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pocketml.training.evaluate import png_bytes

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    steps = range(1, len(rows) + 1)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(steps, [r[metric] for r in rows], label=f"train {metric}")
        ax.plot(steps, [r[f"val_{metric}"] for r in rows], label=f"val {metric}")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        switch = next((i for i, r in enumerate(rows) if r["phase"] == "finetune"), 0)
        if switch:  # where the backbone's top blocks were unfrozen
            ax.axvline(switch + 0.5, color="grey", linestyle=":", label="fine-tune starts")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return png_bytes(fig)


def _print_summary(config: TrainConfig, weights: Weights, plan: DevicePlan, splits: DatasetSplits,
                   best: PhaseResult, report: dict, seconds: float) -> None:
    print_table(
        "pocketml train",
        ("backbone", "weights", "backend", "train/val/test", "best val acc", f"{splits.eval_name} acc", "seconds"),
        [(config.backbone, weights.kind, f"{plan.backend} ({plan.devices} {plan.platform})",
          f"{len(splits.train)}/{len(splits.val)}/{len(splits.test) if splits.test else 0}",
          best.best_val_accuracy, report["accuracy"], round(seconds, 1))],
    )
