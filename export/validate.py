"""`validate`: run the Keras original and every exported artifact on the same images and judge
each against the tolerance for its precision. Like optimum's export validation, it checks
shapes, then values; every artifact is checked and all failures are collected before any is
raised, so one bad file never hides another.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.calibration import chosen_indices
from export.keras_model import load_keras_predictor
from export.registry import format_module
from export.tolerances import violations
from pocketml.artifact import EXPORTED, Artifact, ExportManifest, Parity
from pocketml.console import console, print_table, progress
from pocketml.dataset import load_images, read_records, select_split
from pocketml.errors import PocketMLError, RuntimeUnavailable, ValidationFailed
from pocketml.spec import Normalization

MAX_IMAGES = 500  # bounds validation time on big splits; chosen deterministically


def validation_set(manifest: ExportManifest, images: str | Path | None) -> tuple[list[Path], list[str | None], str]:
    """(image paths, their labels, where they came from): --images' test/val split, else the calibration images."""
    if images is not None:
        records = read_records(images)
        chosen = select_split(records, "test", "val") or records
        chosen = [chosen[i] for i in chosen_indices(len(chosen), MAX_IMAGES)]
        split = chosen[0].split if chosen and chosen[0].split else "all"
        return [r.path for r in chosen], [r.label for r in chosen], f"{images} ({split} split)"
    calibration = manifest.model.get("calibration")
    if not calibration:
        raise PocketMLError("the export recorded no calibration images to validate on; pass --images PATH")
    paths = [Path(p) for p in calibration["images"]]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise PocketMLError(f"{len(missing)} calibration images are gone (e.g. {missing[0]}); pass --images PATH")
    return paths, list(calibration.get("labels") or [None] * len(paths)), f"calibration images of {calibration['source']}"


def label_indices(labels: list[str | None], classes: list[str]) -> np.ndarray | None:
    """Class index of each image, or None when any label is unknown (accuracy cannot be measured)."""
    if not labels or any(label not in classes for label in labels):
        return None
    return np.array([classes.index(label) for label in labels])


def accuracy(probs: np.ndarray, truth: np.ndarray | None) -> float | None:
    return None if truth is None else float((probs.argmax(1) == truth).mean())


def parity_of(probs: np.ndarray, reference: np.ndarray, truth: np.ndarray | None) -> Parity:
    """Parity figures of `probs` against `reference` (status left to the tolerance check)."""
    if probs.shape != reference.shape:
        return Parity(images=len(reference), status="failed", reason=f"output shape {probs.shape} != keras {reference.shape}")
    diff = np.abs(probs.astype(np.float64) - reference.astype(np.float64))
    return Parity(
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        top1_agreement=float((probs.argmax(1) == reference.argmax(1)).mean()),
        accuracy=accuracy(probs, truth),
        reference_accuracy=accuracy(reference, truth),
        images=len(reference),
    )


def check_artifact(
    export_dir: Path, artifact: Artifact, images: np.ndarray, reference: np.ndarray, truth: np.ndarray | None
) -> Parity:
    """The artifact's parity with status passed/failed/skipped and the reason."""
    if artifact.status != EXPORTED:
        return Parity(status="skipped", reason=f"not exported: {artifact.reason}")
    try:
        predictor = format_module(artifact.format).load(export_dir / artifact.path)
        probs = np.asarray(predictor.predict(images), dtype=np.float32)
    except RuntimeUnavailable as exc:
        return Parity(status="skipped", reason=str(exc))
    except Exception as exc:  # a file that cannot be loaded or run is a failed artifact, not a crash of validate
        return Parity(status="failed", reason=f"cannot run: {type(exc).__name__}: {str(exc)[:200]}")
    parity = parity_of(probs, reference, truth)
    if parity.status == "failed":
        return parity
    problems = violations(artifact.precision, parity)
    parity.status = "failed" if problems else "passed"
    parity.reason = "; ".join(problems) or None
    return parity


def validate(export_dir: str | Path, images: str | Path | None = None, strict: bool = False) -> ExportManifest:
    """Fill every artifact's parity in export_dir/manifest.json; with strict, raise ValidationFailed on any failure."""
    export_dir = Path(export_dir)
    manifest = ExportManifest.load(export_dir)
    size = tuple(manifest.model["image_size"])
    paths, labels, where = validation_set(manifest, images)
    batch = load_images(paths, size)
    source = manifest.model.get("source")
    if not source or not Path(source).exists():
        raise PocketMLError(f"the Keras original {source} is gone; validate compares against it, so restore it")
    # The original with the preprocessing export put in front of it (--preprocess), if any.
    normalization = Normalization.from_dict(manifest.model.get("normalization") or {})
    reference = load_keras_predictor(source, size, normalization).predict(batch)
    truth = label_indices(labels, list(manifest.model["labels"]))
    console.print(f"validating {len(manifest.artifacts)} artifacts on {len(batch)} images from {where}")
    with progress() as bar:
        task = bar.add_task("validate", total=len(manifest.artifacts))
        for artifact in manifest.artifacts:
            bar.update(task, description=f"validate {artifact.name}")
            artifact.parity = check_artifact(export_dir, artifact, batch, reference, truth)
            bar.advance(task)
    manifest.save(export_dir)
    print_parity(manifest)
    failures = failures_of(manifest)
    if strict and failures:
        raise ValidationFailed(f"{len(failures)} artifact(s) outside tolerance: " + "; ".join(failures))
    return manifest


def failures_of(manifest: ExportManifest) -> list[str]:
    """'name: reason' for every artifact that failed to export or to match the original."""
    failed = [a for a in manifest.artifacts if a.status != EXPORTED or a.parity.status == "failed"]
    return [f"{a.name}: {a.parity.reason if a.status == EXPORTED else a.reason}" for a in failed]


def print_parity(manifest: ExportManifest) -> None:
    rows = [
        (
            a.name,
            a.parity.status,
            a.parity.max_abs_diff,
            a.parity.mean_abs_diff,
            a.parity.top1_agreement,
            a.parity.accuracy,
            a.parity.reference_accuracy,
            a.parity.reason,
        )
        for a in manifest.artifacts
    ]
    columns = ("artifact", "parity", "max|dp|", "mean|dp|", "top-1 agree", "accuracy", "keras acc", "reason")
    print_table("parity vs keras", columns, rows)
