"""Does an artifact still behave like the Keras model? Accuracy on held-out images, top-1
agreement with Keras and the largest probability difference, judged against the tolerance per
precision that `pocketml validate` uses (export.tolerances).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pocketml.dataset import labels_of, load_images, read_records
from pocketml.errors import PocketMLError


@dataclass
class EvalSet:
    images: np.ndarray  # uint8 [N,H,W,3]
    targets: np.ndarray | None  # class indices into the model's labels; None for unlabelled images
    split: str  # which split was used: test, val or all
    source: str


def split_used(records: list) -> tuple[str, list]:
    """The test split, else val, else every record (a folder with no splits)."""
    for split in ("test", "val"):
        chosen = [r for r in records if r.split == split]
        if chosen:
            return split, chosen
    return "all", list(records)


def spread_subset(records: list, limit: int | None) -> list:
    """At most `limit` records, evenly spaced: class folders are sorted, so a prefix would be one class."""
    if limit is None or len(records) <= limit:
        return list(records)
    picks = np.unique(np.linspace(0, len(records) - 1, limit).round().astype(int))
    return [records[i] for i in picks]


def check_labels(data_labels: list[str], model_labels: list[str], data: Path) -> None:
    unknown = sorted(set(data_labels) - set(model_labels))
    if unknown:
        raise PocketMLError(
            f"{data} has labels {unknown} that the model does not know; the model's labels are {list(model_labels)}"
        )


def evaluation_set(data: str | Path, model_labels: list[str], size: tuple[int, int], max_images: int | None) -> EvalSet:
    """The images bench measures quality on, with targets in the model's class order."""
    records = read_records(data)
    split, chosen = split_used(records)
    chosen = spread_subset(chosen, max_images)
    labelled = [r for r in chosen if r.label is not None]
    if labelled and len(labelled) != len(chosen):
        raise PocketMLError(f"{data}: {len(chosen) - len(labelled)} of {len(chosen)} images have no label; label all or none")
    if labelled:
        check_labels(labels_of(labelled), model_labels, Path(data))
        targets = np.array([list(model_labels).index(r.label) for r in chosen])
    else:
        targets = None
    return EvalSet(load_images([r.path for r in chosen], size), targets, split, str(data))


def quality(probs: np.ndarray, reference: np.ndarray | None, targets: np.ndarray | None) -> dict:
    """Accuracy, agreement and |Δp| of `probs` against the Keras `reference` on the same images,
    computed by `pocketml validate`'s own parity_of so bench and validate measure alike."""
    from export.validate import accuracy, parity_of

    figures: dict = {"images": int(len(probs)), "accuracy": None, "top1_agreement": None}
    figures.update(max_abs_diff=None, mean_abs_diff=None)
    if targets is not None and len(probs):
        figures["accuracy"] = accuracy(probs, targets)
    if reference is not None and len(probs):
        parity = parity_of(probs, reference, targets)
        if parity.status == "failed":  # shape mismatch: a broken file, not a row of None figures
            raise PocketMLError(parity.reason)
        figures.update(
            top1_agreement=parity.top1_agreement,
            max_abs_diff=parity.max_abs_diff,
            mean_abs_diff=parity.mean_abs_diff,
        )
    return figures


def accuracy_drop_points(accuracy: float | None, reference_accuracy: float | None) -> float | None:
    if accuracy is None or reference_accuracy is None:
        return None
    return round((reference_accuracy - accuracy) * 100, 9)  # as export.tolerances: no float-noise drops


def tolerance_failures(precision: str, figures: dict, reference_accuracy: float | None) -> list[str]:
    """What is out of tolerance for `precision` (empty: within), by export's tolerance table."""
    from export.tolerances import violations
    from pocketml.artifact import Parity

    parity = Parity(
        max_abs_diff=figures["max_abs_diff"],
        mean_abs_diff=figures["mean_abs_diff"],
        top1_agreement=figures["top1_agreement"],
        accuracy=figures["accuracy"],
        reference_accuracy=reference_accuracy,
        images=figures["images"],
    )
    return violations(precision, parity)
