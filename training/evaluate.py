"""Evaluation on the held-out split (test, falling back to val): what a user reads before shipping.

Writes eval.json (accuracy, per-class precision/recall/F1/support, confusion matrix),
confusion_matrix.png and misclassified.png (a grid of wrong predictions with true/predicted labels).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from pocketml.training.data import DatasetSplits, load_splits, split_images

from pocketml.dataset import load_image
from pocketml.fsutil import atomic_write_bytes, atomic_write_json
from pocketml.spec import MODEL_FILE

EVAL_FILE = "eval.json"
CONFUSION_PNG = "confusion_matrix.png"
MISCLASSIFIED_PNG = "misclassified.png"
GRID_MAX = 25  # misclassified images shown at most (5 x 5)


def evaluate(model_dir: str | Path, dataset_dir: str | Path, batch_size: int = 32) -> dict:
    """Evaluate a saved model directory (model.keras + spec.json) on a dataset; writes into model_dir."""
    import keras
    from pocketml.training.devices import tensorflow_left_out

    model_dir = Path(model_dir)
    with tensorflow_left_out():
        model = keras.saving.load_model(model_dir / MODEL_FILE, safe_mode=True, compile=False)
        return evaluate_model(model, load_splits(dataset_dir), model_dir, batch_size)


def evaluate_model(model, splits: DatasetSplits, out_dir: Path, batch_size: int = 32, images=None) -> dict:
    """Score `model` on the held-out split; `images` are that split's decoded images when the caller has them."""
    from pocketml.training.loader import predict_images

    split = splits.eval_split
    size = int(model.input_shape[1])
    if images is None:
        (images,) = split_images([split], size)
    probs = predict_images(model, images, batch_size)
    predicted = probs.argmax(axis=1)
    report = metrics(split.labels, predicted, splits.labels)
    report["split"] = splits.eval_name
    misses = [i for i in range(len(split)) if predicted[i] != split.labels[i]]
    report["misclassified"] = [
        {"path": split.paths[i], "true": splits.labels[split.labels[i]], "predicted": splits.labels[predicted[i]],
         "confidence": float(probs[i, predicted[i]])}
        for i in misses
    ]
    atomic_write_bytes(out_dir / CONFUSION_PNG, confusion_png(np.array(report["confusion_matrix"]), splits.labels))
    atomic_write_bytes(out_dir / MISCLASSIFIED_PNG, misclassified_png(report["misclassified"][:GRID_MAX], size))
    atomic_write_json(out_dir / EVAL_FILE, report)
    return report


def metrics(truth: np.ndarray, predicted: np.ndarray, labels: tuple[str, ...]) -> dict:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix (rows = true class)."""
    n = len(labels)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    per_class = {}
    for i, label in enumerate(labels):
        tp = int(confusion[i, i])
        predicted_i, actual_i = int(confusion[:, i].sum()), int(confusion[i, :].sum())
        precision = tp / predicted_i if predicted_i else 0.0
        recall = tp / actual_i if actual_i else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": actual_i}
    total = int(confusion.sum())
    return {
        "accuracy": float(np.trace(confusion) / total) if total else 0.0,
        "images": total,
        "per_class": per_class,
        "labels": list(labels),
        "confusion_matrix": confusion.tolist(),
    }


def png_bytes(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def confusion_png(confusion: np.ndarray, labels: tuple[str, ...]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    side = max(3.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = confusion.max() / 2 if confusion.size else 0
    for (i, j), count in np.ndenumerate(confusion):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > threshold else "black")
    return png_bytes(fig)


def misclassified_png(misses: list[dict], size: int) -> bytes:
    """A grid of wrong predictions, each titled 'true -> predicted (confidence)'; a note when none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not misses:
        fig, ax = plt.subplots(figsize=(3, 1))
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
        ax.axis("off")
        return png_bytes(fig)
    cols = min(5, len(misses))
    rows = -(-len(misses) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, miss in zip(axes.ravel(), misses, strict=False):
        ax.imshow(load_image(miss["path"], (size, size)))
        ax.set_title(f"{miss['true']} -> {miss['predicted']}\n({miss['confidence']:.2f})", fontsize=8)
    return png_bytes(fig)
