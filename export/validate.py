"""`pocketml validate`: judge every file of an export directory again — on the evaluation images the
export recorded, or on other held-out images — with the same Judge the export used, and record the
verdicts in its manifest (the export stage's own file). Like optimum's export validation it checks
shapes, then values; every artifact is checked and all failures are collected before any is
raised, so one bad file never hides another.
"""

from __future__ import annotations

from pathlib import Path

from pocketml.export.judge import Judge, artifact_verdict, judge_for
from pocketml.export.keras_model import load_keras_predictor

from pocketml.artifact import EXPORTED, FAILED, ExportManifest
from pocketml.console import console, library_output, print_table, progress
from pocketml.dataset import EVALUATION_COUNT, ImageSet, agreement_set, evaluation_set
from pocketml.errors import PocketMLError, ValidationFailed


def recorded_set(manifest: ExportManifest, role: str) -> ImageSet | None:
    data = manifest.images.get(role)
    return ImageSet.from_dict(data) if data else None


def evaluation_for(manifest: ExportManifest, images: str | Path | None, count: int = EVALUATION_COUNT) -> ImageSet:
    """The images to judge on: held-out images of `images` (never a recorded calibration image), else
    the evaluation images the export recorded."""
    if images is not None:
        return evaluation_set(images, recorded_set(manifest, "calibration"), count)
    recorded = recorded_set(manifest, "evaluation")
    if recorded is None:
        raise PocketMLError("the export recorded no evaluation images; pass --images PATH (held-out images)")
    missing = [p for p in recorded.paths if not p.is_file()]
    if missing:
        raise PocketMLError(f"{len(missing)} evaluation images are gone (e.g. {missing[0]}); pass --images PATH")
    return recorded


def agreement_for(manifest: ExportManifest, images: str | Path | None, evaluation: ImageSet) -> ImageSet | None:
    """Agreement-only images: the other images of `images` that did not calibrate, else those the
    export recorded while they are all still there (else the evaluation images alone judge)."""
    if images is not None:
        return agreement_set([images], recorded_set(manifest, "calibration"), evaluation)
    recorded = recorded_set(manifest, "agreement")
    if recorded is None or not all(p.is_file() for p in recorded.paths):
        return None
    return recorded


def reference_judge(manifest: ExportManifest, evaluation: ImageSet, agreement: ImageSet | None = None) -> Judge:
    source = manifest.model.source
    if not source or not Path(source).exists():
        raise PocketMLError(f"the Keras original {source} is gone; validate compares against it, so restore it")
    # The original with the preprocessing export put in front of it (--preprocess), if any.
    predictor = load_keras_predictor(source, manifest.model.image_size, manifest.model.normalization)
    return judge_for(evaluation, predictor, list(manifest.model.labels), agreement)


def validate(export_dir: str | Path, images: str | Path | None = None, strict: bool = False) -> ExportManifest:
    """Every artifact's verdict in export_dir/manifest.json; with strict, raise ValidationFailed on any failure."""
    export_dir = Path(export_dir)
    manifest = ExportManifest.load(export_dir)
    evaluation = evaluation_for(manifest, images)
    agreement = agreement_for(manifest, images, evaluation)
    with library_output(export_dir):
        judge = reference_judge(manifest, evaluation, agreement)
        console.print(f"validating {len(manifest.artifacts)} artifacts on {len(judge.images)} images from {judge.where}")
        with progress() as bar:
            task = bar.add_task("validate", total=len(manifest.artifacts))
            for artifact in manifest.artifacts:
                bar.update(task, description=f"validate {artifact.name}")
                artifact.parity = artifact_verdict(export_dir, artifact, judge)
                bar.advance(task)
        for image_set in (judge.image_set, judge.agreement_set):
            for note in image_set.notes if image_set else ():
                console.print(f"note: {note}", markup=False)
        manifest.images["evaluation"] = judge.image_set.to_dict()
        manifest.images["agreement"] = judge.agreement_set.to_dict() if judge.agreement_set else None
        manifest.save(export_dir)
    print_parity(manifest)
    failures = failures_of(manifest)
    if strict and failures:
        raise ValidationFailed(f"{len(failures)} artifact(s) outside tolerance: " + "; ".join(failures))
    return manifest


def failures_of(manifest: ExportManifest) -> list[str]:
    """'name: reason' for every artifact that failed to export or to match the original."""
    failed = [a for a in manifest.artifacts if a.status != EXPORTED or a.parity.status == FAILED]
    return [f"{a.name}: {a.parity.reason if a.status == EXPORTED else a.reason}" for a in failed]


def print_parity(manifest: ExportManifest) -> None:
    rows = [
        (
            a.name,
            a.parity.status,
            a.parity.max_abs_diff,
            a.parity.mean_abs_diff,
            a.parity.top1_agreement,
            f"{a.parity.flips} ({a.parity.ambiguous_flips} ambiguous)" if a.parity.ambiguous_flips else a.parity.flips,
            a.parity.accuracy,
            a.parity.reference_accuracy,
            a.parity.reason,
        )
        for a in manifest.artifacts
    ]
    columns = ("artifact", "parity", "max|dp|", "mean|dp|", "top-1 agree", "flips", "accuracy", "keras acc", "reason")
    print_table("parity vs keras", columns, rows)
