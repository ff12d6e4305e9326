"""`export_model`: one Keras classifier -> every requested format x precision in EXPORT_DIR, each
judged once against the original on the evaluation images, all recorded in EXPORT_DIR/manifest.json.

Bad input (model, labels, formats, precisions, image folders) fails before anything is written. A
converter that crashes on one variant is recorded as `failed` with its reason and the other
variants still export; each file appears only complete (pocketml.fsutil.atomic_output). The export
stage is the only writer of EXPORT_DIR: app bundles are assembled from it by `pocketml package`.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from types import ModuleType

import numpy as np
from pocketml.export.judge import Judge, artifact_verdict, judge_for
from pocketml.export.keras_model import KerasPredictor
from pocketml.export.model_source import ModelSource, load_source
from pocketml.export.registry import Converted, check_formats, format_module, format_names

from pocketml.artifact import EXPORTED, FAILED, PRECISIONS, Artifact, ExportManifest, ModelRecord, Parity
from pocketml.config import from_settings
from pocketml.configs.export import ExportConfig
from pocketml.console import console, library_output, print_table, progress
from pocketml.dataset import ImageSet, choose_images, load_images
from pocketml.errors import PocketMLError, reason_of
from pocketml.fsutil import atomic_output, sha256_file, tree_bytes

ARTIFACT_STEM = "model"  # tflite/model-fp16.tflite: stable names bench, package and apps rely on


def format_modules(formats: list[str]) -> dict[str, ModuleType]:
    modules = {}
    for fmt in check_formats(formats or format_names()):
        try:
            modules[fmt] = format_module(fmt)
        except ModuleNotFoundError as exc:
            raise PocketMLError(f"format {fmt!r} is not available here ({exc}); choose from the others") from exc
    return modules


def planned_variants(
    modules: dict[str, ModuleType], precisions: list[str], has_calibration: bool
) -> tuple[list[tuple[str, str]], list[str]]:
    """(format, precision) pairs to export in order, and notes about precisions left out."""
    offered = sorted({p for m in modules.values() for p in m.PRECISIONS}, key=_precision_order)
    unknown = [p for p in precisions if p not in offered]
    if unknown:
        raise PocketMLError(
            f"unknown precision(s) {', '.join(unknown)} for formats {', '.join(modules)}; accepted: {', '.join(offered)}"
        )
    if precisions:
        pairs = [(f, p) for f, m in modules.items() for p in m.PRECISIONS if p in precisions]
        uncalibrated = [f"{f} {p}" for f, p in pairs if p in modules[f].NEEDS_CALIBRATION and not has_calibration]
        if uncalibrated:
            raise PocketMLError(f"{', '.join(uncalibrated)} need(s) calibration images; pass --calibration DIR "
                                "(a folder of the images the model will see) or leave that precision out")
        return pairs, []
    pairs, notes = [], []
    for fmt, module in modules.items():
        for precision in module.PRECISIONS:
            if precision in module.NEEDS_CALIBRATION and not has_calibration:
                notes.append(f"{fmt} {precision} skipped: it needs calibration images (--calibration DIR)")
            else:
                pairs.append((fmt, precision))
    return pairs, notes


def check_config(config: ExportConfig, has_calibration: bool) -> list[tuple[str, str]]:
    """The (format, precision) pairs an [export] section asks for, every name checked before anything runs."""
    return planned_variants(format_modules(config.formats), config.precisions, has_calibration)[0]


def _precision_order(precision: str) -> tuple[int, str]:
    return (PRECISIONS.index(precision) if precision in PRECISIONS else len(PRECISIONS), precision)


def artifact_path(module: ModuleType, precision: str) -> str:
    """Path of a variant relative to the export directory."""
    return f"{module.FORMAT}/{ARTIFACT_STEM}-{precision}{module.SUFFIX}"


def _convert_options(module: ModuleType, config: ExportConfig, judge: Judge | None) -> dict:
    """Settings a module's convert() accepts by name (deployment target, opset, the judge a
    quantisation search uses)."""
    wanted = {"minimum_deployment_target": config.minimum_deployment_target, "opset": config.opset, "judge": judge}
    accepted = inspect.signature(module.convert).parameters
    return {k: v for k, v in wanted.items() if k in accepted}


def export_variant(
    source: ModelSource,
    module: ModuleType,
    precision: str,
    out_dir: Path,
    calibration: np.ndarray | None,
    config: ExportConfig,
    judge: Judge | None = None,
) -> Artifact:
    """One converted file, or an Artifact with status failed and the converter's reason."""
    artifact = Artifact(format=module.FORMAT, precision=precision, path=artifact_path(module, precision))
    target = out_dir / artifact.path
    start = time.perf_counter()
    try:
        with atomic_output(target) as tmp:
            result = module.convert(source.model, source.spec, precision, tmp, calibration,
                                    **_convert_options(module, config, judge))
    except Exception as exc:  # any converter crash is recorded for this variant; the others go on
        artifact.status = FAILED
        artifact.reason = reason_of(exc)
        artifact.parity.reason = "not exported"
        return artifact
    converted = result if isinstance(result, Converted) else Converted(list(result or []))
    artifact.convert_seconds = round(time.perf_counter() - start, 3)
    artifact.notes, artifact.details = converted.notes, converted.details
    artifact.sha256 = sha256_file(target)
    artifact.bytes = tree_bytes(target)
    return artifact


def model_record(source: ModelSource, config: ExportConfig) -> ModelRecord:
    """The manifest's `model` entry: the spec, where the original is, and how it was exported."""
    return ModelRecord(source.spec, str(source.path.resolve()) if source.path else None, list(source.notes),
                       config.minimum_deployment_target, config.opset)


def image_sets(config: ExportConfig) -> tuple[ImageSet | None, ImageSet | None]:
    """Calibration and evaluation images as the config asks (evaluation only when validating)."""
    calibration, evaluation = choose_images(config.calibration, config.validation_images,
                                            config.calibration_images, config.evaluation_images)
    return calibration, (evaluation if config.validate else None)


def export_model(model: str | Path, out_dir: str | Path, config: ExportConfig | None = None) -> ExportManifest:
    """Export `model` (.keras or a directory with model.keras) into `out_dir`; returns the manifest."""
    config = config or ExportConfig()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise PocketMLError(f"--out {out_dir} is a file; give a directory (new or one written by `pocketml export`)")
    # Every check that can reject the input runs before the first write.
    modules = format_modules(config.formats)
    calibration_set, evaluation_set = image_sets(config)
    variants, skipped = planned_variants(modules, config.precisions, calibration_set is not None)
    with library_output(out_dir):
        source = load_source(model, labels=config.labels, image_size=config.image_size,
                             preprocess=config.normalization)
        size = source.spec.image_size
        calibration = load_images(calibration_set.paths, size) if calibration_set is not None else None
        for note in [*source.notes, *skipped, *(evaluation_set.notes if evaluation_set else ())]:
            console.print(f"note: {note}")
        judge = None
        if evaluation_set is not None:
            judge = judge_for(evaluation_set, KerasPredictor(source.model, size), list(source.spec.labels))
        manifest = ExportManifest(model=model_record(source, config), images={
            "calibration": calibration_set.to_dict() if calibration_set else None,
            "evaluation": evaluation_set.to_dict() if evaluation_set else None,
        })
        with progress() as bar:
            task = bar.add_task("export", total=len(variants))
            for fmt, precision in variants:
                bar.update(task, description=f"export {fmt} {precision}")
                artifact = export_variant(source, modules[fmt], precision, out_dir, calibration, config, judge)
                artifact.parity = artifact_verdict(out_dir, artifact, judge)
                manifest.artifacts.append(artifact)
                bar.advance(task)
        manifest.save(out_dir)
    print_export_summary(manifest, judge)
    return manifest


def print_export_summary(manifest: ExportManifest, judge: Judge | None = None) -> None:
    if judge is not None:
        console.print(f"verdicts on {len(judge.images)} evaluation images from {judge.where}")
    rows = [
        (
            a.name,
            a.status if a.status != EXPORTED else a.parity.status,
            round(a.bytes / 1e6, 3) if a.bytes else None,
            a.convert_seconds,
            _agreement(a.parity),
            a.parity.max_abs_diff,
            a.parity.accuracy_drop_points,
            a.reason if a.status != EXPORTED else a.parity.reason,
        )
        for a in manifest.artifacts
    ]
    print_table("export", ("artifact", "verdict", "MB", "convert s", "agree", "max|dp|", "drop pts", "reason"), rows)
    notes = {a.parity.note for a in manifest.artifacts if a.parity.note}
    for note in sorted(notes):
        console.print(f"note: {note}", style="yellow", markup=False)
    for artifact in manifest.artifacts:
        for note in artifact.notes:
            named = note.startswith(f"{artifact.format} {artifact.precision}")
            console.print(f"note: {note}" if named else f"note: {artifact.name}: {note}", style="yellow", markup=False)


def _agreement(parity: Parity) -> str | None:
    """'0.992 (1/125)': the rate and the flips behind it."""
    if parity.top1_agreement is None:
        return None
    return f"{parity.top1_agreement:.3f} ({parity.flips}/{parity.images})"


def export(
    model,
    out_dir: str | Path,
    *,
    formats: list[str] | None = None,
    precisions: list[str] | None = None,
    calibration: str | Path | None = None,
    images: str | Path | None = None,
    labels: str | Path | None = None,
    **settings,
) -> ExportManifest:
    """Convert `model` (a .keras/.h5 file, a SavedModel or model directory, or a keras.Model) to every
    format x precision asked for, each judged against it on held-out images: the train split of
    `calibration` calibrates, the test/val split of `images` (default: of `calibration`) judges.
    This is `pocketml.export(...)`; settings are ExportConfig's fields."""
    options = {"formats": formats, "precisions": precisions, "calibration": _path_or_none(calibration),
               "validation_images": _path_or_none(images), "labels": _path_or_none(labels), **settings}
    return export_model(model, Path(out_dir), from_settings(ExportConfig, options, "export"))


def _path_or_none(value: str | Path | None) -> Path | None:
    return Path(value) if value is not None else None
