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
from pocketml.export.tolerances import violations

from pocketml.artifact import (
    EXPORTED,
    FAILED_PARITY,
    FEW_IMAGES,
    PASSED,
    SKIPPED,
    Artifact,
    Parity,
    agreement_interval,
)
from pocketml.dataset import ImageSet, readable_images
from pocketml.errors import PocketMLError, RuntimeUnavailable


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


def figures(probs: np.ndarray, reference: np.ndarray, truth: np.ndarray | None) -> Parity:
    """Parity figures of `probs` against `reference` on the same images (no verdict yet)."""
    if probs.shape != reference.shape:
        return Parity(images=len(reference), status=FAILED_PARITY,
                      reason=f"output shape {probs.shape} != keras {reference.shape}")
    diff = np.abs(probs.astype(np.float64) - reference.astype(np.float64))
    agreeing = int((probs.argmax(1) == reference.argmax(1)).sum())
    low, high = agreement_interval(agreeing, len(reference))
    return Parity(
        max_abs_diff=float(diff.max()) if diff.size else None,
        mean_abs_diff=float(diff.mean()) if diff.size else None,
        top1_agreement=agreeing / len(reference) if len(reference) else None,
        flips=len(reference) - agreeing,
        agreement_low=low,
        agreement_high=high,
        accuracy=accuracy(probs, truth),
        reference_accuracy=accuracy(reference, truth),
        images=len(reference),
    )


@dataclass
class Judge:
    images: np.ndarray  # uint8 [N,H,W,3] evaluation images: held out, never a calibration image
    reference: np.ndarray  # float32 [N,C] the Keras original's probabilities on them
    truth: np.ndarray | None  # class index per image, None when unlabelled
    where: str = ""  # where the images came from, for messages
    image_set: ImageSet | None = None  # the images judged on: the set asked for less any unreadable file

    def parity(self, precision: str, probs: np.ndarray) -> Parity:
        """Figures and verdict of outputs `probs` for a file of `precision`."""
        parity = figures(np.asarray(probs, dtype=np.float32), self.reference, self.truth)
        if parity.status == FAILED_PARITY:
            return parity
        problems = violations(precision, parity)
        parity.status = FAILED_PARITY if problems else PASSED
        parity.reason = "; ".join(problems) or None
        if parity.images < FEW_IMAGES:
            parity.note = f"verdict rests on {parity.images} evaluation images (fewer than {FEW_IMAGES})"
        return parity

    def of(self, precision: str, predictor: Any) -> Parity:
        """The verdict on a loaded file: a runtime missing here is a skip, a crash is a failure."""
        try:
            probs = predictor.predict(self.images)
        except RuntimeUnavailable as exc:
            return Parity(status=SKIPPED, reason=str(exc))
        except Exception as exc:  # a file that cannot run is a failed artifact, not a crash of the export
            return Parity(status=FAILED_PARITY, reason=f"cannot run: {type(exc).__name__}: {str(exc)[:200]}")
        return self.parity(precision, probs)


def judge_for(image_set: ImageSet, reference: Any, classes: list[str]) -> Judge:
    """A Judge on `image_set`, with the reference outputs of `reference` (the Keras original's Predictor)."""
    if not image_set.records:
        raise PocketMLError(f"no evaluation images in {image_set.source}; give --images held-out images")
    where = f"{image_set.source} ({image_set.split} split)"
    label_indices(image_set.labels, classes, f"images in {where}")  # before the slow part
    image_set, images = readable_images(image_set, tuple(reference.input_size))
    truth = label_indices(image_set.labels, classes, f"images in {where}")
    return Judge(images, reference.predict(images), truth, where, image_set)


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
        return Parity(status=FAILED_PARITY, reason=f"cannot load: {type(exc).__name__}: {str(exc)[:200]}")
    return judge.of(artifact.precision, predictor)
