"""The one judge of an exported file: its outputs against the Keras original's on the evaluation
images, held to the tolerance of its precision. The export stage builds one Judge per export and
records each artifact's verdict in the manifest; validate, bench and package read that verdict,
and a quantisation search judges its candidates with the same Judge.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pocketml.export.registry import format_module
from pocketml.export.tolerances import decide, tolerance_for

from pocketml.artifact import (
    EXPORTED,
    FAILED,
    SKIPPED,
    Artifact,
    Parity,
    agreement_interval,
)
from pocketml.dataset import ImageSet, readable_images
from pocketml.errors import PocketMLError, RuntimeUnavailable, reason_of

FLIPS_RECORDED = 50  # flips named in the manifest at most (the count says how many)


def label_indices(labels: list[str | None], classes: list[str], where: str = "the images") -> np.ndarray | None:
    """Class index of each image; None for unlabelled images (a flat folder: agreement only, no accuracy).

    Labels the model does not know are a mistake (another dataset's folder), not a reason to skip accuracy.
    """
    if not labels or all(label is None for label in labels):
        return None
    unknown = sorted({str(label) for label in labels if label not in classes})
    if unknown:
        raise PocketMLError(f"{where} have labels {unknown} that the model does not know; the model's labels are {classes}")
    return np.array([classes.index(label) for label in labels])


def accuracy(probs: np.ndarray, truth: np.ndarray | None) -> float | None:
    return None if truth is None or len(probs) == 0 else float((probs.argmax(1) == truth).mean())


def margins(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability of each row: how clearly a model decides each image."""
    if probs.shape[1] < 2:
        return np.ones(len(probs))
    top = np.sort(probs, axis=1)
    return top[:, -1] - top[:, -2]


def figures(probs: np.ndarray, reference: np.ndarray, truth: np.ndarray | None, ambiguous_margin: float = 0.0,
            names: list[str] | None = None, held_out: int | None = None) -> Parity:
    """Parity figures of `probs` against `reference` on the same images (no verdict yet). Agreement
    and |dp| need no labels: they are over every image. The first `held_out` images (default: all)
    are the held-out split, the only ones accuracy is measured on; `truth` labels them."""
    if probs.shape != reference.shape:
        return Parity(images=len(reference), status=FAILED,
                      reason=f"output shape {probs.shape} != keras {reference.shape}")
    diff = np.abs(probs.astype(np.float64) - reference.astype(np.float64))
    flipped = np.flatnonzero(probs.argmax(1) != reference.argmax(1))
    margin = margins(reference.astype(np.float64))
    ambiguous = margin[flipped] < ambiguous_margin
    named = [{"image": names[i] if names else int(i), "keras_margin": round(float(margin[i]), 4), "ambiguous": bool(a)}
             for i, a in sorted(zip(flipped, ambiguous, strict=True), key=lambda item: margin[item[0]])]
    judged = len(reference) - int(ambiguous.sum())  # ambiguous flips leave the count, as the budget does
    low, high = agreement_interval(len(reference) - len(flipped), judged)
    held = len(reference) if held_out is None else held_out
    per_image = diff.max(axis=1) if diff.size else diff
    return Parity(
        max_abs_diff=float(diff.max()) if diff.size else None,
        mean_abs_diff=float(diff.mean()) if diff.size else None,
        p99_abs_diff=float(np.percentile(per_image, 99)) if diff.size else None,
        top1_agreement=1 - len(flipped) / len(reference) if len(reference) else None,
        flips=len(flipped),
        ambiguous_flips=int(ambiguous.sum()),
        agreement_low=low,
        agreement_high=high,
        flipped=named[:FLIPS_RECORDED],
        accuracy=accuracy(probs[:held], truth),
        reference_accuracy=accuracy(reference[:held], truth),
        held_out_images=held,
        held_out_flips=int((flipped < held).sum()),
        images=len(reference),
    )


@dataclass
class Judge:
    images: np.ndarray  # uint8 [N,H,W,3]: the labelled held-out images first, then every other image that did not calibrate
    reference: np.ndarray  # float32 [N,C] the Keras original's probabilities on them
    truth: np.ndarray | None  # class index of each held-out image, None when unlabelled
    where: str = ""  # where the images came from, for messages
    names: list[str] | None = None  # each image's path, to name flips
    held_out: int | None = None  # the first this many images are the held-out split (None: all of them)
    image_set: ImageSet | None = None  # the held-out images judged on: the set asked for less any unreadable file
    agreement_set: ImageSet | None = None  # the agreement-only images judged on, likewise

    def parity(self, precision: str, probs: np.ndarray) -> Parity:
        """Figures and verdict of outputs `probs` for a file of `precision`."""
        parity = figures(np.asarray(probs, dtype=np.float32), self.reference, self.truth,
                         tolerance_for(precision).ambiguous_margin, self.names, self.held_out)
        if parity.status == FAILED:
            return parity
        decision = decide(precision, parity)
        parity.status, parity.images_needed = decision.status, decision.images_needed
        parity.reason = "; ".join(decision.reasons) or None
        return parity

    def of(self, precision: str, predictor: Any) -> Parity:
        """The verdict on a loaded file: a runtime missing here is a skip, a crash is a failure."""
        try:
            probs = predictor.predict(self.images)
        except RuntimeUnavailable as exc:
            return Parity(status=SKIPPED, reason=str(exc))
        except Exception as exc:  # a file that cannot run is a failed artifact, not a crash of the export
            return Parity(status=FAILED, reason=f"cannot run: {reason_of(exc)}")
        return self.parity(precision, probs)


def judge_for(image_set: ImageSet, reference: Any, classes: list[str], agreement: ImageSet | None = None) -> Judge:
    """A Judge on the held-out `image_set` (accuracy and agreement) and the `agreement` images (agreement
    only), with the reference outputs of `reference` (the Keras original's Predictor)."""
    if not image_set.records:
        raise PocketMLError(f"no evaluation images in {image_set.source}; give --images held-out images")
    where = f"{image_set.source} ({image_set.split} split)"
    label_indices(image_set.labels, classes, f"images in {where}")  # before the slow part
    size = tuple(reference.input_size)
    image_set, images = readable_images(image_set, size)
    truth = label_indices(image_set.labels, classes, f"images in {where}")
    paths = list(image_set.paths)
    if agreement is not None and len(agreement):
        agreement, more = readable_images(agreement, size)
        images, paths = np.concatenate([images, more]), paths + list(agreement.paths)
        where += f" and {len(agreement)} more images that did not calibrate (agreement only)"
    return Judge(images, reference.predict(images), truth, where, [str(p) for p in paths], len(image_set),
                 image_set, agreement)


def artifact_verdict(export_dir: Path, artifact: Artifact, judge: Judge | None) -> Parity:
    """The artifact's one Parity: judged on the evaluation images, or skipped with the reason."""
    if artifact.status != EXPORTED:
        return Parity(status=SKIPPED, reason=f"not exported: {artifact.reason}")
    if judge is None:
        return Parity(status=SKIPPED, reason="not validated (no evaluation images; pass --images or --calibration)")
    try:
        predictor = format_module(artifact.format).load(export_dir / artifact.path)
    except RuntimeUnavailable as exc:
        return Parity(status=SKIPPED, reason=str(exc))
    except Exception as exc:  # a written file that does not load is a failed artifact, not a crashed export
            return Parity(status=FAILED, reason=f"cannot load: {reason_of(exc)}")
    return judge.of(artifact.precision, predictor)
