"""Two-phase transfer learning: dataset directory in, an app-ready model directory out.

Phase 1 trains only the head on a frozen backbone. Because the backbone is frozen, its pooled
features for an image never change, so they are computed once (for a clean copy of the training
set plus `feature_cache_copies` augmented copies) and the head is fitted on those cached arrays:
each head epoch costs microseconds per image instead of a full backbone forward pass.
Phase 2 unfreezes the top N backbone blocks at a lower learning rate, BatchNorm kept in inference
mode, and is kept only if it beats phase 1 on validation loss.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np

from pocketml.configs.train import TrainConfig
from pocketml.console import print_table, progress
from pocketml.fsutil import atomic_output, atomic_write_json, atomic_write_text, sha256_file
from pocketml.spec import MODEL_FILE, ModelSpec
from training import model as model_lib
from training.backbones import (
    Backbone,
    Weights,
    build_backbone,
    check_image_size,
    get_backbone,
    resolve_weights,
)
from training.data import (
    Augment,
    DatasetSplits,
    Split,
    array_dataset,
    class_weights,
    decoded_images,
    image_dataset,
    load_splits,
)

HISTORY_FILE = "history.csv"
CONFIG_FILE = "train_config.json"
HISTORY_COLUMNS = ("phase", "epoch", "loss", "accuracy", "val_loss", "val_accuracy")


@dataclasses.dataclass
class PhaseResult:
    rows: list[dict]
    best_val_loss: float
    best_val_accuracy: float


def train(dataset_dir: str | Path, out_dir: str | Path, config: TrainConfig | None = None) -> Path:
    """Fine-tune `config.backbone` on `dataset_dir`; write model.keras, spec.json, labels.txt,
    history.csv and the evaluation files into `out_dir`. Returns `out_dir`."""
    import keras

    config = config or TrainConfig()
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    started = time.perf_counter()
    backbone = get_backbone(config.backbone)
    check_image_size(backbone, config.image_size)
    splits = load_splits(dataset_dir)
    weights = resolve_weights(backbone, config.weights, config.alpha, config.image_size)
    out_dir.mkdir(parents=True, exist_ok=True)

    keras.utils.set_random_seed(config.seed)
    strategy, mixed = _device_strategy()
    with strategy.scope():
        classifier = _build(backbone, weights, config, len(splits.labels))
    rows: list[dict] = []
    best = PhaseResult([], math.inf, 0.0)
    if config.epochs_frozen > 0:
        best = fit_head_on_cached_features(classifier, splits, config)
        rows += best.rows
    if config.epochs_finetune > 0 and (config.unfreeze_blocks > 0 or config.epochs_frozen == 0):
        with strategy.scope():
            tuned = fine_tune(classifier, backbone, splits, config, best.best_val_loss)
        rows += tuned.rows
        if tuned.best_val_loss < best.best_val_loss:
            best = tuned
    if mixed:
        classifier = _float32_copy(classifier, backbone, config, len(splits.labels))

    save_model_dir(classifier, out_dir, splits, backbone, weights, config, rows)
    from training.evaluate import evaluate_model

    report = evaluate_model(classifier, splits, out_dir, config.batch_size)
    _print_summary(config, weights, splits, best, report, time.perf_counter() - started)
    print(f"model directory: {out_dir} (model.keras, spec.json, labels.txt, history.csv, eval.json, PNGs)")
    return out_dir


def _device_strategy():
    """MirroredStrategy + mixed float16 when a GPU is present; the default strategy, float32, on CPU."""
    import keras
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        keras.mixed_precision.set_global_policy("mixed_float16")
        return tf.distribute.MirroredStrategy(), True
    keras.mixed_precision.set_global_policy("float32")
    return tf.distribute.get_strategy(), False


def _build(backbone: Backbone, weights: Weights, config: TrainConfig, num_classes: int):
    alpha = config.alpha if backbone.uses_alpha else 1.0
    base = build_backbone(backbone, config.image_size, alpha, weights)
    return model_lib.build_classifier(base, backbone.normalization, num_classes, config.dropout)


def _float32_copy(classifier, backbone: Backbone, config: TrainConfig, num_classes: int):
    """The trained model rebuilt under float32, so exports never inherit float16 layers."""
    import keras

    keras.mixed_precision.set_global_policy("float32")
    copy = _build(backbone, Weights("none"), config, num_classes)
    copy.set_weights(classifier.get_weights())
    return copy


def backbone_of(classifier):
    """The nested backbone model inside a classifier built by training.model.build_classifier."""
    import keras

    return next(layer for layer in classifier.layers if isinstance(layer, keras.Model))


def cached_features(extractor, split: Split, config: TrainConfig, copies: int, desc: str,
                    images: np.ndarray | None = None):
    """Pooled features of `split`: one clean pass plus `copies` augmented passes, and their labels.

    The split is decoded once (JPEG decoding costs more than a small backbone's forward pass) and
    the extractor runs as Keras' compiled predict function (traced once per extractor, reused
    across passes and splits), not op by op.
    """
    augment = Augment.from_config(config)
    passes = [None] + ([augment] * copies if augment else [])
    if images is None:
        images = decoded_images(split, config.image_size, config.batch_size)
    steps = len(passes) * math.ceil(len(split) / config.batch_size)
    features = []
    with progress() as bar:
        task = bar.add_task(desc, total=steps)
        for index, aug in enumerate(passes):
            ds = array_dataset(images, split.labels, config.batch_size, augment=aug, seed=config.seed + 101 * index)
            for batch, _ in ds:
                features.append(np.asarray(extractor.predict_on_batch(batch), dtype=np.float32))
                bar.advance(task)
    return np.concatenate(features), np.tile(split.labels, len(passes))


def fit_head_on_cached_features(classifier, splits: DatasetSplits, config: TrainConfig,
                                decoded: tuple[np.ndarray, np.ndarray] | None = None) -> PhaseResult:
    """Phase 1: fit Dropout+Dense on cached backbone features, then copy it into `classifier`.

    `decoded` optionally gives the train and val images already decoded (uint8 [N, S, S, 3]).
    """
    import keras

    backbone_of(classifier).trainable = False
    extractor = model_lib.feature_extractor(classifier)
    train_images, val_images = decoded or (None, None)
    x_train, y_train = cached_features(extractor, splits.train, config, config.feature_cache_copies,
                                       "features: train", train_images)
    x_val, y_val = cached_features(extractor, splits.val, config, 0, "features: val", val_images)
    head = model_lib.build_head(x_train.shape[1], len(splits.labels), config.dropout)
    # Many steps per graph call: a head step takes microseconds, so per-step Python overhead would dominate.
    head.compile(keras.optimizers.Adam(config.lr_frozen), "sparse_categorical_crossentropy", metrics=["accuracy"],
                 steps_per_execution=32)
    stop = keras.callbacks.EarlyStopping("val_loss", patience=config.patience, restore_best_weights=True)
    # Per-sample weights rather than class_weight: Keras turns arrays + class_weight into a
    # tf.data pipeline and then ignores shuffle=True.
    weights = np.array([class_weights(splits)[int(y)] for y in y_train], dtype=np.float32)
    history = head.fit(
        x_train, y_train, sample_weight=weights, batch_size=config.batch_size, epochs=config.epochs_frozen,
        shuffle=True, validation_data=(x_val, y_val), callbacks=[stop], verbose=0,
    )
    model_lib.copy_head(head, classifier)
    return _phase_result("frozen", history.history)


def fine_tune(classifier, backbone: Backbone, splits: DatasetSplits, config: TrainConfig,
              baseline_val_loss: float) -> PhaseResult:
    """Phase 2: unfreeze the top blocks (BatchNorm stays frozen) and train them with the head at lr_finetune.

    The best epoch is checkpointed; if no epoch beats `baseline_val_loss` (phase 1's best), the
    classifier keeps the weights it came in with.
    """
    import keras

    base = backbone_of(classifier)
    base.trainable = True
    start = backbone.top_block_start(base, config.unfreeze_blocks)
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= start and not isinstance(layer, keras.layers.BatchNormalization)
    classifier.compile(keras.optimizers.Adam(config.lr_finetune), "sparse_categorical_crossentropy",
                       metrics=["accuracy"])
    train_ds = image_dataset(splits.train, config.image_size, config.batch_size, shuffle=True,
                             augment=Augment.from_config(config), seed=config.seed)
    val_ds = image_dataset(splits.val, config.image_size, config.batch_size)
    before = classifier.get_weights()
    best = {"loss": baseline_val_loss, "weights": None}

    class KeepBest(keras.callbacks.Callback):
        # The best checkpoint, held in memory: the model directory only ever gets the final file.
        def on_epoch_end(self, epoch, logs=None):
            if logs and logs["val_loss"] < best["loss"]:
                best["loss"], best["weights"] = logs["val_loss"], self.model.get_weights()

    stop = keras.callbacks.EarlyStopping("val_loss", patience=config.patience)
    # shuffle=False: the tf.data pipeline already reshuffles every epoch.
    history = classifier.fit(train_ds, validation_data=val_ds, epochs=config.epochs_finetune, shuffle=False,
                             class_weight=class_weights(splits), callbacks=[KeepBest(), stop], verbose=0)
    classifier.set_weights(best["weights"] if best["weights"] is not None else before)
    base.trainable = False
    result = _phase_result("finetune", history.history)
    if best["weights"] is None:
        result.best_val_loss = math.inf  # never better than phase 1: phase 1's weights are kept
    return result


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
    atomic_write_json(out_dir / CONFIG_FILE, dataclasses.asdict(config))
    return spec


def _print_summary(config: TrainConfig, weights: Weights, splits: DatasetSplits, best: PhaseResult,
                   report: dict, seconds: float) -> None:
    print_table(
        "pocketml train",
        ("backbone", "weights", "train/val/test", "best val acc", f"{splits.eval_name} acc", "seconds"),
        [(config.backbone, weights.kind, f"{len(splits.train)}/{len(splits.val)}/"
          f"{len(splits.test) if splits.test else 0}", best.best_val_accuracy, report["accuracy"],
          round(seconds, 1))],
    )

